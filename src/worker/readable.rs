//! Making a sent batch readable: the result topic's second step (on Kafka,
//! the chunk index write), then the job's progress update, which is what
//! readers go by. It runs in a task of its own while the job sends its
//! next batch (`cutter.rs`): on Kafka a batch's index write and progress
//! update were about a fifth of a long job's time, spent waiting on Redis
//! (`docs/PERFORMANCE.md`). A job counts its batches in the order it sent
//! them: the next one's task starts only once this one's has ended.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, warn};

use super::audit_progress;
use crate::jobs::{JobError, Jobs};
use crate::model::{Chunk, JobRecord, JobUpdate};
use crate::results::{Acknowledged, ResultError};

/// A batch's count under way: its outcome is the job's record as the
/// progress update left it (`None`: the record is gone).
pub(super) type Counting = AbortOnDropHandle<Result<Option<JobRecord>, JobError>>;

/// A batch the topic acknowledged, and what counting it needs.
pub(super) struct SentBatch {
    pub(super) chunks: Vec<Chunk>,
    pub(super) acknowledged: Acknowledged,
    /// The progress update that counts it (`JobUpdate::Progress`).
    pub(super) progress: JobUpdate,
    /// The attempt that sent it.
    pub(super) attempt: u32,
    /// Whether it holds the job's first chunk, and when the job was
    /// submitted: the first chunk's wait is measured once it is counted.
    pub(super) first: bool,
    pub(super) submitted_at: DateTime<Utc>,
    /// How long sending it took until it was acknowledged.
    pub(super) publishing: Duration,
}

/// Starts making `batch` readable and counting it, on the runtime the job
/// runs on. Dropping the handle (a job that stops) stops the task.
pub(super) fn count(jobs: &Arc<Jobs>, batch: SentBatch) -> Counting {
    let task = count_now(jobs.clone(), batch).in_current_span();
    AbortOnDropHandle::new(tokio::spawn(task))
}

/// The outcome of a count started by [`count`]; a task that failed
/// (panicked) fails the job.
pub(super) async fn counted(counting: Counting) -> Result<Option<JobRecord>, JobError> {
    match counting.await {
        Ok(counted) => counted,
        Err(e) => Err(JobError::Source(crate::source::SourceError::Internal(
            format!("counting a published batch failed: {e}"),
        ))),
    }
}

/// Makes `batch` readable and counts it; returns the job's record as the
/// progress update left it.
pub(super) async fn count_now(
    jobs: Arc<Jobs>,
    batch: SentBatch,
) -> Result<Option<JobRecord>, JobError> {
    let (Some(head), Some(tail)) = (batch.chunks.first(), batch.chunks.last()) else {
        return Ok(None);
    };
    let (job_id, seqs) = (head.job_id, head.chunk_seq..=tail.chunk_seq);
    let results = &jobs.backends.results;
    retried(&batch.chunks, || {
        results.make_readable(&batch.chunks, &batch.acknowledged)
    })
    .await
    .inspect_err(|_| jobs.metrics.publish_errors_total.inc())?;
    let job = jobs
        .backends
        .job_store
        .update_job(job_id, batch.progress)
        .await?;
    let superseded = job.as_ref().is_some_and(|j| j.attempt > batch.attempt);
    if let Some(readable) = &jobs.hooks.chunk_readable
        && !superseded
    {
        let now = std::time::Instant::now();
        for seq in seqs {
            let _ = readable.send((job_id, seq, now));
        }
    }
    if batch.first && !superseded {
        first_chunk_readable(&jobs, batch.submitted_at, batch.publishing);
        if let Some(job) = &job {
            audit_progress(&jobs, job).await;
        }
    }
    Ok(job)
}

/// Observes the time from submission to the first chunk being readable:
/// once the progress update that counts it has landed (or, for a job of
/// one chunk, the update that finishes it).
pub(super) fn first_chunk_readable(jobs: &Jobs, submitted_at: DateTime<Utc>, publishing: Duration) {
    let waited = (jobs.now() - submitted_at).to_std().unwrap_or_default();
    jobs.metrics.first_chunk_readable(waited);
    // How long the publish itself took tells a slow broker from a
    // slow query when a first chunk is late.
    debug!(
        waited_ms = waited.as_millis() as u64,
        publish_ms = publishing.as_millis() as u64,
        "first chunk readable"
    );
}

/// Runs one of the topic's steps for `chunks`, retrying transient failures
/// with backoff. Each step is harmless to repeat: the topic ignores a seq
/// it already has, and indexing a place again changes nothing.
pub(super) async fn retried<T, F, Fut>(chunks: &[Chunk], step: F) -> Result<T, JobError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ResultError>>,
{
    // Eleven attempts, 50 ms after the first failure, doubling up to 2 s:
    // about 11 s of waiting, in which clients that lost a broker reach it
    // again (they try at least once a second, see `results/kafka`).
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(10);
    let chunk_seq = chunks.first().map_or(0, |c| c.chunk_seq);
    let mut attempt = 0;
    let done = step
        .retry(backoff)
        .when(ResultError::is_retryable)
        .notify(|e, _| {
            attempt += 1;
            warn!(error = %e, attempt, chunk_seq, chunks = chunks.len(), "publish failed; retrying");
        })
        .await?;
    Ok(done)
}
