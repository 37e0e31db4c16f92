//! Undoing an admission that failed part-way.
//!
//! A submission answered 503 must leave nothing behind: no fingerprint
//! claim that makes the next identical query wait, no offset leased to a
//! job that never was, no job record that holds a fingerprint and an offset
//! but never runs, no audit row that says `queued` forever. A call that
//! timed out may still have been applied (a frozen Redis runs it when it
//! thaws), so the undo covers the step that failed as well as those before
//! it. The backend that just failed is likely failing still, so the undo
//! runs in the background, off the request (the 503 goes out at once), and
//! retries each step for about a minute; every step is safe to repeat and
//! to run when the step it undoes never happened.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use tracing::{debug, warn};

use super::{Backends, Jobs};
use crate::model::{JobRecord, JobSpec, JobUpdate};

/// How far an admission got: the step it was at when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Reached {
    /// Claiming the fingerprint (or past it, before leasing).
    Claiming,
    Leasing,
    /// Writing the audit row.
    Auditing,
    /// Storing the record or enqueueing the job.
    Storing,
}

impl Jobs {
    /// Undoes, in the background, an admission of `spec` that failed at
    /// `reached` because of `why`.
    pub(super) fn undo_admission(
        &self,
        spec: JobSpec,
        reached: Reached,
        why: String,
        now: DateTime<Utc>,
    ) {
        let backends = self.backends.clone();
        let expires_at = self.settings.expires_at(now);
        tokio::spawn(async move {
            undo(&backends, &spec, reached, &why, now, expires_at).await;
        });
    }
}

async fn undo(
    b: &Backends,
    spec: &JobSpec,
    reached: Reached,
    why: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) {
    let job = spec.job_id;
    let error = format!("the submission was refused: {why}");
    if reached >= Reached::Storing {
        // A stored record ends failed: its expiry then frees the offset and
        // the fingerprint, as for any job. Without a record, undo the rest.
        let update = JobUpdate::failed(error.clone(), now, expires_at);
        let ended = step("end the stored job", || {
            b.job_store.update_job(job, update.clone())
        })
        .await;
        match ended {
            Some(Some(record)) => {
                let _ = b.audit.record_progress(&record).await;
                return;
            }
            Some(None) => {} // never stored
            // Unknown: the record may hold the offset, so it stays leased.
            None => return,
        }
    }
    if reached >= Reached::Auditing {
        // The outbox lands this once the audit store answers; a row that
        // was never written is simply not found.
        let update = JobUpdate::failed(error, now, expires_at);
        let record = JobRecord::rebuilt(spec.clone(), now, &update);
        let _ = b.audit.record_progress(&record).await;
    }
    if reached >= Reached::Leasing {
        step("release the offset", || b.offsets.release_held_by(job)).await;
    }
    step("give back the fingerprint claim", || {
        b.dedup.abandon_fingerprint(spec.fingerprint, job)
    })
    .await;
    debug!(job_id = %job, ?reached, "refused admission undone");
}

/// One undo step, retried for about a minute; `None` if it never landed.
async fn step<R, F, Fut>(what: &'static str, call: F) -> Option<R>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<R, crate::coord::CoordError>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_max_times(10)
        .with_jitter();
    match call.retry(backoff).await {
        Ok(result) => Some(result),
        Err(e) => {
            warn!(error = %e, "could not {what} of a refused submission");
            None
        }
    }
}
