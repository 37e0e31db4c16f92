//! The embedded [`Dedup`]: fingerprint claims in the shared state.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Holder, Shared};
use crate::coord::{Claim, CoordError, Dedup};
use crate::filter::Fingerprint;
use crate::model::{JobId, JobStatus};

pub struct MemoryDedup(pub(super) Arc<Shared>);

#[async_trait]
impl Dedup for MemoryDedup {
    async fn claim_fingerprint(
        &self,
        fingerprint: Fingerprint,
        job: JobId,
    ) -> Result<Claim, CoordError> {
        let mut state = self.0.lock();
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

    async fn take_over_fingerprint(
        &self,
        fingerprint: Fingerprint,
        stale: JobId,
        job: JobId,
    ) -> Result<bool, CoordError> {
        let mut state = self.0.lock();
        match state.fingerprints.get(&fingerprint).copied() {
            Some(Holder::Live(holder)) if holder == stale => {
                state
                    .fingerprints
                    .insert(fingerprint, Holder::Admitting(job));
                Ok(true)
            }
            Some(Holder::Admitting(holder)) => Ok(holder == job),
            _ => Ok(false),
        }
    }

    async fn abandon_fingerprint(
        &self,
        fingerprint: Fingerprint,
        job: JobId,
    ) -> Result<(), CoordError> {
        let mut state = self.0.lock();
        if state.fingerprints.get(&fingerprint) == Some(&Holder::Admitting(job)) {
            state.fingerprints.remove(&fingerprint);
        }
        Ok(())
    }
}
