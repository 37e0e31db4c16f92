//! The embedded [`ChunkIndex`]: a map per job. The embedded result log needs
//! no index (it keys chunks itself); this one keeps the contract honest.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::coord::{ChunkIndex, ChunkPlace, CoordError, IndexedChunks, Recorded};
use crate::model::JobId;

#[derive(Default)]
pub struct MemoryChunkIndex {
    by_job: Mutex<HashMap<JobId, BTreeMap<u64, ChunkPlace>>>,
}

impl MemoryChunkIndex {
    pub fn new() -> MemoryChunkIndex {
        MemoryChunkIndex::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, BTreeMap<u64, ChunkPlace>>> {
        // Every change is one map operation, so a poisoned lock guards consistent data.
        crate::lock(&self.by_job)
    }
}

#[async_trait]
impl ChunkIndex for MemoryChunkIndex {
    async fn count(&self, job: JobId) -> Result<u64, CoordError> {
        Ok(self.lock().get(&job).map_or(0, |c| c.len() as u64))
    }

    async fn probe(&self, job: JobId, seq: u64) -> Result<IndexedChunks, CoordError> {
        let by_job = self.lock();
        let chunks = by_job.get(&job);
        Ok(IndexedChunks {
            written_by: chunks.and_then(|c| c.get(&seq)).map(|p| p.attempt),
            count: chunks.map_or(0, |c| c.len() as u64),
        })
    }

    async fn record(
        &self,
        job: JobId,
        landed: &[(u64, ChunkPlace)],
    ) -> Result<Recorded, CoordError> {
        let mut by_job = self.lock();
        let chunks = by_job.entry(job).or_default();
        let mut recorded = Recorded::default();
        for (seq, place) in landed {
            let indexed = chunks.entry(*seq).or_insert(*place);
            let (newer, older) = if indexed.attempt < place.attempt {
                (*place, std::mem::replace(indexed, *place))
            } else if indexed.attempt > place.attempt {
                recorded.superseded = true;
                (*indexed, *place)
            } else {
                continue;
            };
            if older.partition == newer.partition && older.position > newer.position {
                recorded.rewrite.push((*seq, newer.attempt));
            }
        }
        Ok(recorded)
    }

    async fn places(
        &self,
        job: JobId,
        seqs: Range<u64>,
    ) -> Result<Vec<Option<ChunkPlace>>, CoordError> {
        let by_job = self.lock();
        let chunks = by_job.get(&job);
        Ok(seqs
            .map(|seq| chunks.and_then(|c| c.get(&seq)).copied())
            .collect())
    }

    async fn forget(&self, job: JobId) -> Result<(), CoordError> {
        self.lock().remove(&job);
        Ok(())
    }
}
