//! The embedded coordinator: all coordination state in one mutex-guarded
//! struct. Every decision happens under the lock, which is what makes it
//! atomic; the lock is never held across an await.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::{
    Claim, CoordError, Coordinator, IDEMPOTENCY_RESERVATION_TTL, IdempotencyKey, KeyClaim,
    PoolUsage, RequestHash,
};
use crate::filter::Fingerprint;
use crate::model::{JobId, JobRecord, JobStatus, JobUpdate, Offset};

pub struct MemoryCoordinator {
    state: Mutex<State>,
}

struct State {
    jobs: HashMap<JobId, Entry>,
    fingerprints: HashMap<Fingerprint, Holder>,
    /// `leases[n]` is the job holding offset n.
    leases: Vec<Option<JobId>>,
    /// Where the round-robin search for a free offset starts.
    cursor: usize,
    /// Idempotency keys; dropped by the expiry sweep once past `until` or
    /// once their job is gone.
    keys: HashMap<IdempotencyKey, KeyEntry>,
}

struct KeyEntry {
    request: RequestHash,
    job: Option<(JobId, bool)>,
    until: tokio::time::Instant,
}

struct Entry {
    record: JobRecord,
    /// Carries the record's version so long-polls wake on any change.
    changed: watch::Sender<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Holder {
    Admitting(JobId),
    Live(JobId),
}

impl MemoryCoordinator {
    pub fn new(pool_size: u32) -> MemoryCoordinator {
        MemoryCoordinator {
            state: Mutex::new(State {
                jobs: HashMap::new(),
                fingerprints: HashMap::new(),
                leases: vec![None; pool_size as usize],
                cursor: 0,
                keys: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way later calls would trip on, so a poisoned lock is still usable.
        crate::lock(&self.state)
    }
}

#[async_trait]
impl Coordinator for MemoryCoordinator {
    async fn claim_fingerprint(
        &self,
        fingerprint: Fingerprint,
        job: JobId,
    ) -> Result<Claim, CoordError> {
        let mut state = self.lock();
        match state.fingerprints.get(&fingerprint).copied() {
            None => {
                state
                    .fingerprints
                    .insert(fingerprint, Holder::Admitting(job));
                Ok(Claim::Won)
            }
            Some(Holder::Admitting(holder)) if holder == job => Ok(Claim::Won),
            Some(Holder::Admitting(_)) => Ok(Claim::Pending),
            Some(Holder::Live(holder)) => match state.jobs.get(&holder) {
                Some(entry) if entry.record.status != JobStatus::Expired => {
                    Ok(Claim::Existing(Box::new(entry.record.clone())))
                }
                // Expiring: its result is going away, so start afresh.
                _ => {
                    state
                        .fingerprints
                        .insert(fingerprint, Holder::Admitting(job));
                    Ok(Claim::Won)
                }
            },
        }
    }

    async fn abandon_fingerprint(
        &self,
        fingerprint: Fingerprint,
        job: JobId,
    ) -> Result<(), CoordError> {
        let mut state = self.lock();
        if state.fingerprints.get(&fingerprint) == Some(&Holder::Admitting(job)) {
            state.fingerprints.remove(&fingerprint);
        }
        Ok(())
    }

    async fn lease_offset(&self, job: JobId) -> Result<Option<Offset>, CoordError> {
        let mut state = self.lock();
        let size = state.leases.len();
        let start = state.cursor;
        for step in 0..size {
            let n = (start + step) % size;
            if state.leases[n].is_none() {
                state.leases[n] = Some(job);
                state.cursor = (n + 1) % size;
                return Ok(Some(Offset(n as u32)));
            }
        }
        Ok(None)
    }

    async fn release_offset(&self, offset: Offset, job: JobId) -> Result<(), CoordError> {
        let mut state = self.lock();
        if let Some(slot) = state.leases.get_mut(offset.0 as usize)
            && *slot == Some(job)
        {
            *slot = None;
        }
        Ok(())
    }

    async fn insert_job(&self, record: JobRecord) -> Result<(), CoordError> {
        let mut state = self.lock();
        let id = record.id();
        state
            .fingerprints
            .insert(record.spec.fingerprint, Holder::Live(id));
        let (changed, _) = watch::channel(record.version);
        state.jobs.insert(id, Entry { record, changed });
        Ok(())
    }

    async fn job(&self, id: JobId) -> Result<Option<JobRecord>, CoordError> {
        Ok(self.lock().jobs.get(&id).map(|e| e.record.clone()))
    }

    async fn job_at_offset(&self, offset: Offset) -> Result<Option<JobRecord>, CoordError> {
        let state = self.lock();
        let holder = state.leases.get(offset.0 as usize).copied().flatten();
        Ok(holder
            .and_then(|id| state.jobs.get(&id))
            .map(|e| e.record.clone()))
    }

    async fn jobs_of(
        &self,
        tenant: &str,
        user: &str,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, CoordError> {
        let state = self.lock();
        let mut jobs: Vec<JobRecord> = state
            .jobs
            .values()
            .map(|e| &e.record)
            .filter(|r| r.spec.tenant == tenant && r.spec.user == user)
            .filter(|r| status.is_none_or(|s| r.status == s))
            .cloned()
            .collect();
        // UUIDv7 ids sort by creation time.
        jobs.sort_by_key(|j| std::cmp::Reverse(j.id()));
        jobs.truncate(limit);
        Ok(jobs)
    }

    async fn update_job(
        &self,
        id: JobId,
        update: JobUpdate,
    ) -> Result<Option<JobRecord>, CoordError> {
        let mut state = self.lock();
        let Some(entry) = state.jobs.get_mut(&id) else {
            return Ok(None);
        };
        entry.record.apply(&update);
        entry.changed.send_replace(entry.record.version);
        Ok(Some(entry.record.clone()))
    }

    async fn wait_for_change(
        &self,
        id: JobId,
        seen_version: u64,
        timeout: Duration,
    ) -> Result<Option<JobRecord>, CoordError> {
        let mut receiver = {
            let state = self.lock();
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
        let mut state = self.lock();
        let state = &mut *state;
        let instant = tokio::time::Instant::now();
        let jobs = &state.jobs;
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
        let mut state = self.lock();
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

    async fn pool_usage(&self) -> Result<PoolUsage, CoordError> {
        let state = self.lock();
        let leased = state.leases.iter().filter(|l| l.is_some()).count() as u32;
        Ok(PoolUsage {
            leased,
            size: state.leases.len() as u32,
        })
    }

    async fn claim_idempotency_key(
        &self,
        key: IdempotencyKey,
        request: RequestHash,
    ) -> Result<KeyClaim, CoordError> {
        let mut state = self.lock();
        let now = tokio::time::Instant::now();
        if let Some(entry) = state.keys.get(&key).filter(|e| e.until > now) {
            let live = entry.job.is_none_or(|(job, _)| {
                state
                    .jobs
                    .get(&job)
                    .is_some_and(|e| e.record.status != JobStatus::Expired)
            });
            if live {
                return Ok(match entry.job {
                    _ if entry.request != request => KeyClaim::Mismatch,
                    None => KeyClaim::Pending,
                    Some((job, deduplicated)) => KeyClaim::Replay { job, deduplicated },
                });
            }
        }
        state.keys.insert(
            key,
            KeyEntry {
                request,
                job: None,
                until: now + IDEMPOTENCY_RESERVATION_TTL,
            },
        );
        Ok(KeyClaim::Won)
    }

    async fn complete_idempotency_key(
        &self,
        key: IdempotencyKey,
        request: RequestHash,
        job: JobId,
        deduplicated: bool,
        ttl: Duration,
    ) -> Result<(), CoordError> {
        let mut state = self.lock();
        let ours = state
            .keys
            .get(&key)
            .is_none_or(|e| e.request == request && e.job.is_none());
        if ours {
            state.keys.insert(
                key,
                KeyEntry {
                    request,
                    job: Some((job, deduplicated)),
                    until: tokio::time::Instant::now() + ttl,
                },
            );
        }
        Ok(())
    }

    async fn abandon_idempotency_key(
        &self,
        key: IdempotencyKey,
        request: RequestHash,
    ) -> Result<(), CoordError> {
        let mut state = self.lock();
        if state
            .keys
            .get(&key)
            .is_some_and(|e| e.request == request && e.job.is_none())
        {
            state.keys.remove(&key);
        }
        Ok(())
    }
}
