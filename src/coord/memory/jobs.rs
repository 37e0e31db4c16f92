//! The embedded [`JobStore`]: job records in the shared state, with a watch
//! channel per job for long-polls. Inserting a job and finishing its expiry
//! also touch the fingerprints and leases, under the same lock.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::{Entry, Holder, Shared};
use crate::coord::{CoordError, JobStore, JobsPage, ListedJob};
use crate::model::{JobId, JobRecord, JobStatus, JobUpdate};

pub struct MemoryJobStore(pub(super) Arc<Shared>);

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn insert_job(&self, record: JobRecord) -> Result<(), CoordError> {
        let mut state = self.0.lock();
        let id = record.id();
        state
            .fingerprints
            .insert(record.spec.fingerprint, Holder::Live(id));
        let (changed, _) = watch::channel(record.version);
        let joiners = Default::default();
        state.jobs.insert(
            id,
            Entry {
                record,
                changed,
                joiners,
            },
        );
        Ok(())
    }

    async fn job(&self, id: JobId) -> Result<Option<JobRecord>, CoordError> {
        Ok(self.0.lock().jobs.get(&id).map(|e| e.record.clone()))
    }

    async fn jobs_of(
        &self,
        tenant: &str,
        user: &str,
        status: Option<JobStatus>,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<JobsPage, CoordError> {
        let state = self.0.lock();
        let mut jobs: Vec<ListedJob> = state
            .jobs
            .values()
            .filter(|e| e.record.spec.tenant == tenant)
            .filter_map(|e| {
                let joined = e.record.spec.user != user;
                (!joined || e.joiners.contains(user)).then_some((e, joined))
            })
            .filter(|(e, _)| status.is_none_or(|s| e.record.status == s))
            .filter(|(e, _)| before.is_none_or(|b| e.record.id() < b))
            .map(|(e, joined)| ListedJob {
                record: e.record.clone(),
                joined,
            })
            .collect();
        // UUIDv7 ids sort by creation time.
        jobs.sort_by_key(|j| std::cmp::Reverse(j.record.id()));
        jobs.truncate(limit.saturating_add(1));
        Ok(JobsPage::cut(jobs, limit))
    }

    async fn record_joiner(&self, id: JobId, tenant: &str, user: &str) -> Result<(), CoordError> {
        if let Some(entry) = self.0.lock().jobs.get_mut(&id)
            && entry.record.spec.tenant == tenant
            && entry.record.spec.user != user
        {
            entry.joiners.insert(user.to_owned());
        }
        Ok(())
    }

    async fn update_job(
        &self,
        id: JobId,
        update: JobUpdate,
    ) -> Result<Option<JobRecord>, CoordError> {
        let mut state = self.0.lock();
        let Some(entry) = state.jobs.get_mut(&id) else {
            return Ok(None);
        };
        // An update of a superseded attempt changes nothing and wakes nobody.
        if entry.record.apply(&update) {
            entry.changed.send_replace(entry.record.version);
        }
        Ok(Some(entry.record.clone()))
    }

    async fn wait_for_change(
        &self,
        id: JobId,
        seen_version: u64,
        timeout: Duration,
    ) -> Result<Option<JobRecord>, CoordError> {
        let mut receiver = {
            let state = self.0.lock();
            let Some(entry) = state.jobs.get(&id) else {
                return Ok(None);
            };
            entry.changed.subscribe()
        };
        // Err means the job was dropped (expired) or the wait timed out;
        // either way the caller gets the current state.
        let _ = tokio::time::timeout(timeout, receiver.wait_for(|v| *v > seen_version)).await;
        self.job(id).await
    }

    async fn begin_expiry(&self, now: DateTime<Utc>) -> Result<Vec<JobRecord>, CoordError> {
        let mut state = self.0.lock();
        let state = &mut *state;
        let instant = tokio::time::Instant::now();
        let jobs = &state.jobs;
        // The sweep also drops idempotency keys that lapsed or lost their job.
        state.keys.retain(|_, entry| {
            entry.until > instant && entry.job.is_none_or(|(job, _)| jobs.contains_key(&job))
        });
        let mut expired = Vec::new();
        for entry in state.jobs.values_mut() {
            let due = entry.record.expires_at.is_some_and(|at| at <= now);
            if due && entry.record.status.is_finished() && entry.record.status != JobStatus::Expired
            {
                entry.record.status = JobStatus::Expired;
                entry.record.version += 1;
                entry.changed.send_replace(entry.record.version);
                expired.push(entry.record.clone());
            }
        }
        Ok(expired)
    }

    async fn finish_expiry(&self, record: &JobRecord) -> Result<(), CoordError> {
        let mut state = self.0.lock();
        let id = record.id();
        state.jobs.remove(&id);
        if state.fingerprints.get(&record.spec.fingerprint) == Some(&Holder::Live(id)) {
            state.fingerprints.remove(&record.spec.fingerprint);
        }
        if let Some(slot) = state.leases.get_mut(record.spec.offset.0 as usize)
            && *slot == Some(id)
        {
            *slot = None;
        }
        Ok(())
    }
}
