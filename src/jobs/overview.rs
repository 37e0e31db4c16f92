//! What the service reports about itself and its past, for the metrics,
//! readiness and the ops audit view: the offset pool's use, the result
//! bytes this process holds, and the audit trail.

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

    /// Audit rows matching `query` (its tenant only), newest first.
    pub async fn search_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, JobError> {
        Ok(self.backends.audit.search(query).await?)
    }
}
