//! `ferrite serve`: the OpenAI-compatible HTTP server of `ferrite-server`, with KV caches
//! built from `--kv` specs.

use crate::common::ModelArgs;
use crate::kv_spec;
use anyhow::Result;
use clap::Args;
use ferrite_server::{KvFactory, Overflow, ServerConfig};
use std::sync::Arc;
use std::time::Duration;

/// Flags of `ferrite serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Default KV-cache policy (`full`, `sink:4+2044`, `gear:...`); a request may name its own
    /// with the `kv` field.
    #[arg(long, default_value = "full")]
    kv: String,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to bind (0: any free port).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Generation threads: requests generated at once (each with its own cache).
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Requests that may wait for a generation thread; more are refused with 429.
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// Live sessions at most (least recently used idle ones are evicted).
    #[arg(long, default_value_t = 64)]
    max_sessions: usize,
    /// `max_tokens` of requests that give none.
    #[arg(long, default_value_t = 256)]
    default_max_tokens: usize,
    /// Largest `max_tokens` a request may ask for.
    #[arg(long, default_value_t = 8192)]
    max_tokens_cap: usize,
    /// Prompts longer than the cache holds: `reject` (400 context_length_exceeded) or
    /// `truncate` (drop the oldest tokens).
    #[arg(long, default_value = "reject")]
    overflow: Overflow,
    /// Seconds running requests may go on after SIGTERM before they are cancelled.
    #[arg(long, default_value_t = 10.0)]
    shutdown_grace: f64,
    /// Name reported by /v1/models (default: the model file's stem).
    #[arg(long)]
    model_name: Option<String>,
    /// One log line per request on stderr.
    #[arg(long)]
    log_requests: bool,
}

/// Loads the model and serves until SIGTERM / Ctrl-C.
pub fn run(args: ServeArgs) -> Result<()> {
    anyhow::ensure!(args.parallel >= 1, "--parallel must be at least 1");
    anyhow::ensure!(
        args.shutdown_grace.is_finite() && args.shutdown_grace >= 0.0,
        "--shutdown-grace must be a number of seconds >= 0"
    );
    let m = args.model.load()?;
    let geometry = m.model.kv_geometry();
    let factory: KvFactory = Arc::new(move |spec: &str| kv_spec::build(spec, &geometry));
    let model_name = args.model_name.unwrap_or_else(|| {
        args.model
            .model
            .file_stem()
            .map_or("ferrite".into(), |s| s.to_string_lossy().into_owned())
    });
    let config = ServerConfig {
        host: args.host,
        port: args.port,
        model_name,
        default_kv: args.kv,
        parallel: args.parallel,
        queue: args.queue,
        max_sessions: args.max_sessions,
        default_max_tokens: args.default_max_tokens,
        max_tokens_cap: args.max_tokens_cap,
        overflow: args.overflow,
        shutdown_grace: Duration::from_secs_f64(args.shutdown_grace),
        log_requests: args.log_requests,
        ..Default::default()
    };
    ferrite_server::serve_blocking(config, m, factory)
}
