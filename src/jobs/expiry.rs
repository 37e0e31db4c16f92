//! Expiry: once a finished job's TTL has passed, delete its chunks, forget
//! its fingerprint, return its offset to the pool and mark its audit rows.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Jobs;

impl Jobs {
    /// One sweep; returns how many jobs it expired.
    pub async fn expire_due(&self) -> usize {
        let b = &self.backends;
        let due = match b.job_store.begin_expiry(self.now()).await {
            Ok(due) => due,
            Err(e) => {
                warn!(error = %e, "expiry sweep could not read the expiry index");
                return 0;
            }
        };
        for job in &due {
            // Chunks go first: once the offset is free a new job may write to
            // the same keys. Deletes are idempotent, so retry a bounded number
            // of times: three attempts, 200 ms after the first failure and doubling.
            let backoff = ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_times(2);
            let mut attempt = 0;
            let deleted = (|| b.results.delete(job.id(), job.spec.offset, job.chunks))
                .retry(backoff)
                .notify(|e, _| {
                    attempt += 1;
                    warn!(job_id = %job.id(), error = %e, attempt, "could not delete an expired job's chunks");
                })
                .await;
            if let Err(e) = deleted {
                warn!(job_id = %job.id(), error = %e, attempt = attempt + 1, "could not delete an expired job's chunks");
            }
            // The audit row says expired before the offset can be leased again.
            if let Err(e) = b.audit.record_expired(job.id(), self.now()).await {
                warn!(job_id = %job.id(), error = %e, "could not mark an expired job in the audit log");
            }
            if let Err(e) = b.job_store.finish_expiry(job).await {
                warn!(job_id = %job.id(), error = %e, "could not release an expired job");
            }
            info!(job_id = %job.id(), offset = %job.spec.offset, "job expired; offset returned to the pool");
        }
        due.len()
    }

    /// Sweeps every `interval` until `shutdown`.
    pub async fn run_expiry(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => { self.expire_due().await; }
                _ = shutdown.cancelled() => return,
            }
        }
    }
}
