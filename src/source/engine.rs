//! Where queries run. Scanning Parquet is CPU work measured in seconds, while
//! the API answers polls in microseconds; on one runtime a poll would queue
//! behind query batches. So queries get a tokio runtime of their own whose
//! threads run at a lower OS priority (nice 10): when the CPU is short, the
//! API and the chunk readers go first and queries take what is left.
//!
//! Within the query runtime, a job's first window (what its first chunk
//! needs) runs at once, while everything after it waits for one of a few
//! *bulk* permits, and for the jobs still waiting for their first rows to
//! get them (up to a bound). A job counts as waiting from the moment a
//! worker takes it until its first window has computed a batch. A hundred
//! long queries submitted together then each get their first chunk before
//! any of them streams on through its 90 days.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::{Notify, Semaphore, SemaphorePermit};

/// OS priority of query threads (Linux nice value; 0 is the default).
#[cfg(target_os = "linux")]
const QUERY_NICE: i32 = 10;

struct Engine {
    runtime: Runtime,
    bulk: Semaphore,
    /// Jobs waiting for their first rows now; bulk work yields to them.
    awaiting_first_rows: AtomicUsize,
    awaiting_first_rows_done: Notify,
}

/// Longest a bulk batch waits for first windows to finish: under a steady
/// stream of new queries, running ones still move at least this often.
const BULK_YIELD_MAX: Duration = Duration::from_secs(2);

static ENGINE: OnceLock<Engine> = OnceLock::new();

/// Sizes the query runtime: `threads` worker threads and as many bulk
/// permits. Takes effect only before the first query; later calls return
/// false. Without a call, both default to the number of CPUs.
pub fn configure(threads: usize) -> bool {
    let mut fresh = false;
    ENGINE.get_or_init(|| {
        fresh = true;
        build(threads)
    });
    fresh
}

fn engine() -> &'static Engine {
    ENGINE.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        build(cpus)
    })
}

fn build(threads: usize) -> Engine {
    let threads = threads.max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("query")
        .on_thread_start(lower_priority)
        .enable_all()
        .build()
        // Only fails when the OS refuses threads; nothing can run then.
        .expect("cannot start the query runtime's threads");
    Engine {
        runtime,
        bulk: Semaphore::new(threads),
        awaiting_first_rows: AtomicUsize::new(0),
        awaiting_first_rows_done: Notify::new(),
    }
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // On Linux, PRIO_PROCESS with id 0 is the calling thread only.
    // SAFETY: setpriority has no memory effects; failure leaves the priority as is.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, QUERY_NICE);
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// The query runtime, for job work started elsewhere (the workers).
pub fn handle() -> tokio::runtime::Handle {
    engine().runtime.handle().clone()
}

/// Runs a query task on the query runtime.
pub(crate) fn spawn<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    engine().runtime.spawn(task)
}

/// Marks a job as waiting for its first rows until dropped. A worker takes
/// one when it picks a job up and lets go once the source has taken its
/// own (the query has started), so the job counts from pickup until its
/// first window has a batch.
pub struct AwaitingFirstRows(());

impl AwaitingFirstRows {
    pub fn start() -> AwaitingFirstRows {
        engine().awaiting_first_rows.fetch_add(1, Ordering::SeqCst);
        AwaitingFirstRows(())
    }
}

impl Drop for AwaitingFirstRows {
    fn drop(&mut self) {
        let e = engine();
        if e.awaiting_first_rows.fetch_sub(1, Ordering::SeqCst) == 1 {
            e.awaiting_first_rows_done.notify_waiters();
        }
    }
}

/// Waits for a bulk permit: held while a query computes a batch beyond its
/// first window. Waits first (up to `BULK_YIELD_MAX`) while any job waits
/// for its first rows, so first chunks get the CPU before bulk scans do.
pub(crate) async fn bulk_permit() -> SemaphorePermit<'static> {
    let e = engine();
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
        // The semaphore lives in a static and is never closed.
        .expect("the bulk semaphore is never closed")
}
