//! Workers: claim a job from the queue, run it against the source as a
//! stream in a deterministic order, cut it into chunks, publish each chunk
//! and only then advance the job's progress. A resumed job skips the rows it
//! already published, so readers see no gaps and no repeats.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use futures::stream::Fuse;
use futures::{FutureExt, StreamExt};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::coord::QueuedJob;
use crate::filter;
use crate::jobs::{JobError, Jobs};
use crate::model::{Chunk, JobRecord, JobSpec, JobStatus, JobUpdate};
use crate::results::ResultError;
use crate::source::{AwaitingFirstRows, Row, RowStream, SourceError, SourceQuery};

/// Starts `count` workers; each ends when `shutdown` is cancelled, after
/// closing the job it is running with a last chunk.
pub fn spawn(jobs: &Arc<Jobs>, count: usize, shutdown: &CancellationToken) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for n in 0..count {
        let jobs = jobs.clone();
        let shutdown = shutdown.clone();
        // Workers wait for jobs on this (the API's) runtime, so a job is
        // taken, and bulk queries yield to it, the moment it is queued,
        // even while the query runtime is busy. The job itself runs there.
        let worker = async move {
            run(jobs, shutdown)
                .instrument(info_span!("worker", n))
                .await
        };
        set.spawn(worker);
    }
    set
}

/// Runs a job on the query runtime, beside the queries: encoding and
/// publishing chunks is job work too, and must not slow the API down.
/// A panic fails the job instead of the worker; dropping the future
/// (a worker aborted at the end of the shutdown grace) stops the job.
async fn run_on_query_runtime(
    jobs: &Arc<Jobs>,
    spec: JobSpec,
    waiting: AwaitingFirstRows,
    shutdown: &CancellationToken,
) -> Result<Outcome, JobError> {
    let runtime = &jobs.backends.query_runtime;
    let (jobs, shutdown) = (jobs.clone(), shutdown.clone());
    let task = AbortOnDropHandle::new(
        runtime
            .spawn(async move { run_job(&jobs, spec, waiting, &shutdown).await }.in_current_span()),
    );
    match task.await {
        Ok(outcome) => outcome,
        Err(e) => Err(JobError::Source(SourceError::Engine(format!(
            "the job's task failed: {e}"
        )))),
    }
}

async fn run(jobs: Arc<Jobs>, shutdown: CancellationToken) {
    loop {
        let queued = match jobs.backends.queue.next(&shutdown).await {
            Ok(Some(queued)) => queued,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "job queue unavailable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        // Bulk query work yields to this job until its query has started
        // (the source then marks it until its first rows).
        let waiting = AwaitingFirstRows::start(&jobs.backends.query_runtime);
        let spec = queued.spec.clone();
        let span = info_span!("job", job_id = %spec.job_id, offset = %spec.offset, fingerprint = %spec.fingerprint);
        let heartbeat = spawn_heartbeat(&jobs, &queued);
        let running = &jobs.metrics.jobs_running;
        running.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let outcome = run_on_query_runtime(&jobs, spec, waiting, &shutdown)
            .instrument(span.clone())
            .await;
        running.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(heartbeat) = heartbeat {
            heartbeat.abort();
        }
        match outcome {
            Ok(Outcome::Finished) => {}
            // Not acknowledged: the queue hands it to another worker, which resumes it.
            Ok(Outcome::LeftForTakeover) => continue,
            Err(e) => {
                span.in_scope(|| error!(error = %e, "job could not publish its last chunk, or its task failed; marking it failed"));
                mark_failed(&jobs, queued.spec.job_id, e.to_string()).await;
            }
        }
        if let Err(e) = jobs.backends.queue.ack(&queued).await {
            span.in_scope(|| warn!(error = %e, "could not acknowledge the finished job"));
        }
    }
}

/// Keeps a distributed queue's lease on the job fresh while it runs.
fn spawn_heartbeat(jobs: &Arc<Jobs>, queued: &QueuedJob) -> Option<tokio::task::JoinHandle<()>> {
    let every = jobs.backends.queue.heartbeat_interval()?;
    let (jobs, queued) = (jobs.clone(), queued.clone());
    Some(tokio::spawn(async move {
        // The first beat is one interval in: taking the job from the queue
        // has just started its lease, and a beat at once would cost every
        // job, however short, a round trip for nothing.
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            if let Err(e) = jobs.backends.queue.heartbeat(&queued).await {
                warn!(job_id = %queued.spec.job_id, error = %e, "heartbeat failed");
            }
        }
    }))
}

