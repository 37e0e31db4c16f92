//! The embedded [`OffsetPool`]: leases in the shared state.

use std::sync::Arc;

use async_trait::async_trait;

use super::Shared;
use crate::coord::{CoordError, OffsetPool, PoolUsage};
use crate::model::{JobId, JobRecord, Offset};

pub struct MemoryOffsetPool(pub(super) Arc<Shared>);

#[async_trait]
impl OffsetPool for MemoryOffsetPool {
    async fn lease_offset(&self, job: JobId) -> Result<Option<Offset>, CoordError> {
        let mut state = self.0.lock();
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
        let mut state = self.0.lock();
        if let Some(slot) = state.leases.get_mut(offset.0 as usize)
            && *slot == Some(job)
        {
            *slot = None;
        }
        Ok(())
    }

    async fn release_held_by(&self, job: JobId) -> Result<(), CoordError> {
        let mut state = self.0.lock();
        for slot in state.leases.iter_mut().filter(|slot| **slot == Some(job)) {
            *slot = None;
        }
        Ok(())
    }

    async fn job_at_offset(&self, offset: Offset) -> Result<Option<JobRecord>, CoordError> {
        let state = self.0.lock();
        let holder = state.leases.get(offset.0 as usize).copied().flatten();
        Ok(holder
            .and_then(|id| state.jobs.get(&id))
            .map(|e| e.record.clone()))
    }

    async fn pool_usage(&self) -> Result<PoolUsage, CoordError> {
        let state = self.0.lock();
        let leased = state.leases.iter().filter(|l| l.is_some()).count() as u32;
        Ok(PoolUsage {
            leased,
            size: state.leases.len() as u32,
        })
    }

    async fn leases(&self) -> Result<Vec<(Offset, Option<JobRecord>)>, CoordError> {
        let state = self.0.lock();
        Ok(state
            .leases
            .iter()
            .enumerate()
            .filter_map(|(n, holder)| {
                let record = state.jobs.get(&(*holder)?).map(|e| e.record.clone());
                Some((Offset(n as u32), record))
            })
            .collect())
    }
}
