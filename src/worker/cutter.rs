//! The cutter: turns a job's rows into chunks, publishes them in order and
//! only then advances the job's progress.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use tracing::{debug, info, warn};

use super::{Outcome, audit_progress};
use crate::jobs::{JobError, Jobs};
use crate::model::{Chunk, JobRecord, JobSpec, JobStatus, JobUpdate, Row};
use crate::results::ResultError;

/// Cuts a job's rows into chunks and publishes them in order.
pub(super) struct ChunkCutter<'a> {
    jobs: &'a Jobs,
    spec: JobSpec,
    submitted_at: chrono::DateTime<Utc>,
    /// The attempt this worker runs the job as: every chunk carries it, and
    /// the job store refuses its updates once a newer attempt started.
    attempt: u32,
    /// Rows and chunks published and acknowledged so far.
    pub(super) rows: u64,
    pub(super) chunks: u64,
    /// Full chunks cut but not yet published, oldest first.
    cut: Vec<Vec<Row>>,
    /// Rows not yet cut. Up to one chunk plus one row is held back: the last
    /// chunk must say it is last, so a full chunk waits until the next row
    /// proves more follow.
    pending: Vec<Row>,
    pub(super) truncated: bool,
    /// Whether the job was cancelled (or forgotten), as the progress update
    /// after the last publish found it: no extra round trip per batch.
    pub(super) cancel_seen: bool,
    /// Whether that update found the job's record gone.
    pub(super) record_lost: bool,
    /// Whether that update was refused: another worker took the job over.
    pub(super) superseded: bool,
    /// How long publishing the job's only chunk took, when its first chunk
    /// is also its last: it becomes readable with the job's finish.
    first_publish: Option<Duration>,
}

