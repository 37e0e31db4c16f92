//! The cutter: turns a job's rows into chunks, publishes them in order and
//! only then advances the job's progress. A batch after the first chunk
//! is counted (made readable, then its progress updated: `readable.rs`)
//! while the next one is sent; the last chunk waits until everything
//! before it is counted.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tracing::{info, warn};

use super::readable::{self, Counting, SentBatch, retried};
use super::{Outcome, audit_progress};
use crate::jobs::{JobError, Jobs};
use crate::model::{Chunk, JobRecord, JobSpec, JobStatus, JobUpdate, Row};
use crate::results::{Acknowledged, ResultError};

/// Cuts a job's rows into chunks and publishes them in order.
pub(super) struct ChunkCutter<'a> {
    jobs: &'a Arc<Jobs>,
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
    /// The last batch sent, being counted; joined when the next one is
    /// sent, and before the last chunk.
    counting: Option<Counting>,
    /// Whether the job was cancelled (or forgotten), as the progress update
    /// of the last batch counted found it: no extra round trip per batch.
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
    pub(super) fn resume(jobs: &'a Arc<Jobs>, job: &JobRecord) -> ChunkCutter<'a> {
        ChunkCutter {
            jobs,
            spec: job.spec.clone(),
            submitted_at: job.submitted_at,
            attempt: job.attempt,
            rows: job.rows,
            chunks: job.chunks,
            cut: Vec::new(),
            pending: Vec::with_capacity(jobs.settings.chunk_rows + 1),
            counting: None,
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
        self.settle().await?;
        if self.superseded {
            return Ok(Outcome::Superseded);
        }
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
                readable::first_chunk_readable(self.jobs, self.submitted_at, publishing);
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

    /// Waits for the last batch sent to be counted, and learns from its
    /// progress update whether the job goes on.
    pub(super) async fn settle(&mut self) -> Result<(), JobError> {
        if let Some(counting) = self.counting.take() {
            let job = readable::counted(counting).await?;
            self.learn(job.as_ref());
        }
        Ok(())
    }

    /// Sends a batch while the one before is counted; `None` when that
    /// count found the job taken over (the run then stops). Also returns
    /// how long the send took until acknowledged.
    async fn send_beside_count(
        &mut self,
        chunks: &[Chunk],
    ) -> Result<Option<(Acknowledged, Duration)>, JobError> {
        let jobs = self.jobs;
        let (metrics, results) = (&jobs.metrics, &jobs.backends.results);
        let overlapped = self.counting.is_some();
        let previous = async {
            match self.counting.take() {
                Some(counting) => readable::counted(counting).await.map(Some),
                None => Ok(None),
            }
        };
        let started = std::time::Instant::now();
        let send = async {
            let sent = results.send_batch(chunks).await;
            (sent, started.elapsed())
        };
        let ((sent, took), previous) = tokio::join!(send, previous);
        if let Ok(Some(job)) = &previous {
            self.learn(job.as_ref());
        }
        // From here on the batch before is counted (or failed): what this
        // send got acknowledged can be made readable in its turn.
        let acknowledged = match &sent {
            Ok(sent) => sent,
            Err(failed) => &failed.acknowledged,
        };
        let taken_over = matches!(
            previous,
            Err(JobError::Results(ResultError::Superseded { .. }))
        );
        if self.superseded || taken_over {
            // Another worker took the job over while this batch was sent:
            // its copies may have landed after the newer attempt's. Its
            // index write keeps the newer attempt's places and has their
            // copies written again after these (`results/kafka/publish.rs`),
            // so the topic's last copy of each seq stays the newest.
            let _ = retried(chunks, || results.make_readable(chunks, acknowledged)).await;
        }
        previous?;
        if self.superseded {
            return Ok(None);
        }
        let failed = match sent {
            Ok(sent) => return Ok(Some((sent, took))),
            Err(failed) => failed,
        };
        let counted_error = |e: JobError| {
            metrics.publish_errors_total.inc();
            e
        };
        retried(chunks, || {
            results.make_readable(chunks, &failed.acknowledged)
        })
        .await
        .map_err(counted_error)?;
        // A first try beside the count may also have looked at the index
        // before the batch before was in it (after an earlier failure, the
        // topic looks), and found this batch out of sequence: it is tried
        // again now that the count is done, as a transient failure is.
        let again = failed.error.is_retryable()
            || (overlapped && matches!(failed.error, ResultError::OutOfSequence { .. }));
        if !again {
            return Err(counted_error(failed.error.into()));
        }
        let sent = retried(chunks, || results.send_batch_in_turn(chunks))
            .await
            .map_err(counted_error)?;
        Ok(Some((sent, started.elapsed())))
    }

    /// Learns from the record a progress update left.
    fn learn(&mut self, job: Option<&JobRecord>) {
        self.superseded = job.is_some_and(|j| j.attempt > self.attempt);
        self.cancel_seen = self.superseded || job.is_none_or(|j| j.cancel_requested);
        self.record_lost = job.is_none();
    }

    /// Publishes consecutive chunks and, once they are all acknowledged,
    /// counts them in the job's progress (unless the last one ends the job,
    /// which `finish` records). A later batch is counted in a task of its
    /// own while the next one is sent, so a cancel (or a takeover) is seen
    /// by the batch after the one whose update found it; the first chunk
    /// is counted at once.
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
        let first = self.chunks == 0;
        let (acknowledged, publishing) = if is_last {
            // Its finish is the job's last update: every batch before it
            // is counted first.
            self.settle().await?;
            let started = std::time::Instant::now();
            let (metrics, results) = (&self.jobs.metrics, &self.jobs.backends.results);
            retried(&chunks, || results.publish_batch(&chunks))
                .await
                .inspect_err(|_| metrics.publish_errors_total.inc())?;
            (None, started.elapsed())
        } else {
            match self.send_beside_count(&chunks).await? {
                Some((sent, took)) => (Some(sent), took),
                None => return Ok(()), // taken over: nothing more is counted
            }
        };
        let metrics = &self.jobs.metrics;
        metrics.publish_batch_seconds.observe(publishing);
        metrics.chunks_published_total.add(chunks.len() as u64);
        metrics.rows_published_total.add(count);
        self.rows += count;
        self.chunks += chunks.len() as u64;
        let Some(acknowledged) = acknowledged else {
            if first {
                self.first_publish = Some(publishing);
            }
            return Ok(());
        };
        let progress = JobUpdate::Progress {
            rows: self.rows,
            chunks: self.chunks,
            at: self.jobs.now(),
            attempt: self.attempt,
        };
        let batch = SentBatch {
            chunks,
            acknowledged,
            progress,
            attempt: self.attempt,
            first,
            submitted_at: self.submitted_at,
            publishing,
        };
        if first {
            // The dashboard is waiting for this one: counted at once, in
            // the job's own task, as the next rows are read meanwhile.
            let job = readable::count_now(self.jobs.clone(), batch).await?;
            self.learn(job.as_ref());
        } else {
            self.counting = Some(readable::count(self.jobs, batch));
        }
        Ok(())
    }
}
