//! Workers: claim a job from the queue, run it against the source as a
//! stream in a deterministic order, cut it into chunks, publish each chunk
//! and only then advance the job's progress. A resumed job skips the rows it
//! already published, so readers see no gaps and no repeats.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, error, info_span, warn};

use crate::coord::QueuedJob;
use crate::jobs::{JobError, Jobs};
use crate::model::{JobRecord, JobSpec, JobStatus, JobUpdate};
use crate::results::ResultError;
use crate::source::{AwaitingFirstRows, Lane, SourceError};

mod cutter;
mod run;

use run::run_job;

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
/// Also returns the attempt the worker ran the job as, once it had one.
async fn run_on_query_runtime(
    jobs: &Arc<Jobs>,
    spec: JobSpec,
    waiting: AwaitingFirstRows,
    shutdown: &CancellationToken,
) -> (Result<Outcome, JobError>, Option<u32>) {
    let runtime = &jobs.backends.query_runtime;
    let (jobs, shutdown) = (jobs.clone(), shutdown.clone());
    let task = AbortOnDropHandle::new(
        runtime.spawn(
            Lane::Prompt,
            async move {
                let mut attempt = None;
                let outcome = run_job(&jobs, spec, waiting, &shutdown, &mut attempt).await;
                (outcome, attempt)
            }
            .in_current_span(),
        ),
    );
    match task.await {
        Ok(ran) => ran,
        Err(e) => {
            let error = SourceError::Internal(format!("the job's task failed: {e}"));
            (Err(JobError::Source(error)), None)
        }
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
        let (outcome, attempt) = run_on_query_runtime(&jobs, spec, waiting, &shutdown)
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
            // Not acknowledged either: the delivery is the newer attempt's
            // now, and acknowledging would drop it from under that worker.
            Ok(Outcome::Superseded) | Err(JobError::Results(ResultError::Superseded { .. })) => {
                span.in_scope(|| let_go_superseded(&jobs, &queued, attempt));
                continue;
            }
            Err(e) => {
                span.in_scope(|| error!(error = %e, "job could not publish its last chunk, or its task failed; marking it failed"));
                match mark_failed(&jobs, &queued.spec, attempt, e.to_string()).await {
                    Marked::Settled => {}
                    Marked::Superseded => {
                        span.in_scope(|| let_go_superseded(&jobs, &queued, attempt));
                        continue;
                    }
                    Marked::Unanswered => {
                        // Not acknowledged: after its lease the queue hands
                        // the job to a worker again, which resumes it.
                        span.in_scope(|| {
                            warn!("could not mark the job failed; left for another attempt")
                        });
                        continue;
                    }
                }
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
pub(super) enum Outcome {
    /// Its last chunk is published (or it was already finished).
    Finished,
    /// Shutdown came mid-job and another worker can take it over.
    LeftForTakeover,
    /// Another worker took the job over while this one was silent past its
    /// lease; this one stopped without finishing it.
    Superseded,
}

/// A worker that found a newer attempt running its job lets go: without
/// acknowledging the delivery (it is the newer attempt's now, and an
/// acknowledgement would drop it from under that worker), and without
/// serving what it published late from this process's cache.
fn let_go_superseded(jobs: &Jobs, queued: &QueuedJob, attempt: Option<u32>) {
    jobs.backends.results.forget_cached(queued.spec.job_id);
    warn!(
        attempt,
        "another worker took the job over (this one was silent past its lease); stopped"
    );
}

/// What marking a job failed came to.
enum Marked {
    /// Marked, already finished, or its record gone (then only its audit
    /// row can say how it ended).
    Settled,
    /// The job store did not answer: the job is worth another attempt.
    Unanswered,
    /// A newer attempt than this worker's runs the job, and ends it.
    Superseded,
}

/// Last resort when even the last chunk cannot be published: the job still
/// ends (so it expires and frees its offset), and readers see its status.
/// Only as the attempt that runs the job (`attempt`, when the worker got
/// as far as starting it).
async fn mark_failed(jobs: &Jobs, spec: &JobSpec, attempt: Option<u32>, error: String) -> Marked {
    let job_store = &jobs.backends.job_store;
    let job_id = spec.job_id;
    let now = jobs.now();
    let expires_at = jobs.settings.expires_at(now);
    let job = match job_store.job(job_id).await {
        Ok(Some(job)) => job,
        Ok(None) => {
            let error = format!("{error} (and the job's record was lost)");
            let lost = JobRecord::rebuilt(
                spec.clone(),
                now,
                &JobUpdate::failed(error, now, expires_at),
            );
            audit_progress(jobs, &lost).await;
            return Marked::Settled;
        }
        Err(_) => return Marked::Unanswered,
    };
    if job.status.is_finished() {
        return Marked::Settled;
    }
    let update = JobUpdate::Finished {
        attempt,
        status: JobStatus::Failed,
        rows: job.rows,
        chunks: job.chunks,
        truncated: false,
        error: Some(error),
        at: now,
        expires_at,
    };
    match job_store.update_job(job_id, update).await {
        Ok(Some(job)) if attempt.is_some_and(|a| job.attempt > a) => Marked::Superseded,
        Ok(Some(job)) => {
            audit_progress(jobs, &job).await;
            Marked::Settled
        }
        Ok(None) => Marked::Settled,
        Err(_) => Marked::Unanswered,
    }
}

/// The audit trail follows the job; a failure here must not fail the job,
/// whose rows are already with readers.
async fn audit_progress(jobs: &Jobs, job: &JobRecord) {
    if let Err(e) = jobs.backends.audit.record_progress(job).await {
        warn!(error = %e, "could not update the audit row");
    }
}
