//! Sharing a live job. A submission claims its query's fingerprint and
//! either wins it (and admits a new job) or joins the live job holding it.
//! A relative range is fingerprinted by its expression (`last 7d`), so that
//! job may have resolved its ends a while ago: it is shared only while its
//! end is at most the submission's `maxStaleness` old. Past that, the
//! submission takes the fingerprint over for a fresh job, by compare-and-set
//! so that racing submissions start one; the stale job lives on for its
//! readers until it expires, and new submissions go to the fresh one.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::submit::{CLAIM_PATIENCE, Submitted, audit_entry};
use super::{JobError, Jobs};
use crate::audit::rfc3339;
use crate::coord::Claim;
use crate::filter::Fingerprint;
use crate::model::{JobId, JobRecord, Principal};

/// How fresh a live job must be for a submission to share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// An absolute range: its fingerprint names exactly its rows, so any
    /// live job with it answers.
    Exact,
    /// A relative range: the job's resolved end at most this long before
    /// the submission. Zero never shares, so it always starts a fresh job.
    Within(Duration),
}

impl Freshness {
    /// Whether a live job whose range ends at `to_us` is fresh enough at `now`.
    pub fn admits(self, to_us: i64, now: DateTime<Utc>) -> bool {
        match self {
            Freshness::Exact => true,
            Freshness::Within(max) if max.is_zero() => false,
            Freshness::Within(max) => {
                // An end after `now` (ends are rounded up to the second) has
                // no age yet.
                let age_us = now.timestamp_micros().saturating_sub(to_us).max(0);
                Duration::from_micros(age_us.unsigned_abs()) <= max
            }
        }
    }
}

/// What a fingerprint claim came to.
pub(super) enum Shared {
    /// The submission holds the fingerprint: admit its job, or abandon the
    /// claim.
    Won,
    /// A live job fresh enough answers it.
    Join(Box<JobRecord>),
}

impl Jobs {
    /// Claims `fingerprint` for `job`, waiting out a concurrent admission of
    /// the same query, and taking the fingerprint over from a live job that
    /// is not fresh enough.
    pub(super) async fn claim(
        &self,
        fingerprint: Fingerprint,
        job: JobId,
        freshness: Freshness,
        now: DateTime<Utc>,
    ) -> Result<Shared, JobError> {
        let dedup = &self.backends.dedup;
        let started = tokio::time::Instant::now();
        loop {
            match dedup.claim_fingerprint(fingerprint, job).await? {
                Claim::Won => return Ok(Shared::Won),
                Claim::Existing(live) if freshness.admits(live.spec.to_us, now) => {
                    return Ok(Shared::Join(live));
                }
                Claim::Existing(stale) => {
                    if dedup
                        .take_over_fingerprint(fingerprint, stale.id(), job)
                        .await?
                    {
                        info!(job_id = %job, stale_job_id = %stale.id(), %fingerprint,
                            "live job too stale to share; starting a fresh one");
                        return Ok(Shared::Won);
                    }
                    // Another submission took it over first: its fresh job
                    // is what the next claim finds.
                }
                Claim::Pending => {}
            }
            if started.elapsed() >= CLAIM_PATIENCE {
                return Err(JobError::Overloaded {
                    retry_after: self.settings.full_retry_after,
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Shares a live job with a submission of the same query: no work, no
    /// rate limit, but an audit row of its own and a place in the joiner's
    /// list of jobs, whose time range is the
    /// shared job's resolved range (the rows the submitter gets).
    pub(super) async fn join(
        &self,
        who: &Principal,
        filter_text: &str,
        job: JobRecord,
    ) -> Result<Submitted, JobError> {
        let mut entry = audit_entry(&job, filter_text, Some(job.id()));
        entry.user_id = who.user.clone();
        entry.submitted_at = rfc3339(self.now());
        self.backends.audit.record_submission(&entry).await?;
        if job.spec.user != who.user {
            // Only the joiner's list of jobs depends on this, not the
            // submission (audited above): a failure is logged, not refused.
            if let Err(e) = self
                .backends
                .job_store
                .record_joiner(job.id(), &who.tenant, &who.user)
                .await
            {
                warn!(job_id = %job.id(), user = %who.user, error = %e,
                    "could not list a joined job among the user's jobs");
            }
        }
        info!(job_id = %job.id(), offset = %job.spec.offset, fingerprint = %job.spec.fingerprint,
            user = %who.user, "submission deduplicated");
        Ok(Submitted {
            job,
            deduplicated: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn a_job_is_fresh_while_its_end_is_at_most_max_staleness_old() {
        let end = at("2026-12-06T12:01:00Z").timestamp_micros();
        let minute = Freshness::Within(Duration::from_secs(60));
        assert!(minute.admits(end, at("2026-12-06T12:00:59Z")), "ends ahead");
        assert!(minute.admits(end, at("2026-12-06T12:01:01Z")));
        assert!(minute.admits(end, at("2026-12-06T12:02:00Z")), "at most");
        assert!(!minute.admits(end, at("2026-12-06T12:02:00.000001Z")));
        let never = Freshness::Within(Duration::ZERO);
        assert!(!never.admits(end, at("2026-12-06T12:00:00Z")));
        assert!(Freshness::Exact.admits(end, at("2030-01-01T00:00:00Z")));
        assert!(!minute.admits(i64::MIN, at("2026-12-06T12:00:00Z")));
    }
}
