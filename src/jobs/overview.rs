//! What the service reports about itself and its past, for the metrics,
//! readiness and the ops audit view: the offset pool's use, the result
//! bytes this process holds, and the audit trail.

use std::time::Duration;

use super::{JobError, Jobs};
use crate::audit::{AuditEntry, AuditQuery};
use crate::coord::PoolUsage;
use crate::results::HeldBytes;

impl Jobs {
    /// How many offsets of the pool are leased (the shared pool, in
    /// distributed mode).
    pub async fn pool_usage(&self) -> Result<PoolUsage, JobError> {
        Ok(self.backends.offsets.pool_usage().await?)
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

    /// Audit rows matching `query` (its tenant only), newest first.
    pub async fn search_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, JobError> {
        Ok(self.backends.audit.search(query).await?)
    }
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
