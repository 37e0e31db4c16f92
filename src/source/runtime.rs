//! Where queries run. Scanning Parquet is CPU work measured in seconds, while
//! the API answers polls in microseconds; on one runtime a poll would queue
//! behind query batches. So queries get runtimes of their own whose threads
//! run at a lower OS priority: when the CPU is short, the API and the chunk
//! readers go first and queries take what is left.
//!
//! Queries run in two lanes, each a tokio runtime of its own:
//! - the *prompt* lane (nice 5) runs what a first chunk waits for: the
//!   job's task (cutting and publishing chunks), its query's driver, and
//!   every part of the query started before it has sent a first chunk's
//!   rows (the first window, and the next ones when that one is too sparse);
//! - the *bulk* lane (nice 15) runs the rest of each query.
//!
//! A first chunk often needs more than the first window (a sparse filter,
//! a range that ends just after midnight). When only the first window was
//! prompt, the next ones queued for a bulk permit behind a hundred long
//! queries, and under load first chunks took seconds. The lanes let the OS,
//! not tokio's cooperative turns, put prompt work first: a prompt thread
//! that wakes gets the core from a bulk thread at once, and about nine
//! tenths of the CPU while both want it.
//!
//! Past its first chunk, a query's work also waits for one of a few *bulk*
//! permits, and for the jobs still waiting for their first rows to get them
//! (up to a bound). A job counts as waiting from the moment a worker takes
//! it until its first window has computed a batch. A hundred long queries
//! submitted together then each get their first chunk before any of them
//! streams on through its 90 days.
//!
//! The app builds one [`QueryRuntime`] and hands it to the Parquet source
//! and the workers; it ends with the app, or when its last clone is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::sync::{Notify, Semaphore, SemaphorePermit};

/// OS priority of the prompt lane's threads (Linux nice value; 0 is the
/// default, the API's).
const PROMPT_NICE: i32 = 5;

/// OS priority of the bulk lane's threads: a weight of 36 against the
/// prompt lane's 335 and the API's 1024.
const BULK_NICE: i32 = 15;

/// Longest a bulk batch waits for first windows to finish: under a steady
/// stream of new queries, running ones still move at least this often.
const BULK_YIELD_MAX: Duration = Duration::from_secs(2);

/// The runtime that runs jobs and their queries, and the turns they take.
/// Clones share it.
#[derive(Clone)]
pub struct QueryRuntime(Arc<Shared>);

/// Which runtime a task runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// What a first chunk waits for.
    Prompt,
    /// The rest of a query.
    Bulk,
}

struct Shared {
    /// `None` once shut down.
    runtimes: Mutex<Option<[Runtime; 2]>>,
    prompt: Handle,
    bulk_lane: Handle,
    bulk: Semaphore,
    /// Jobs waiting for their first rows now; bulk work yields to them.
    awaiting_first_rows: AtomicUsize,
    awaiting_first_rows_done: Notify,
}

impl std::fmt::Debug for QueryRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryRuntime")
            .field("bulk_permits", &self.0.bulk.available_permits())
            .finish_non_exhaustive()
    }
}

