//! The embedded [`IdempotencyKeys`]: keys in the shared state, next to the
//! jobs whose status a claim reads.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{KeyEntry, Shared};
use crate::coord::{
    CoordError, IDEMPOTENCY_RESERVATION_TTL, IdempotencyKey, IdempotencyKeys, KeyClaim, RequestHash,
};
use crate::model::{JobId, JobStatus};

pub struct MemoryIdempotencyKeys(pub(super) Arc<Shared>);

#[async_trait]
impl IdempotencyKeys for MemoryIdempotencyKeys {
    async fn claim_idempotency_key(
        &self,
        key: IdempotencyKey,
        request: RequestHash,
    ) -> Result<KeyClaim, CoordError> {
        let mut state = self.0.lock();
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
        let mut state = self.0.lock();
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
        let mut state = self.0.lock();
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
