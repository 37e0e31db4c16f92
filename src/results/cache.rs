//! A read-through cache in front of a remote result topic. Published chunks
//! never change, so an API instance can keep the ones it has served and
//! answer thousands of pollers of the same offset from memory instead of
//! fetching the same Kafka messages again. Bounded by bytes (the chunks' JSON
//! length); past the budget the cache's policy picks what goes (chunks read
//! again are kept over chunks read once, so a burst of one-off reads does
//! not push out what pollers share); an expired job's chunks are dropped
//! with it. A chunk no longer here is read from the topic again.
//!
//! In a process that both publishes and serves (`serve` with workers), the
//! cache is also filled by the publisher once Kafka has acknowledged a
//! chunk: this process's readers then never fetch back what it just wrote,
//! while every other reader (another API process, a plain Kafka consumer)
//! reads the topic as before. A worker that finds it was taken over (frozen
//! past its lease) drops the job's chunks from here (`forget_cached`): a
//! copy it published late may since have been replaced by the newer
//! attempt's. Readers only ask for counted chunks, and the newer attempt
//! counts a seq only after it published it, so such a copy could be served
//! only in the one round trip between the late publish and the refused
//! progress update that tells the worker.

use std::sync::Arc;

use async_trait::async_trait;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::{ChunkJson, HeldBytes, ResultError, ResultTopic};
use crate::model::{Chunk, JobId, Offset};

/// About a 10-row chunk's JSON. It only sizes how many recently evicted
/// places the cache remembers (a place asked for again is kept longer).
const TYPICAL_CHUNK_BYTES: usize = 2 << 10;

/// A chunk's place: its job and `chunk_seq`.
type ChunkKey = (JobId, u64);

pub struct CachedResultTopic {
    inner: Arc<dyn ResultTopic>,
    cache: Cache<ChunkKey, ChunkJson, ChunkBytes>,
    /// Whether published chunks go into the cache (see the module docs).
    fill_on_publish: bool,
}

/// Weighs a chunk by its JSON length, so the budget is in bytes. At least 1:
/// the cache never evicts an entry of weight 0.
#[derive(Clone)]
struct ChunkBytes;

impl Weighter<ChunkKey, ChunkJson> for ChunkBytes {
    fn weight(&self, _: &ChunkKey, chunk: &ChunkJson) -> u64 {
        chunk.len().max(1) as u64
    }
}

impl CachedResultTopic {
    pub fn new(
        inner: Arc<dyn ResultTopic>,
        budget_bytes: usize,
        fill_on_publish: bool,
    ) -> CachedResultTopic {
        let cache = crate::one_shard_cache(
            budget_bytes as u64,
            budget_bytes / TYPICAL_CHUNK_BYTES,
            ChunkBytes,
        );
        CachedResultTopic {
            inner,
            cache,
            fill_on_publish,
        }
    }

    /// Keeps acknowledged chunks, as the topic stored them, for this
    /// process's readers. A held place is replaced: a newer attempt at the
    /// job may have published it again, over an older attempt's copy.
    fn keep_published(&self, chunks: &[Chunk], stored: &[ChunkJson]) {
        if !self.fill_on_publish {
            return;
        }
        for (chunk, json) in chunks.iter().zip(stored) {
            self.cache
                .insert((chunk.job_id, chunk.chunk_seq), json.clone());
        }
    }

    /// Keeps `chunk` unless its place is held already: a published chunk
    /// never changes, and re-inserting would only reset what the cache has
    /// learnt about it.
    fn keep(&self, key: ChunkKey, chunk: &ChunkJson) {
        if !self.cache.contains_key(&key) {
            self.cache.insert(key, chunk.clone());
        }
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
        while out.len() < limit {
            match self.cache.get(&(job, from + out.len() as u64)) {
                Some(chunk) => out.push(chunk),
                None => break,
            }
        }
        if out.len() < limit {
            let next = from + out.len() as u64;
            let fetched = self
                .inner
                .read(job, offset, next, limit - out.len())
                .await?;
            for (n, chunk) in fetched.iter().enumerate() {
                self.keep((job, next + n as u64), chunk);
            }
            out.extend(fetched);
        }
        Ok(out)
    }

    async fn delete(&self, job: JobId, offset: Offset, chunks: u64) -> Result<(), ResultError> {
        self.forget_cached(job);
        self.inner.delete(job, offset, chunks).await
    }

    fn forget_cached(&self, job: JobId) {
        self.cache.retain(|(j, _), _| *j != job);
        self.inner.forget_cached(job);
    }

    fn is_full(&self) -> bool {
        self.inner.is_full()
    }

    async fn ready(&self) -> Result<(), ResultError> {
        self.inner.ready().await
    }

    fn held_bytes(&self) -> HeldBytes {
        HeldBytes {
            memory: self.cache.weight(),
            ..self.inner.held_bytes()
        }
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}
