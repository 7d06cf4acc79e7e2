//! The request queue and its worker threads.
//!
//! candle's CPU inference is synchronous, so generation runs on `parallel` dedicated OS threads
//! (never on the async runtime). Each worker takes one request at a time from a bounded FIFO
//! queue and owns it to the end: its own KV cache, its own sampler. This is a queue, not
//! continuous batching: with `parallel = 1` requests are answered one after another (each at
//! full single-stream speed); with more workers they share the cores. A request that finds the
//! queue full is refused at once with 429 rather than waiting without bound.
//!
//! Tokens go to the HTTP handler over a channel. When the client goes away the handler drops
//! the receiver; the worker sees the closed channel at its next step, stops, and drops the
//! cache (a session's cache too: see [`crate::sessions`]). Jobs whose client left while they
//! were queued are skipped.

use crate::error::ApiError;
use crate::openai::{CacheInfo, Usage};
use crate::sessions::SessionLease;
use ferrite_llm::generate::{generate_with, GenerateParams, Hooks, StopReason};
use ferrite_llm::sampling::{Sampler, SamplingParams};
use ferrite_llm::{KvCache, LoadedModel};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// What a worker tells the handler of a request.
#[derive(Debug)]
pub enum Event {
    /// A worker took the request.
    Started,
    /// New text.
    Text(String),
    /// Generation ended normally.
    Done(Summary),
    /// Generation failed or was refused.
    Failed(ApiError),
}

/// How a request ended.
#[derive(Debug, Clone)]
pub struct Summary {
    /// OpenAI `finish_reason`.
    pub finish_reason: &'static str,
    /// Token counts.
    pub usage: Usage,
    /// The cache after the request.
    pub cache: CacheInfo,
}

/// One request, ready to run.
pub struct Job {
    /// Request id, for the log.
    pub id: String,
    /// Tokens to feed (a session's pending tokens included).
    pub prompt: Vec<u32>,
    /// What to generate and when to stop.
    pub params: GenerateParams,
    /// Sampler settings.
    pub sampling: SamplingParams,
    /// The cache to run in.
    pub cache: Box<dyn KvCache>,
    /// The session the cache belongs to, if any.
    pub session: Option<SessionLease>,
    /// Pending tokens the session had before this request (restored if it is refused).
    pub session_pending: Vec<u32>,
    /// Where the events go.
    pub events: UnboundedSender<Event>,
    /// When it was queued.
    pub queued_at: Instant,
}

impl Job {
    /// Gives a refused job's cache back to its session unchanged.
    pub fn restore(self) {
        if let Some(lease) = self.session {
            lease.finish(self.cache, self.session_pending);
        }
    }
}

/// The bounded queue and the workers.
pub struct Scheduler {
    tx: Mutex<Option<SyncSender<Job>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    queued: Arc<AtomicUsize>,
    active: Arc<AtomicUsize>,
    draining: AtomicBool,
    abort: Arc<AtomicBool>,
}

struct Worker {
    engine: Arc<LoadedModel>,
    rx: Arc<Mutex<Receiver<Job>>>,
    queued: Arc<AtomicUsize>,
    active: Arc<AtomicUsize>,
    abort: Arc<AtomicBool>,
    log: bool,
}

impl Scheduler {
    /// Starts `parallel` workers behind a queue of `queue` waiting requests.
    pub fn new(engine: Arc<LoadedModel>, parallel: usize, queue: usize, log: bool) -> Arc<Self> {
        let (tx, rx) = sync_channel(queue);
        let rx = Arc::new(Mutex::new(rx));
        let queued = Arc::new(AtomicUsize::new(0));
        let active = Arc::new(AtomicUsize::new(0));
        let abort = Arc::new(AtomicBool::new(false));
        let workers = (0..parallel.max(1))
            .map(|i| {
                let w = Worker {
                    engine: engine.clone(),
                    rx: rx.clone(),
                    queued: queued.clone(),
                    active: active.clone(),
                    abort: abort.clone(),
                    log,
                };
                std::thread::Builder::new()
                    .name(format!("ferrite-worker-{i}"))
                    .spawn(move || w.run())
                    .expect("spawning a worker thread")
            })
            .collect();
        Arc::new(Self {
            tx: Mutex::new(Some(tx)),
            workers: Mutex::new(workers),
            queued,
            active,
            draining: AtomicBool::new(false),
            abort,
        })
    }