impl QueryRuntime {
    /// Starts `threads` worker threads (0: one per CPU) in each lane, and
    /// as many bulk permits. Fails only when the OS refuses the threads.
    pub fn new(threads: usize) -> std::io::Result<QueryRuntime> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        };
        let lane = |name: &str, nice: i32| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name(name)
                .on_thread_start(move || lower_priority(nice))
                .enable_all()
                .build()
        };
        let prompt = lane("query-prompt", PROMPT_NICE)?;
        let bulk = lane("query-bulk", BULK_NICE)?;
        Ok(QueryRuntime(Arc::new(Shared {
            prompt: prompt.handle().clone(),
            bulk_lane: bulk.handle().clone(),
            runtimes: Mutex::new(Some([prompt, bulk])),
            bulk: Semaphore::new(threads),
            awaiting_first_rows: AtomicUsize::new(0),
            awaiting_first_rows_done: Notify::new(),
        })))
    }

    /// Runs a job or query task in `lane`. Once the runtime is shut down,
    /// the task is dropped unrun and its handle says it was cancelled.
    pub(crate) fn spawn<F>(&self, lane: Lane, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle(lane).spawn(task)
    }

    /// A lane's handle, for tasks spawned through other helpers.
    pub(crate) fn handle(&self, lane: Lane) -> &Handle {
        match lane {
            Lane::Prompt => &self.0.prompt,
            Lane::Bulk => &self.0.bulk_lane,
        }
    }

    /// Stops the threads without waiting for running tasks, which are
    /// dropped; safe in async code. Later tasks are cancelled at once.
    pub fn shutdown(&self) {
        self.0.shut_down();
    }

    /// Waits for a bulk permit: held while a query computes a batch beyond its
    /// first window. Waits first (up to `BULK_YIELD_MAX`) while any job waits
    /// for its first rows, so first chunks get the CPU before bulk scans do.
    pub(crate) async fn bulk_permit(&self) -> SemaphorePermit<'_> {
        let e = &self.0;
        let deadline = tokio::time::Instant::now() + BULK_YIELD_MAX;
        while e.awaiting_first_rows.load(Ordering::SeqCst) > 0 {
            let done = e.awaiting_first_rows_done.notified();
            tokio::pin!(done);
            // Registered before the re-check, so a wake-up in between is not lost.
            done.as_mut().enable();
            if e.awaiting_first_rows.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                break;
            }
        }
        e.bulk
            .acquire()
            .await
            // The semaphore is never closed.
            .expect("the bulk semaphore is never closed")
    }
}

impl Shared {
    fn shut_down(&self) {
        let runtimes = self
            .runtimes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        for runtime in runtimes.into_iter().flatten() {
            // Dropping a runtime blocks; in async code (a test's, or the
            // runtime's own thread dropping the last clone) that panics.
            runtime.shutdown_background();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.shut_down();
    }
}

#[cfg(target_os = "linux")]
fn lower_priority(nice: i32) {
    // On Linux, PRIO_PROCESS with id 0 is the calling thread only.
    // SAFETY: setpriority has no memory effects; failure leaves the priority as is.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, nice);
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority(_nice: i32) {}

/// Marks a job as waiting for its first rows until dropped. A worker takes
/// one when it picks a job up and lets go once the source has taken its
/// own (the query has started), so the job counts from pickup until its
/// first window has a batch.
pub struct AwaitingFirstRows(QueryRuntime);

impl AwaitingFirstRows {
    pub fn start(runtime: &QueryRuntime) -> AwaitingFirstRows {
        runtime.0.awaiting_first_rows.fetch_add(1, Ordering::SeqCst);
        AwaitingFirstRows(runtime.clone())
    }
}

impl Drop for AwaitingFirstRows {
    fn drop(&mut self) {
        let e = &(self.0).0;
        if e.awaiting_first_rows.fetch_sub(1, Ordering::SeqCst) == 1 {
            e.awaiting_first_rows_done.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two runtimes in one process are separate, and a runtime shut down
    /// from async code (or dropped there) does not panic.
    #[tokio::test]
    async fn runtimes_are_owned_and_shut_down_from_async_code() {
        let (a, b) = (QueryRuntime::new(1).unwrap(), QueryRuntime::new(1).unwrap());
        let _waiting = AwaitingFirstRows::start(&a);
        assert_eq!(a.0.awaiting_first_rows.load(Ordering::SeqCst), 1);
        assert_eq!(b.0.awaiting_first_rows.load(Ordering::SeqCst), 0);
        assert_eq!(a.spawn(Lane::Prompt, async { 7 }).await.unwrap(), 7);
        assert_eq!(a.spawn(Lane::Bulk, async { 7 }).await.unwrap(), 7);
        a.shutdown();
        assert!(
            a.spawn(Lane::Prompt, async { 7 })
                .await
                .unwrap_err()
                .is_cancelled()
        );
        assert!(
            a.spawn(Lane::Bulk, async { 7 })
                .await
                .unwrap_err()
                .is_cancelled()
        );
        assert_eq!(b.spawn(Lane::Bulk, async { 8 }).await.unwrap(), 8);
        drop(b);
    }
}
