//! The audit log's follow-up updates, kept until they land.
//!
//! A submission's row is written before the 202, and a failure refuses the
//! job (fail closed). Progress and expiry updates come after the job is
//! accepted and its rows may already be with readers, so a database outage
//! must neither fail the job nor lose the update: [`AuditOutbox`] tries each
//! one under a deadline and, when it fails, keeps it and retries until it
//! lands. Updates of a job that already has one waiting join the outbox
//! instead of going straight to the store, so an older state never lands
//! after a newer one. Pending updates are coalesced per job (the newest
//! progress, and the expiry), so the outbox holds at most one entry per job.
//!
//! The outbox is in memory: what is still pending when the process stops
//! after its last flush is logged, one line per job, not written.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{AuditEntry, AuditError, AuditLog, AuditQuery, RejectionCount};
use crate::metrics::Metrics;
use crate::model::{JobId, JobRecord};

/// An audit log whose progress and expiry updates are never dropped.
pub struct AuditOutbox {
    inner: Arc<dyn AuditLog>,
    /// How long one update may take before it counts as failed.
    deadline: Duration,
    pending: Mutex<HashMap<JobId, Pending>>,
    /// Woken when an update joins the outbox.
    queued: Notify,
}

/// What still has to land for one job.
#[derive(Clone)]
struct Pending {
    progress: Option<JobRecord>,
    expired: Option<DateTime<Utc>>,
    /// Bumped by every change, so a flush only clears what it wrote.
    generation: u64,
}

impl AuditOutbox {
    pub fn new(inner: Arc<dyn AuditLog>, deadline: Duration) -> AuditOutbox {
        AuditOutbox {
            inner,
            deadline,
            pending: Mutex::new(HashMap::new()),
            queued: Notify::new(),
        }
    }