/// How a worker let go of a job.
enum Outcome {
    /// Its last chunk is published (or it was already finished).
    Finished,
    /// Shutdown came mid-job and another worker can take it over.
    LeftForTakeover,
}

/// Why a job stopped before its stream ended.
enum Stop {
    Cancelled,
    Shutdown,
}

async fn run_job(
    jobs: &Jobs,
    spec: JobSpec,
    waiting: AwaitingFirstRows,
    shutdown: &CancellationToken,
) -> Result<Outcome, JobError> {
    let b = &jobs.backends;
    let Some(job) = b
        .job_store
        .update_job(spec.job_id, JobUpdate::Started { at: Utc::now() })
        .await?
    else {
        return Ok(Outcome::Finished); // expired or forgotten while queued
    };
    if job.status.is_finished() {
        return Ok(Outcome::Finished); // delivered twice; the first delivery finished it
    }
    audit_progress(jobs, &job).await;
    let mut run = ChunkCutter::resume(jobs, &job);
    if job.cancel_requested {
        return run.finish(JobStatus::Cancelled, None).await;
    }
    let filter = match filter::compile(
        &spec.filter,
        b.source.schema(),
        &jobs.settings.filter_limits,
        &jobs.regexes,
    ) {
        Ok(filter) => filter,
        Err(e) => {
            return run
                .finish(
                    JobStatus::Failed,
                    Some(format!("the stored filter no longer compiles: {e}")),
                )
                .await;
        }
    };
    let query = SourceQuery {
        predicate: filter.predicate().clone(),
        from_us: spec.from_us,
        to_us: spec.to_us,
        fields: spec.fields.clone(),
        order: spec.order,
        skip: run.rows,
        // One row past the cap tells us the result was truncated.
        limit: spec.max_rows.saturating_sub(run.rows).saturating_add(1),
    };
    info!(skip = run.rows, "job started");
    let stream = b.source.query(query).await;
    drop(waiting);
    let stream = match stream {
        Ok(stream) => stream,
        Err(e) => return run.finish(JobStatus::Failed, Some(e.to_string())).await,
    };
    // Rows the source already has ready are taken together, so the chunks
    // they fill are published as one batch: one acknowledgement and one
    // progress update (which also says whether the job was cancelled) per
    // batch. A job's first chunk goes alone (its rows, plus the row that
    // proves it is not the last): the dashboard is waiting for it, and
    // against Kafka a batch is readable only once all of it is
    // acknowledged. Later batches start at `PUBLISH_BATCH_START` chunks and
    // double up to `MAX_PUBLISH_BATCH`: each costs a broker round trip, so a
    // long result wants few of them.
    let chunk_rows = jobs.settings.chunk_rows;
    let mut batch_rows = if run.chunks == 0 {
        chunk_rows + 1
    } else {
        PUBLISH_BATCH_START * chunk_rows
    };
    let mut batch_chunks = PUBLISH_BATCH_START;
    let mut stream = stream.fuse();
    let scanning_since = tokio::time::Instant::now();
    let cancel_requested = cancel_requested(jobs, spec.job_id);
    tokio::pin!(cancel_requested);
    let mut scan_gate = jobs.hooks.scan_gate.clone();
    // Rows read while the previous batch was being published.
    let mut read_ahead = Vec::new();
    let stop = 'rows: loop {
        let mut ready = std::mem::take(&mut read_ahead);
        if ready.is_empty() {
            let rows = async {
                if let Some(gate) = scan_gate.take()
                    && let Ok(permit) = gate.acquire().await
                {
                    permit.forget();
                }
                ready_rows(&mut stream, batch_rows).await
            };
            let next = tokio::select! {
                next = rows => next,
                _ = shutdown.cancelled() => break Some(Stop::Shutdown),
                () = &mut cancel_requested => break Some(Stop::Cancelled),
            };
            let Some(rows) = next else { break None };
            ready = rows;
        } else {
            take_ready(&mut stream, &mut ready, batch_rows);
        }
        batch_rows = batch_chunks * chunk_rows;
        batch_chunks = (batch_chunks * 2).min(MAX_PUBLISH_BATCH);
        for row in ready {
            match row {
                Err(e) => {
                    drop(stream);
                    return run.finish(JobStatus::Failed, Some(e.to_string())).await;
                }
                Ok(row) => {
                    if run.rows + run.held() == spec.max_rows {
                        run.truncated = true;
                        break 'rows None;
                    }
                    run.push(row);
                }
            }
        }
        let (published, rows) = publish_reading_ahead(&mut run, &mut stream, batch_rows).await;
        read_ahead = rows;
        if published? && run.cancel_seen {
            break Some(Stop::Cancelled);
        }
    };
    drop(stream);
    // A cancel that came while the last rows were read still counts; a job
    // shorter than one look-out interval is spared the extra round trip.
    let stop = match stop {
        None if scanning_since.elapsed() >= CANCEL_CHECK_INTERVAL
            && is_cancel_requested(jobs, spec.job_id).await =>
        {
            Some(Stop::Cancelled)
        }
        stop => stop,
    };
    match stop {
        None => run.finish(JobStatus::Completed, None).await,
        Some(Stop::Cancelled) => run.finish(JobStatus::Cancelled, None).await,
        Some(Stop::Shutdown) if jobs.backends.queue.heartbeat_interval().is_some() => {
            info!(
                rows = run.rows,
                "shutting down mid-job; another worker will resume it"
            );
            Ok(Outcome::LeftForTakeover)
        }
        Some(Stop::Shutdown) => {
            let reason =
                "the service shut down before the job finished; submit it again".to_owned();
            run.finish(JobStatus::Failed, Some(reason)).await
        }
    }
}