    /// Queues a job; a full queue is 429 and a draining server 503 (the job comes back).
    pub fn submit(&self, job: Job) -> Result<(), Box<(ApiError, Job)>> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(Box::new((ApiError::shutting_down(), job)));
        }
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = tx.as_ref() else {
            return Err(Box::new((ApiError::shutting_down(), job)));
        };
        self.queued.fetch_add(1, Ordering::SeqCst);
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) => {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                let busy = ApiError::busy(
                    "the server is busy: every worker and queue place is taken; retry later",
                    "queue_full",
                );
                Err(Box::new((busy, job)))
            }
            Err(TrySendError::Disconnected(job)) => {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                Err(Box::new((ApiError::shutting_down(), job)))
            }
        }
    }

    /// Requests waiting for a worker.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Requests being generated.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Refuses new requests (503); queued and running ones go on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Cancels every queued and running request (each gets a 503 error).
    pub fn abort(&self) {
        self.drain();
        self.abort.store(true, Ordering::SeqCst);
    }

    /// Closes the queue and waits for the workers to finish.
    pub fn join(&self) {
        self.drain();
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in workers {
            let _ = w.join();
        }
    }
}

impl Worker {
    fn run(self) {
        loop {
            let job = {
                let rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
                rx.recv()
            };
            let Ok(job) = job else { return };
            self.queued.fetch_sub(1, Ordering::SeqCst);
            self.active.fetch_add(1, Ordering::SeqCst);
            let events = job.events.clone();
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_job(job)));
            if result.is_err() {
                let _ = events.send(Event::Failed(ApiError::internal("generation panicked")));
            }
            self.active.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn run_job(&self, job: Job) {
        let Job {
            id,
            prompt,
            params,
            sampling,
            mut cache,
            session,
            events,
            queued_at,
            ..
        } = job;
        if events.is_closed() {
            return; // the client left while queued; dropping the lease ends its session
        }
        if self.abort.load(Ordering::SeqCst) {
            let _ = events.send(Event::Failed(ApiError::shutting_down()));
            return;
        }
        let waited = queued_at.elapsed().as_secs_f64();
        let _ = events.send(Event::Started);
        let m = &self.engine;
        let t0 = Instant::now();
        let should_stop = || events.is_closed() || self.abort.load(Ordering::SeqCst);
        let mut on_text = |t: &str| {
            let _ = events.send(Event::Text(t.to_string()));
        };
        let hooks = Hooks {
            should_stop: &should_stop,
            on_text: &mut on_text,
        };
        let outcome = match generate_with(
            &m.model,
            &m.tokenizer,
            cache.as_mut(),
            &prompt,
            &params,
            &mut Sampler::new(sampling),
            hooks,
        ) {
            Ok(o) => o,
            Err(e) => {
                let msg = format!("generation failed: {e:#}");
                // A cache that refuses tokens is the request's fault (too long for the policy).
                let err = if msg.contains("fit") || msg.contains("full") {
                    ApiError::context_length(msg, "messages")
                } else {
                    ApiError::internal(msg)
                };
                let _ = events.send(Event::Failed(err));
                return;
            }
        };
        if self.log {
            eprintln!(
                "[{id}] prompt={} completion={} wait={waited:.3}s prefill={:.3}s total={:.3}s finish={} kv={} bytes={}",
                prompt.len(),
                outcome.completion_tokens(),
                outcome.prompt_seconds,
                t0.elapsed().as_secs_f64(),
                outcome.stop_reason.finish_reason(),
                cache.spec(),
                cache.heap_bytes()
            );
        }
        // A client that left during the last token cancels too: its session must not keep a
        // turn it never received.
        if outcome.stop_reason == StopReason::Cancelled || events.is_closed() {
            if !events.is_closed() {
                let _ = events.send(Event::Failed(ApiError::shutting_down()));
            }
            return; // cache dropped; a session's lease drops and ends the session
        }
        let info = CacheInfo {
            kv: cache.spec(),
            cache_tokens: cache.len(),
            cache_bytes: cache.heap_bytes(),
            session: session.as_ref().map(|s| s.id().to_string()),
        };
        if let Some(lease) = session {
            match outcome.closing_tokens(&m.tokenizer) {
                Ok(pending) => lease.finish(cache, pending),
                Err(e) => {
                    let _ = events.send(Event::Failed(ApiError::internal(format!("{e:#}"))));
                    return;
                }
            }
        }
        let _ = events.send(Event::Done(Summary {
            finish_reason: outcome.stop_reason.finish_reason(),
            usage: Usage::new(prompt.len(), outcome.completion_tokens()),
            cache: info,
        }));
    }
}
