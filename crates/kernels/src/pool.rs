//! A persistent worker pool for splitting one matmul's rows across threads.
//!
//! Design (issue 11, "threading that does not collapse under load"):
//! - The caller posts a job of `n` chunks and then works on it itself; workers and caller claim
//!   chunks from one atomic counter. Jobs are split into several chunks per thread, so a worker
//!   the OS has descheduled (a busy core) simply claims nothing and the others finish its share:
//!   the caller only ever waits for chunks that have actually been claimed, never for a thread to
//!   wake up.
//! - Idle workers spin briefly (matmuls of one decode step follow each other within
//!   microseconds), then yield, then sleep on a condition variable: nothing burns a core between
//!   tokens or while the caller does non-matmul work for long.
//!
//! Safety protocol for the job pointer (which borrows the caller's stack): a worker first
//! increments `active`, then loads the job pointer; the caller, once all chunks are claimed,
//! clears the pointer and then waits until `active == 0`. With sequentially consistent atomics a
//! worker either is counted before the caller's check (and is waited for) or loads the cleared
//! pointer.

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker polls for the next job before it goes to sleep.
const SPIN_FOR: Duration = Duration::from_micros(300);
/// Polls between clock reads and `yield_now` calls while spinning.
const SPIN_BATCH: u32 = 64;

struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    n_chunks: usize,
    next: AtomicUsize,
}

impl Job<'_> {
    /// Claims and runs chunks until none are left.
    fn work(&self) {
        loop {
            let c = self.next.fetch_add(1, SeqCst);
            if c >= self.n_chunks {
                return;
            }
            (self.f)(c);
        }
    }
}

struct Shared {
    job: AtomicPtr<Job<'static>>,
    generation: AtomicU64,
    active: AtomicUsize,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicUsize,
}

/// A fixed set of worker threads; the thread calling [`Pool::run`] is one of the workers.
pub struct Pool {
    shared: Arc<Shared>,
    threads: usize,
    handles: Vec<std::thread::JoinHandle<()>>,
    busy: Mutex<()>,
}

impl Pool {
    /// A pool in which `threads` threads (the caller plus `threads − 1` spawned ones) share work.
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            job: AtomicPtr::new(std::ptr::null_mut()),
            generation: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicUsize::new(0),
        });
        let handles = (1..threads)
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("ferrite-kernel-{i}"))
                    .spawn(move || worker(&s))
                    .expect("cannot spawn a kernel worker thread")
            })
            .collect();
        Self {
            shared,
            threads,
            handles,
            busy: Mutex::new(()),
        }
    }

    /// Threads sharing each job, the caller included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(c)` for every chunk `c in 0..n_chunks`, spread over the pool; returns when all
    /// have run. Concurrent callers are serialised; a call from inside `f` runs inline.
    pub fn run(&self, n_chunks: usize, f: &(dyn Fn(usize) + Sync)) {
        if self.threads == 1 || n_chunks <= 1 {
            (0..n_chunks).for_each(f);
            return;
        }
        let Ok(_guard) = self.busy.try_lock() else {
            // Nested or concurrent use: do the work here rather than wait for the pool.
            (0..n_chunks).for_each(f);
            return;
        };
        let job = Job {
            f,
            n_chunks,
            next: AtomicUsize::new(0),
        };
        let s = &*self.shared;
        // SAFETY: the pointer is cleared below and every worker that may still hold it is
        // waited for (`active == 0`) before `job` goes out of scope (protocol in the module doc).
        let ptr = &job as *const Job<'_> as *mut Job<'static>;
        s.job.store(ptr, SeqCst);
        s.generation.fetch_add(1, SeqCst);
        if s.sleepers.load(SeqCst) > 0 {
            let _l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        job.work();
        s.job.store(std::ptr::null_mut(), SeqCst);
        let mut polls = 0u32;
        while s.active.load(SeqCst) != 0 {
            polls += 1;
            if polls.is_multiple_of(SPIN_BATCH) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.shutdown.store(1, SeqCst);
        s.generation.fetch_add(1, SeqCst);
        {
            let _l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn worker(s: &Shared) {
    // Generation 0 is the pool's state at spawn; a late-starting thread must not skip a bump.
    let mut seen = 0;
    loop {
        // Wait for a new generation: spin, then yield, then sleep.
        let start = Instant::now();
        let mut polls = 0u32;
        while s.generation.load(SeqCst) == seen {
            polls += 1;
            if !polls.is_multiple_of(SPIN_BATCH) {
                std::hint::spin_loop();
                continue;
            }
            if start.elapsed() < SPIN_FOR {
                std::thread::yield_now();
                continue;
            }
            let mut l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, SeqCst);
            while s.generation.load(SeqCst) == seen && s.shutdown.load(SeqCst) == 0 {
                l = s.wake.wait(l).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, SeqCst);
        }
        seen = s.generation.load(SeqCst);
        if s.shutdown.load(SeqCst) != 0 {
            return;
        }
        s.active.fetch_add(1, SeqCst);
        let ptr = s.job.load(SeqCst);
        if !ptr.is_null() {
            // SAFETY: `active` was raised before the load, so the caller that owns the job waits
            // for this worker before the job is dropped.
            unsafe { (*ptr).work() };
        }
        s.active.fetch_sub(1, SeqCst);
    }
}

/// The process-wide pool, sized on first use by `RAYON_NUM_THREADS` (which `ferrite --threads`
/// sets) or else by the available cores.
pub fn global() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Pool::new(n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_runs_exactly_once() {
        for threads in [1, 2, 3, 5] {
            let pool = Pool::new(threads);
            for n in [0, 1, 2, 7, 64, 1000] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(n, &|c| {
                    hits[c].fetch_add(1, SeqCst);
                });
                assert!(
                    hits.iter().all(|h| h.load(SeqCst) == 1),
                    "{threads} threads, {n}"
                );
            }
        }
    }

    #[test]
    fn many_short_jobs_and_sleeping_workers() {
        let pool = Pool::new(3);
        let total = AtomicUsize::new(0);
        for i in 0..2000 {
            pool.run(5, &|c| {
                total.fetch_add(c, SeqCst);
            });
            if i % 500 == 0 {
                std::thread::sleep(SPIN_FOR * 3); // let workers fall asleep
            }
        }
        assert_eq!(total.load(SeqCst), 2000 * 10);
    }

    #[test]
    fn nested_runs_inline() {
        let pool = Pool::new(2);
        let total = AtomicUsize::new(0);
        pool.run(4, &|_| {
            pool.run(3, &|_| {
                total.fetch_add(1, SeqCst);
            })
        });
        assert_eq!(total.load(SeqCst), 12);
    }
}