    /// Jobs with an update waiting.
    pub fn pending(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<JobId, Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Retries what is waiting, backing off while the store stays down,
    /// until `shutdown`; `metrics` shows how many jobs wait.
    pub async fn run(self: Arc<Self>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
        loop {
            metrics.set_audit_outbox_pending(self.pending());
            if self.pending() == 0 {
                tokio::select! {
                    () = self.queued.notified() => {}
                    () = shutdown.cancelled() => return,
                }
                metrics.set_audit_outbox_pending(self.pending());
            }
            let backoff = ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .without_max_times()
                .with_jitter();
            let flushed = (|| self.flush()).retry(backoff).notify(|e, wait| {
                metrics.set_audit_outbox_pending(self.pending());
                warn!(error = %e, retry_in_ms = wait.as_millis() as u64, waiting = self.pending(), "audit updates still waiting");
            });
            tokio::select! {
                _ = flushed => info!("audit updates that had waited have landed"),
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Writes every waiting update once; stops at the first failure (the
    /// store is likely still down) and says so.
    async fn flush(&self) -> Result<(), AuditError> {
        let waiting: Vec<(JobId, Pending)> =
            self.lock().iter().map(|(id, p)| (*id, p.clone())).collect();
        for (job, update) in waiting {
            if let Some(record) = &update.progress {
                self.attempt(self.inner.record_progress(record)).await?;
                self.landed(job, update.generation, |p| p.progress = None);
            }
            if let Some(at) = update.expired {
                self.attempt(self.inner.record_expired(job, at)).await?;
                self.landed(job, update.generation, |p| p.expired = None);
            }
        }
        Ok(())
    }

    /// Clears what landed, unless the job's entry changed meanwhile (then
    /// the newer state is still to be written, and it will be).
    fn landed(&self, job: JobId, generation: u64, clear: impl FnOnce(&mut Pending)) {
        let mut pending = self.lock();
        if let Some(entry) = pending.get_mut(&job)
            && entry.generation == generation
        {
            clear(entry);
            if entry.progress.is_none() && entry.expired.is_none() {
                pending.remove(&job);
            }
        }
    }

    async fn attempt(
        &self,
        call: impl Future<Output = Result<(), AuditError>>,
    ) -> Result<(), AuditError> {
        tokio::time::timeout(self.deadline, call)
            .await
            .unwrap_or_else(|_| {
                Err(AuditError::Unavailable(format!(
                    "no answer within {:?}",
                    self.deadline
                )))
            })
    }

    /// Adds to the job's entry if it has one; `None` when it has none.
    fn join_waiting(&self, job: JobId, change: impl FnOnce(&mut Pending)) -> Option<()> {
        let mut pending = self.lock();
        let entry = pending.get_mut(&job)?;
        change(entry);
        entry.generation += 1;
        Some(())
    }

    fn keep(&self, job: JobId, change: impl FnOnce(&mut Pending), why: &AuditError) {
        let mut pending = self.lock();
        let entry = pending.entry(job).or_insert(Pending {
            progress: None,
            expired: None,
            generation: 0,
        });
        change(entry);
        entry.generation += 1;
        drop(pending);
        warn!(job_id = %job, error = %why, "audit update failed; kept to retry until it lands");
        self.queued.notify_one();
    }
}

#[async_trait]
impl AuditLog for AuditOutbox {
    /// Straight through: the caller refuses the job when this fails, and
    /// the store's own connection timeout bounds it (a deadline here could
    /// return a failure for a row that then commits).
    async fn record_submission(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        self.inner.record_submission(entry).await
    }

    /// Always `Ok`: the update has landed or waits in the outbox.
    async fn record_progress(&self, job: &JobRecord) -> Result<(), AuditError> {
        let id = job.id();
        let newest = |p: &mut Pending| p.progress = Some(job.clone());
        if self.join_waiting(id, newest).is_some() {
            return Ok(());
        }
        if let Err(e) = self.attempt(self.inner.record_progress(job)).await {
            self.keep(id, newest, &e);
        }
        Ok(())
    }

    /// Always `Ok`: the update has landed or waits in the outbox.
    async fn record_expired(&self, job: JobId, at: DateTime<Utc>) -> Result<(), AuditError> {
        let expired = |p: &mut Pending| p.expired = Some(at);
        if self.join_waiting(job, expired).is_some() {
            return Ok(());
        }
        if let Err(e) = self.attempt(self.inner.record_expired(job, at)).await {
            self.keep(job, expired, &e);
        }
        Ok(())
    }

    async fn record_interrupted(&self, at: DateTime<Utc>) -> Result<u64, AuditError> {
        self.inner.record_interrupted(at).await
    }

    async fn search(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, AuditError> {
        self.inner.search(query).await
    }

    /// Straight through: the rejection tally keeps what failed for its next flush.
    async fn record_rejections(&self, counts: &[RejectionCount]) -> Result<(), AuditError> {
        self.inner.record_rejections(counts).await
    }

    async fn rejections(
        &self,
        tenant: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<RejectionCount>, AuditError> {
        self.inner.rejections(tenant, since).await
    }

    async fn prune(&self, before: DateTime<Utc>, batch: u32) -> Result<u64, AuditError> {
        self.inner.prune(before, batch).await
    }

    async fn ready(&self) -> Result<(), AuditError> {
        self.inner.ready().await
    }

    /// One last flush, then the store closes; what could not be written is
    /// logged so ops can replay it by hand.
    async fn close(&self) {
        if self.pending() > 0 && self.flush().await.is_err() {
            for (job, update) in self.lock().iter() {
                error!(
                    job_id = %job,
                    status = update.progress.as_ref().map(|r| r.status.as_str()),
                    rows = update.progress.as_ref().map(|r| r.rows),
                    expired_at = update.expired.map(|t| t.to_rfc3339()),
                    "audit update lost at shutdown: the store did not answer"
                );
            }
        }
        self.inner.close().await;
    }
}
