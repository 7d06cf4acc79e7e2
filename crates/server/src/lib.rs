//! ferrite-server: an OpenAI-compatible HTTP server over a ferrite-llm model, in the manner of
//! llama.cpp's `llama-server` and mistral.rs.
//!
//! - `POST /v1/chat/completions`, `POST /v1/completions` (OpenAI shapes, `stream: true` as
//!   server-sent events ending in `data: [DONE]`), `GET /v1/models`, `GET /health`,
//!   `DELETE /v1/sessions/{id}`;
//! - a bounded queue in front of `parallel` generation threads ([`scheduler`]), each request
//!   with its own KV cache built by an injected [`KvFactory`] (the server knows no policy; a
//!   request may name its own with the `kv` extension);
//! - sessions ([`sessions`]) whose cache persists between turns;
//! - OpenAI-style 4xx errors ([`error`]), cancellation on client disconnect, graceful shutdown.

pub mod error;
pub mod openai;
pub mod routes;
pub mod scheduler;
pub mod sessions;
pub mod sse;

use anyhow::{Context, Result};
use ferrite_llm::{KvCache, LoadedModel};
use scheduler::Scheduler;
use sessions::SessionStore;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// Builds a KV-cache policy from a spec string (`full`, `sink:4+508`, ...). Injected by the
/// caller, so the server stays policy-agnostic.
pub type KvFactory = Arc<dyn Fn(&str) -> Result<Box<dyn KvCache>> + Send + Sync>;

/// What to do with a prompt longer than the KV cache can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// 400 `context_length_exceeded` (default).
    Reject,
    /// Drop the oldest prompt tokens until it fits (not within sessions: those are refused).
    Truncate,
}

impl std::str::FromStr for Overflow {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "reject" => Ok(Self::Reject),
            "truncate" => Ok(Self::Truncate),
            other => anyhow::bail!("unknown overflow policy `{other}` (reject, truncate)"),
        }
    }
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind.
    pub host: String,
    /// Port to bind (0: any free port).
    pub port: u16,
    /// Name reported by `/v1/models` and in responses.
    pub model_name: String,
    /// KV policy of requests that name none.
    pub default_kv: String,
    /// Generation threads (requests generated at once).
    pub parallel: usize,
    /// Requests that may wait for a thread; more get 429.
    pub queue: usize,
    /// Live sessions at most (least recently used idle ones are evicted).
    pub max_sessions: usize,
    /// `max_tokens` of requests that give none.
    pub default_max_tokens: usize,
    /// Largest `max_tokens` accepted.
    pub max_tokens_cap: usize,
    /// Over-long prompts: reject or truncate.
    pub overflow: Overflow,
    /// On shutdown, how long running requests may go on before they are cancelled.
    pub shutdown_grace: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// One log line per request on stderr.
    pub log_requests: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            model_name: "ferrite".into(),
            default_kv: "full".into(),
            parallel: 1,
            queue: 16,
            max_sessions: 64,
            default_max_tokens: 256,
            max_tokens_cap: 8192,
            overflow: Overflow::Reject,
            shutdown_grace: Duration::from_secs(10),
            max_body_bytes: 1 << 20,
            log_requests: false,
        }
    }
}

/// Everything the handlers share.
pub struct AppState {
    /// Settings.
    pub config: ServerConfig,
    /// The model and tokenizer.
    pub engine: Arc<LoadedModel>,
    /// Builds KV caches.
    pub factory: KvFactory,
    /// Queue and workers.
    pub scheduler: Arc<Scheduler>,
    /// Live sessions.
    pub sessions: Arc<SessionStore>,
    /// Next response id.
    pub next_id: AtomicU64,
    /// Unix seconds at start.
    pub started: u64,
}

/// A running server: its address and the means to stop it.
pub struct Server {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Server {
    /// Loads nothing: takes the loaded model, binds, and serves on a background thread.
    pub fn start(config: ServerConfig, engine: LoadedModel, factory: KvFactory) -> Result<Self> {
        // Fail early on a bad default policy rather than on the first request.
        factory(&config.default_kv)
            .with_context(|| format!("bad default KV policy `{}`", config.default_kv))?;
        let engine = Arc::new(engine);
        let scheduler = Scheduler::new(
            engine.clone(),
            config.parallel,
            config.queue,
            config.log_requests,
        );
        let state = Arc::new(AppState {
            sessions: SessionStore::new(config.max_sessions),
            engine,
            factory,
            scheduler,
            next_id: AtomicU64::new(1),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            config,
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferrite-http")
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let bind = format!("{}:{}", state.config.host, state.config.port);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(&bind))
            .with_context(|| format!("cannot bind {bind}"))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("ferrite-server".into())
            .spawn(move || {
                let app = routes::router(st.clone());
                let drain = st.clone();
                runtime.block_on(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stopped.await;
                            begin_shutdown(&drain);
                        })
                        .await
                        .context("serving")
                })?;
                st.scheduler.join();
                Ok(())
            })
            .context("spawning the server thread")?;
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shared state (for inspection in tests).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Graceful shutdown: refuse new requests (503), let running ones finish within the grace
    /// period, then cancel the rest; returns when every connection and worker is done.
    pub fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait()
    }

    fn wait(&mut self) -> Result<()> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            let _ = self.wait();
        }
    }
}

/// Stops admissions and arms the grace timer that cancels what still runs.
fn begin_shutdown(state: &Arc<AppState>) {
    state.scheduler.drain();
    let scheduler = state.scheduler.clone();
    let grace = state.config.shutdown_grace;
    std::thread::spawn(move || {
        let t0 = std::time::Instant::now();
        while t0.elapsed() < grace {
            if scheduler.active() == 0 && scheduler.queued() == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        scheduler.abort();
    });
}

/// Serves until SIGTERM or Ctrl-C, then shuts down gracefully (see [`Server::shutdown`]).
pub fn serve_blocking(config: ServerConfig, engine: LoadedModel, factory: KvFactory) -> Result<()> {
    let grace = config.shutdown_grace;
    let server = Server::start(config, engine, factory)?;
    eprintln!("ferrite serve: listening on http://{}", server.addr());
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal runtime")?;
    let which = signals.block_on(async {
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("listening for SIGTERM")?;
            tokio::select! {
                _ = term.recv() => Ok::<_, anyhow::Error>("SIGTERM"),
                r = tokio::signal::ctrl_c() => r.map(|_| "SIGINT").context("listening for Ctrl-C"),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c()
                .await
                .context("listening for Ctrl-C")?;
            Ok::<_, anyhow::Error>("Ctrl-C")
        }
    })?;
    eprintln!(
        "ferrite serve: {which}: finishing in-flight requests (up to {:.0}s), refusing new ones",
        grace.as_secs_f64()
    );
    server.shutdown()?;
    eprintln!("ferrite serve: stopped");
    Ok(())
}