/// How often a running job looks for a cancel of its own. Publishing a
/// batch also looks (in its progress update), but a sparse job can scan for
/// seconds between batches, and those are the jobs users cancel.
const CANCEL_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Resolves once the job's cancel is requested, or the job is gone.
async fn cancel_requested(jobs: &Jobs, job_id: crate::model::JobId) {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + CANCEL_CHECK_INTERVAL,
        CANCEL_CHECK_INTERVAL,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if is_cancel_requested(jobs, job_id).await {
            return;
        }
    }
}

/// Whether the job's cancel was requested (or the job forgotten). A
/// job store that does not answer says no: the next look, or the next
/// progress update, asks again.
async fn is_cancel_requested(jobs: &Jobs, job_id: crate::model::JobId) -> bool {
    match jobs.backends.job_store.job(job_id).await {
        Ok(job) => job.is_none_or(|j| j.cancel_requested),
        Err(e) => {
            debug!(error = %e, "could not look for a cancel; looking again later");
            false
        }
    }
}

/// Chunks in the publish batch after a job's first chunk (which goes
/// alone), and the most in any later one (published and acknowledged
/// together). At most `MAX_PUBLISH_BATCH` chunks per running job are held in
/// memory before acknowledgement.
const PUBLISH_BATCH_START: usize = 64;
const MAX_PUBLISH_BATCH: usize = 512;

/// Waits for the next row, then takes every row the source already has
/// ready, up to `cap`. `None` once the stream has ended (fused: a source
/// stream may not be polled after its end, and a batch can end with it).
/// Only the first row is awaited, so dropping this future (at shutdown)
/// never drops rows already taken from the source.
async fn ready_rows(
    stream: &mut Fuse<RowStream>,
    cap: usize,
) -> Option<Vec<Result<Row, SourceError>>> {
    let first = stream.next().await?;
    let mut rows = Vec::with_capacity(cap.min(1024));
    rows.push(first);
    take_ready(stream, &mut rows, cap);
    Some(rows)
}

/// Adds the rows the source already has ready to `rows`, up to `cap` in all.
fn take_ready(stream: &mut Fuse<RowStream>, rows: &mut Vec<Result<Row, SourceError>>, cap: usize) {
    while rows.len() < cap {
        // A pending `next` is dropped unpolled again: no row is lost.
        match stream.next().now_or_never() {
            Some(Some(row)) => rows.push(row),
            _ => break,
        }
    }
}

/// Publishes the chunks cut so far (see `ChunkCutter::publish_cut`) while
/// reading up to `cap` further rows, so the source keeps working during the
/// acknowledgement round trip instead of stalling on its full channel.
/// Returns the publish outcome and the rows read meanwhile, in order.
async fn publish_reading_ahead(
    run: &mut ChunkCutter<'_>,
    stream: &mut Fuse<RowStream>,
    cap: usize,
) -> (Result<bool, JobError>, Vec<Result<Row, SourceError>>) {
    let mut rows = Vec::new();
    let publish = run.publish_cut();
    tokio::pin!(publish);
    let published = loop {
        tokio::select! {
            biased;
            published = &mut publish => break published,
            // `next` is cancel-safe: a row is either returned or still in
            // the stream. An ended stream disables this branch.
            Some(row) = stream.next(), if rows.len() < cap => rows.push(row),
        }
    };
    (published, rows)
}