impl<'a> ChunkCutter<'a> {
    pub(super) fn resume(jobs: &'a Jobs, job: &JobRecord) -> ChunkCutter<'a> {
        ChunkCutter {
            jobs,
            spec: job.spec.clone(),
            submitted_at: job.submitted_at,
            attempt: job.attempt,
            rows: job.rows,
            chunks: job.chunks,
            cut: Vec::new(),
            pending: Vec::with_capacity(jobs.settings.chunk_rows + 1),
            truncated: false,
            cancel_seen: false,
            record_lost: false,
            superseded: false,
            first_publish: None,
        }
    }

    /// Rows taken from the source but not yet published.
    pub(super) fn held(&self) -> u64 {
        (self.cut.iter().map(Vec::len).sum::<usize>() + self.pending.len()) as u64
    }

    /// Adds a row, cutting a chunk off when one is full and another row follows.
    pub(super) fn push(&mut self, row: Row) {
        self.pending.push(row);
        let size = self.jobs.settings.chunk_rows;
        if self.pending.len() > size {
            let rest = self.pending.split_off(size);
            self.cut.push(std::mem::replace(&mut self.pending, rest));
        }
    }

    /// Publishes the chunks cut so far; returns whether there were any.
    pub(super) async fn publish_cut(&mut self) -> Result<bool, JobError> {
        if self.cut.is_empty() {
            return Ok(false);
        }
        let cut = std::mem::take(&mut self.cut);
        // A test gate releases chunks one by one, so they go one per batch.
        if self.jobs.hooks.chunk_gate.is_some() {
            for rows in cut {
                let chunk = self.chunk(0, rows, None);
                self.publish(vec![chunk]).await?;
                if self.cancel_seen {
                    // Stop at this chunk: the last one says cancelled, empty.
                    self.pending.clear();
                    break;
                }
            }
        } else {
            let mut chunks = Vec::with_capacity(cut.len());
            for (n, rows) in cut.into_iter().enumerate() {
                chunks.push(self.chunk(n as u64, rows, None));
            }
            self.publish(chunks).await?;
        }
        Ok(true)
    }

    /// Publishes what is pending as the last chunk and records the outcome.
    pub(super) async fn finish(
        mut self,
        status: JobStatus,
        error: Option<String>,
    ) -> Result<Outcome, JobError> {
        self.publish_cut().await?;
        let rows = std::mem::take(&mut self.pending);
        let truncated = self.truncated;
        let last = self.chunk(0, rows, Some((status, error.clone())));
        self.publish(vec![last]).await?;
        let now = self.jobs.now();
        let expires_at = self.jobs.settings.expires_at(now);
        let update = JobUpdate::Finished {
            status,
            rows: self.rows,
            chunks: self.chunks,
            truncated,
            error,
            at: now,
            expires_at,
            attempt: Some(self.attempt),
        };
        let stored = self
            .jobs
            .backends
            .job_store
            .update_job(self.spec.job_id, update.clone())
            .await?;
        let Some(job) = stored else {
            // The record is gone (the coordination store lost its data):
            // the audit row still says how the job ended.
            let job = JobRecord::rebuilt(self.spec.clone(), self.submitted_at, &update);
            warn!(
                status = status.as_str(),
                "the job's record is gone from the coordination store; its end is only audited"
            );
            audit_progress(self.jobs, &job).await;
            return Ok(Outcome::Finished);
        };
        if job.attempt > self.attempt {
            info!(
                attempt = self.attempt,
                newer = job.attempt,
                "another worker took the job over; not finishing it"
            );
            return Ok(Outcome::Superseded);
        }
        {
            // Counted once the job store has the outcome; a reader that
            // saw the last chunk may scrape a moment before this.
            self.jobs.metrics.job_finished(status.as_str());
            if let Some(publishing) = self.first_publish {
                self.first_chunk_readable(publishing);
            }
            audit_progress(self.jobs, &job).await;
            info!(
                status = status.as_str(),
                rows = job.rows,
                chunks = job.chunks,
                truncated,
                "job finished"
            );
        }
        Ok(Outcome::Finished)
    }

    /// The chunk `ahead` places after the last acknowledged one.
    fn chunk(
        &self,
        ahead: u64,
        rows: Vec<Row>,
        last: Option<(JobStatus, Option<String>)>,
    ) -> Chunk {
        let is_last = last.is_some();
        let (status, error) = last.map_or((None, None), |(s, e)| (Some(s), e));
        let total_rows = is_last.then_some(self.rows + rows.len() as u64);
        Chunk {
            job_id: self.spec.job_id,
            offset: self.spec.offset,
            chunk_seq: self.chunks + ahead,
            attempt: self.attempt,
            is_last,
            rows,
            status,
            total_rows,
            truncated: is_last.then_some(self.truncated),
            error,
        }
    }

    /// Publishes consecutive chunks and, once they are all acknowledged,
    /// advances the job's progress over them (unless the last one ends it).
    async fn publish(&mut self, chunks: Vec<Chunk>) -> Result<(), JobError> {
        let Some(tail) = chunks.last() else {
            return Ok(());
        };
        let is_last = tail.is_last;
        let count: u64 = chunks.iter().map(|c| c.rows.len() as u64).sum();
        if let Some(gate) = &self.jobs.hooks.chunk_gate
            && let Ok(permit) = gate.acquire().await
        {
            permit.forget();
        }
        let started = std::time::Instant::now();
        let metrics = &self.jobs.metrics;
        if let Err(e) = publish_with_retry(self.jobs, &chunks).await {
            metrics.publish_errors_total.inc();
            return Err(e);
        }
        let publishing = started.elapsed();
        metrics.publish_batch_seconds.observe(publishing);
        metrics.chunks_published_total.add(chunks.len() as u64);
        metrics.rows_published_total.add(count);
        let first = self.chunks == 0;
        self.rows += count;
        self.chunks += chunks.len() as u64;
        if !is_last {
            let progress = JobUpdate::Progress {
                rows: self.rows,
                chunks: self.chunks,
                at: self.jobs.now(),
                attempt: self.attempt,
            };
            let job = self
                .jobs
                .backends
                .job_store
                .update_job(self.spec.job_id, progress)
                .await?;
            self.superseded = job.as_ref().is_some_and(|j| j.attempt > self.attempt);
            self.cancel_seen = self.superseded || job.as_ref().is_none_or(|j| j.cancel_requested);
            self.record_lost = job.is_none();
            if let Some(readable) = &self.jobs.hooks.chunk_readable
                && !self.superseded
            {
                let now = std::time::Instant::now();
                for seq in self.chunks - chunks.len() as u64..self.chunks {
                    let _ = readable.send((self.spec.job_id, seq, now));
                }
            }
            if first && !self.superseded {
                self.first_chunk_readable(publishing);
                if let Some(job) = job {
                    audit_progress(self.jobs, &job).await;
                }
            }
        } else if first {
            self.first_publish = Some(publishing);
        }
        Ok(())
    }

    /// Observes the time from submission to the first chunk being readable:
    /// once the progress update that counts it has landed (or, for a job of
    /// one chunk, the update that finishes it).
    fn first_chunk_readable(&self, publishing: Duration) {
        let waited = (self.jobs.now() - self.submitted_at)
            .to_std()
            .unwrap_or_default();
        self.jobs.metrics.first_chunk_readable(waited);
        // How long the publish itself took tells a slow broker from a
        // slow query when a first chunk is late.
        debug!(
            waited_ms = waited.as_millis() as u64,
            publish_ms = publishing.as_millis() as u64,
            "first chunk readable"
        );
    }
}

/// Publishing the same chunk again is harmless (the topic ignores a seq it
/// already has), so transient failures are retried with backoff.
async fn publish_with_retry(jobs: &Jobs, chunks: &[Chunk]) -> Result<(), JobError> {
    // Eleven attempts, 50 ms after the first failure, doubling up to 2 s:
    // about 11 s of waiting, in which clients that lost a broker reach it
    // again (they try at least once a second, see `results/kafka`).
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(10);
    let chunk_seq = chunks.first().map_or(0, |c| c.chunk_seq);
    let mut attempt = 0;
    (|| jobs.backends.results.publish_batch(chunks))
        .retry(backoff)
        .when(ResultError::is_retryable)
        .notify(|e, _| {
            attempt += 1;
            warn!(error = %e, attempt, chunk_seq, chunks = chunks.len(), "publish failed; retrying");
        })
        .await?;
    Ok(())
}
