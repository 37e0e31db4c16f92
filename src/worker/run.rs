//! Running one job: start it, stream its rows from the source, hand them
//! to the cutter in batches, and stop on cancel, shutdown or the row cap.

use std::time::Duration;

use futures::stream::Fuse;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::cutter::ChunkCutter;
use super::{Outcome, audit_progress};
use crate::filter;
use crate::jobs::{JobError, Jobs};
use crate::model::{JobSpec, JobStatus, JobUpdate, Row};
use crate::source::{AwaitingFirstRows, RowStream, SourceError, SourceQuery};

/// Why a job stopped before its stream ended.
enum Stop {
    Cancelled,
    Shutdown,
    /// The job's record is gone from the coordination store (Redis lost
    /// its data): nobody can read the job any more, and its offset may be
    /// leased again soon, so it stops and says why.
    RecordLost,
    /// Another worker took the job over (this one went silent past its
    /// lease, e.g. frozen): it stops at once, writing nothing more.
    Superseded,
}

/// The error a job whose record was lost ends with.
const RECORD_LOST: &str = "the job's record was lost by the coordination store (Redis restarted without its data); submit it again";

/// Runs the job; `started` learns the attempt this worker runs as, once
/// the job store gave it one.
pub(super) async fn run_job(
    jobs: &Jobs,
    spec: JobSpec,
    waiting: AwaitingFirstRows,
    shutdown: &CancellationToken,
    started: &mut Option<u32>,
) -> Result<Outcome, JobError> {
    let b = &jobs.backends;
    let Some(job) = b
        .job_store
        .update_job(spec.job_id, JobUpdate::Started { at: jobs.now() })
        .await?
    else {
        return Ok(Outcome::Finished); // expired or forgotten while queued
    };
    if job.status.is_finished() {
        return Ok(Outcome::Finished); // delivered twice; the first delivery finished it
    }
    let attempt = job.attempt;
    *started = Some(attempt);
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
    info!(skip = run.rows, attempt, "job started");
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
    let stop_requested = stop_requested(jobs, spec.job_id, attempt);
    tokio::pin!(stop_requested);
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
                stop = &mut stop_requested => break Some(stop),
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
            break Some(if run.record_lost {
                Stop::RecordLost
            } else if run.superseded {
                Stop::Superseded
            } else {
                Stop::Cancelled
            });
        }
    };
    drop(stream);
    // A cancel that came while the last rows were read still counts; a job
    // shorter than one look-out interval is spared the extra round trip.
    let stop = match stop {
        None if scanning_since.elapsed() >= CANCEL_CHECK_INTERVAL => {
            look_for_stop(jobs, spec.job_id, attempt).await
        }
        stop => stop,
    };
    match stop {
        None => run.finish(JobStatus::Completed, None).await,
        Some(Stop::Cancelled) => run.finish(JobStatus::Cancelled, None).await,
        Some(Stop::RecordLost) => {
            run.finish(JobStatus::Failed, Some(RECORD_LOST.to_owned()))
                .await
        }
        Some(Stop::Superseded) => Ok(Outcome::Superseded),
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

/// Resolves once the job's cancel is requested, its record is gone, or
/// another attempt took it over.
async fn stop_requested(jobs: &Jobs, job_id: crate::model::JobId, attempt: u32) -> Stop {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + CANCEL_CHECK_INTERVAL,
        CANCEL_CHECK_INTERVAL,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(stop) = look_for_stop(jobs, job_id, attempt).await {
            return stop;
        }
    }
}

/// Whether the job's cancel was requested, its record is gone, or a newer
/// attempt runs it. A job store that does not answer says none of these:
/// the next look, or the next progress update, asks again.
async fn look_for_stop(jobs: &Jobs, job_id: crate::model::JobId, attempt: u32) -> Option<Stop> {
    match jobs.backends.job_store.job(job_id).await {
        Ok(None) => Some(Stop::RecordLost),
        Ok(Some(job)) if job.attempt > attempt => Some(Stop::Superseded),
        Ok(Some(job)) if job.cancel_requested => Some(Stop::Cancelled),
        Ok(Some(_)) => None,
        Err(e) => {
            debug!(error = %e, "could not look for a cancel; looking again later");
            None
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
