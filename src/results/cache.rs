//! A read-through cache in front of a remote result topic. Published chunks
//! never change, so an API instance can keep the ones it has served and
//! answer thousands of pollers of the same offset from memory instead of
//! fetching the same Kafka messages again. Bounded by bytes; oldest entries
//! go first; an expired job's chunks are dropped with it.
//!
//! In a process that both publishes and serves (`serve` with workers), the
//! cache is also filled by the publisher once Kafka has acknowledged a
//! chunk: this process's readers then never fetch back what it just wrote,
//! while every other reader (another API process, a plain Kafka consumer)
//! reads the topic as before.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{ChunkJson, HeldBytes, ResultError, ResultTopic};
use crate::model::{Chunk, JobId, Offset};

pub struct CachedResultTopic {
    inner: Arc<dyn ResultTopic>,
    cache: Mutex<Cache>,
    /// Whether published chunks go into the cache (see the module docs).
    fill_on_publish: bool,
}

struct Cache {
    chunks: HashMap<(JobId, u64), ChunkJson>,
    /// Insertion order, for eviction.
    order: VecDeque<(JobId, u64)>,
    bytes: usize,
    budget_bytes: usize,
}

impl Cache {
    fn insert(&mut self, key: (JobId, u64), chunk: ChunkJson) {
        if self.chunks.contains_key(&key) || chunk.len() > self.budget_bytes {
            return;
        }
        self.bytes += chunk.len();
        self.chunks.insert(key, chunk);
        self.order.push_back(key);
        while self.bytes > self.budget_bytes {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.chunks.remove(&old) {
                self.bytes -= gone.len();
            }
        }
    }
}

impl CachedResultTopic {
    pub fn new(
        inner: Arc<dyn ResultTopic>,
        budget_bytes: usize,
        fill_on_publish: bool,
    ) -> CachedResultTopic {
        let cache = Cache {
            chunks: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            budget_bytes,
        };
        CachedResultTopic {
            inner,
            cache: Mutex::new(cache),
            fill_on_publish,
        }
    }

    /// Keeps acknowledged chunks, as the topic stored them, for this
    /// process's readers.
    fn keep_published(&self, chunks: &[Chunk], stored: &[ChunkJson]) {
        if !self.fill_on_publish {
            return;
        }
        let mut cache = self.lock();
        for (chunk, json) in chunks.iter().zip(stored) {
            cache.insert((chunk.job_id, chunk.chunk_seq), json.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        crate::lock(&self.cache)
    }
}

#[async_trait]
impl ResultTopic for CachedResultTopic {
    async fn publish_batch(&self, chunks: &[Chunk]) -> Result<Vec<ChunkJson>, ResultError> {
        let stored = self.inner.publish_batch(chunks).await?;
        self.keep_published(chunks, &stored);
        Ok(stored)
    }

    async fn read(
        &self,
        job: JobId,
        offset: Offset,
        from: u64,
        limit: usize,
    ) -> Result<Vec<ChunkJson>, ResultError> {
        let mut out = Vec::with_capacity(limit.min(64));
        {
            let cache = self.lock();
            while out.len() < limit {
                match cache.chunks.get(&(job, from + out.len() as u64)) {
                    Some(chunk) => out.push(chunk.clone()),
                    None => break,
                }
            }
        }
        if out.len() < limit {
            let next = from + out.len() as u64;
            let fetched = self
                .inner
                .read(job, offset, next, limit - out.len())
                .await?;
            let mut cache = self.lock();
            for (n, chunk) in fetched.iter().enumerate() {
                cache.insert((job, next + n as u64), chunk.clone());
            }
            out.extend(fetched);
        }
        Ok(out)
    }

    async fn delete(&self, job: JobId, offset: Offset, chunks: u64) -> Result<(), ResultError> {
        {
            let mut cache = self.lock();
            let Cache {
                chunks: map,
                order,
                bytes,
                ..
            } = &mut *cache;
            map.retain(|(j, _), chunk| {
                let keep = *j != job;
                if !keep {
                    *bytes -= chunk.len();
                }
                keep
            });
            order.retain(|(j, _)| *j != job);
        }
        self.inner.delete(job, offset, chunks).await
    }

    fn is_full(&self) -> bool {
        self.inner.is_full()
    }

    fn held_bytes(&self) -> HeldBytes {
        HeldBytes {
            memory: self.lock().bytes as u64,
            ..self.inner.held_bytes()
        }
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}