/// Cuts a job's rows into chunks and publishes them in order.
struct ChunkCutter<'a> {
    jobs: &'a Jobs,
    spec: JobSpec,
    submitted_at: chrono::DateTime<Utc>,
    /// Rows and chunks published and acknowledged so far.
    rows: u64,
    chunks: u64,
    /// Full chunks cut but not yet published, oldest first.
    cut: Vec<Vec<Row>>,
    /// Rows not yet cut. Up to one chunk plus one row is held back: the last
    /// chunk must say it is last, so a full chunk waits until the next row
    /// proves more follow.
    pending: Vec<Row>,
    truncated: bool,
    /// Whether the job was cancelled (or forgotten), as the progress update
    /// after the last publish found it: no extra round trip per batch.
    cancel_seen: bool,
    /// How long publishing the job's only chunk took, when its first chunk
    /// is also its last: it becomes readable with the job's finish.
    first_publish: Option<Duration>,
}

impl<'a> ChunkCutter<'a> {
    fn resume(jobs: &'a Jobs, job: &JobRecord) -> ChunkCutter<'a> {
        ChunkCutter {
            jobs,
            spec: job.spec.clone(),
            submitted_at: job.submitted_at,
            rows: job.rows,
            chunks: job.chunks,
            cut: Vec::new(),
            pending: Vec::with_capacity(jobs.settings.chunk_rows + 1),
            truncated: false,
            cancel_seen: false,
            first_publish: None,
        }
    }

    /// Rows taken from the source but not yet published.
    fn held(&self) -> u64 {
        (self.cut.iter().map(Vec::len).sum::<usize>() + self.pending.len()) as u64
    }

    /// Adds a row, cutting a chunk off when one is full and another row follows.
    fn push(&mut self, row: Row) {
        self.pending.push(row);
        let size = self.jobs.settings.chunk_rows;
        if self.pending.len() > size {
            let rest = self.pending.split_off(size);
            self.cut.push(std::mem::replace(&mut self.pending, rest));
        }
    }

    /// Publishes the chunks cut so far; returns whether there were any.
    async fn publish_cut(&mut self) -> Result<bool, JobError> {
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
    async fn finish(
        mut self,
        status: JobStatus,
        error: Option<String>,
    ) -> Result<Outcome, JobError> {
        self.publish_cut().await?;
        let rows = std::mem::take(&mut self.pending);
        let truncated = self.truncated;
        let last = self.chunk(0, rows, Some((status, error.clone())));
        self.publish(vec![last]).await?;
        let now = Utc::now();
        let expires_at = self.jobs.settings.expires_at(now);
        let update = JobUpdate::Finished {
            status,
            rows: self.rows,
            chunks: self.chunks,
            truncated,
            error,
            at: now,
            expires_at,
        };
        if let Some(job) = self
            .jobs
            .backends
            .job_store
            .update_job(self.spec.job_id, update)
            .await?
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
                at: Utc::now(),
            };
            let job = self
                .jobs
                .backends
                .job_store
                .update_job(self.spec.job_id, progress)
                .await?;
            self.cancel_seen = job.as_ref().is_none_or(|j| j.cancel_requested);
            if first {
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
        let waited = (Utc::now() - self.submitted_at)
            .to_std()
            .unwrap_or_default();
        self.jobs.metrics.first_chunk_seconds.observe(waited);
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
    // Six attempts, 50 ms after the first failure and doubling.
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .without_max_delay()
        .with_max_times(5);
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

/// Last resort when even the last chunk cannot be published: the job still
/// ends (so it expires and frees its offset), and readers see its status.
async fn mark_failed(jobs: &Jobs, job_id: crate::model::JobId, error: String) {
    let job_store = &jobs.backends.job_store;
    let Ok(Some(job)) = job_store.job(job_id).await else {
        return;
    };
    if job.status.is_finished() {
        return;
    }
    let now = Utc::now();
    let expires_at = jobs.settings.expires_at(now);
    let update = JobUpdate::Finished {
        status: JobStatus::Failed,
        rows: job.rows,
        chunks: job.chunks,
        truncated: false,
        error: Some(error),
        at: now,
        expires_at,
    };
    if let Ok(Some(job)) = job_store.update_job(job_id, update).await {
        audit_progress(jobs, &job).await;
    }
}

/// The audit trail follows the job; a failure here must not fail the job,
/// whose rows are already with readers.
async fn audit_progress(jobs: &Jobs, job: &JobRecord) {
    if let Err(e) = jobs.backends.audit.record_progress(job).await {
        warn!(error = %e, "could not update the audit row");
    }
}
