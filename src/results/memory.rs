//! The embedded result log: per job, an append-only vector of encoded
//! chunks, kept for the job's TTL and within a memory budget.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use super::{ChunkJson, ResultError, ResultTopic};
use crate::jobs::model::{Chunk, JobId, Offset};

pub struct MemoryResultLog {
    jobs: Mutex<HashMap<JobId, Vec<ChunkJson>>>,
    bytes: AtomicU64,
    budget_bytes: u64,
}

impl MemoryResultLog {
    pub fn new(budget_bytes: u64) -> MemoryResultLog {
        MemoryResultLog {
            jobs: Mutex::new(HashMap::new()),
            bytes: AtomicU64::new(0),
            budget_bytes,
        }
    }

    /// Bytes of chunk JSON held now.
    pub fn bytes_held(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Vec<ChunkJson>>> {
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl ResultTopic for MemoryResultLog {
    async fn publish(&self, chunk: &Chunk) -> Result<(), ResultError> {
        let json: ChunkJson = chunk.to_json().into();
        let mut jobs = self.lock();
        let log = jobs.entry(chunk.job_id).or_default();
        let expected = log.len() as u64;
        if chunk.chunk_seq < expected {
            return Ok(());
        }
        if chunk.chunk_seq > expected {
            return Err(ResultError::OutOfSequence {
                job: chunk.job_id,
                seq: chunk.chunk_seq,
                expected,
            });
        }
        self.bytes.fetch_add(json.len() as u64, Ordering::Relaxed);
        log.push(json);
        Ok(())
    }

    async fn read(
        &self,
        job: JobId,
        _offset: Offset,
        from: u64,
        limit: usize,
    ) -> Result<Vec<ChunkJson>, ResultError> {
        let jobs = self.lock();
        let Some(log) = jobs.get(&job) else {
            return Ok(Vec::new());
        };
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        Ok(log.iter().skip(from).take(limit).cloned().collect())
    }

    async fn delete(&self, job: JobId, _offset: Offset, _chunks: u64) -> Result<(), ResultError> {
        if let Some(log) = self.lock().remove(&job) {
            let freed: u64 = log.iter().map(|c| c.len() as u64).sum();
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
        }
        Ok(())
    }

    fn is_full(&self) -> bool {
        self.bytes_held() >= self.budget_bytes
    }
}
