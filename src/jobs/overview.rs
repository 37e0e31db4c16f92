//! What the service reports about itself and its past, for the metrics,
//! readiness and the ops page: the offset pool's use and the jobs holding
//! it, the last hour of this process, the result bytes it holds, and the
//! audit trail.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{JobError, Jobs};
use crate::audit::{AuditCursor, AuditEntry, AuditQuery};
use crate::coord::PoolUsage;
use crate::metrics::LastHourView;
use crate::model::{JobRecord, Offset};
use crate::results::HeldBytes;

/// The pool and the last hour as one tenant's ops see them.
#[derive(Debug)]
pub struct OpsOverview {
    pub at: DateTime<Utc>,
    pub pool_size: u32,
    /// The tenant's jobs holding an offset (queued, running, or finished
    /// and keeping their result until it expires), in offset order.
    pub jobs: Vec<JobRecord>,
    /// Offsets leased to a job that is being admitted or whose expiry is
    /// finishing: no record to show.
    pub admitting: Vec<Offset>,
    /// Offsets held by another tenant's jobs: shown as taken (the pool is
    /// shared, and its use is no secret: `/metrics` has it) and nothing more.
    pub other_tenants: Vec<Offset>,
    /// First chunks and rejections of this process, by minute.
    pub last_hour: LastHourView,
}

impl Jobs {
    /// How many offsets of the pool are leased (the shared pool, in
    /// distributed mode).
    pub async fn pool_usage(&self) -> Result<PoolUsage, JobError> {
        Ok(self.backends.offsets.pool_usage().await?)
    }

    /// Every leased offset, with what `tenant` may see of its job.
    pub async fn ops_overview(&self, tenant: &str) -> Result<OpsOverview, JobError> {
        let offsets = &self.backends.offsets;
        let (usage, leases) = tokio::try_join!(offsets.pool_usage(), offsets.leases())?;
        let at = Utc::now();
        let mut overview = OpsOverview {
            at,
            pool_size: usage.size,
            jobs: Vec::new(),
            admitting: Vec::new(),
            other_tenants: Vec::new(),
            last_hour: self.metrics.last_hour.view(at),
        };
        for (offset, record) in leases {
            match record {
                Some(job) if job.spec.tenant == tenant => overview.jobs.push(job),
                Some(_) => overview.other_tenants.push(offset),
                None => overview.admitting.push(offset),
            }
        }
        Ok(overview)
    }

    /// Result chunks this process holds, in memory and on disk.
    pub fn held_bytes(&self) -> HeldBytes {
        self.backends.results.held_bytes()
    }

    /// Whether every backend answers, each within `patience`: the
    /// coordination store (its offset pool), the audit log and the result
    /// topic, checked at once. The pool's use comes back for the answer.
    pub async fn readiness(&self, patience: Duration) -> Readiness {
        let timed =
            |what: &'static str| move |_| format!("{what} did not answer within {patience:?}");
        let (pool, audit, results) = tokio::join!(
            tokio::time::timeout(patience, self.backends.offsets.pool_usage()),
            tokio::time::timeout(patience, self.backends.audit.ready()),
            tokio::time::timeout(patience, self.backends.results.ready()),
        );
        let pool = pool
            .map_err(timed("coordination"))
            .and_then(|r| r.map_err(|e| e.to_string()));
        let audit = audit
            .map_err(timed("the audit log"))
            .and_then(|r| r.map_err(|e| e.to_string()));
        let results = results
            .map_err(timed("the result topic"))
            .and_then(|r| r.map_err(|e| e.to_string()));
        Readiness {
            pool,
            audit,
            results,
        }
    }

    /// A page of the audit rows matching `query` (its tenant only), newest
    /// first, with the cursor of the next page when there is one.
    pub async fn search_audit(&self, query: &AuditQuery) -> Result<AuditPage, JobError> {
        // One row more than asked says whether another page follows, so the
        // last page has no cursor (no empty page to fetch at the end).
        let mut probe = query.clone();
        probe.limit = query.limit.saturating_add(1);
        let mut entries = self.backends.audit.search(&probe).await?;
        let more = entries.len() > query.limit as usize;
        entries.truncate(query.limit as usize);
        let next = if more {
            entries.last().and_then(AuditCursor::after)
        } else {
            None
        };
        Ok(AuditPage { entries, next })
    }
}

/// One page of the audit trail.
#[derive(Debug)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<AuditCursor>,
}

/// Each backend's answer to a readiness check: `Err` says why it did not.
#[derive(Debug)]
pub struct Readiness {
    pub pool: Result<PoolUsage, String>,
    pub audit: Result<(), String>,
    pub results: Result<(), String>,
}

impl Readiness {
    /// The first backend that did not answer, with why.
    pub fn failure(&self) -> Option<(&'static str, &str)> {
        [
            ("coordination", self.pool.as_ref().err()),
            ("audit", self.audit.as_ref().err()),
            ("results", self.results.as_ref().err()),
        ]
        .into_iter()
        .find_map(|(name, e)| e.map(|e| (name, e.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_backend_that_did_not_answer_is_named() {
        let ready = Readiness {
            pool: Ok(PoolUsage { leased: 1, size: 2 }),
            audit: Err("refused".into()),
            results: Err("timed out".into()),
        };
        assert_eq!(ready.failure(), Some(("audit", "refused")));
        let ready = Readiness {
            audit: Ok(()),
            results: Ok(()),
            ..ready
        };
        assert_eq!(ready.failure(), None);
    }
}
