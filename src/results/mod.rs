//! The result topic: where workers publish chunks and readers find them.
//! `memory` is the embedded append-only log used by default; `kafka` keeps
//! chunks in a compacted Kafka topic with a Redis index, for several processes.

pub mod cache;
pub mod kafka;
pub mod memory;
pub mod spill;

use std::sync::Arc;

use async_trait::async_trait;

use crate::model::{Chunk, JobId, Offset};

#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("result topic unavailable: {0}")]
    Unavailable(String),
    #[error("result topic timed out")]
    Timeout,
    #[error("chunk {seq} of job {job} is out of sequence (expected {expected})")]
    OutOfSequence { job: JobId, seq: u64, expected: u64 },
    /// A newer attempt at the job already wrote this seq: the publishing
    /// worker was taken over (it went silent past its lease) and must stop.
    #[error(
        "chunk {seq} of job {job} was already written by attempt {newer}, after this attempt ({attempt})"
    )]
    Superseded {
        job: JobId,
        seq: u64,
        attempt: u32,
        newer: u32,
    },
    /// The store lost chunks already published (a Kafka broker that kept
    /// them in memory, restarted): the job cannot be completed whole.
    #[error(
        "the result topic lost the job's first {chunks} chunks (the Kafka broker lost its data); submit the query again"
    )]
    Lost { job: JobId, chunks: u64 },
}

impl ResultError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, ResultError::Unavailable(_) | ResultError::Timeout)
    }
}

/// Bytes of chunks a result topic holds in this process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldBytes {
    pub memory: u64,
    pub disk: u64,
}

/// A chunk as stored and served: its JSON text, encoded once at publish so
/// thousands of pollers never re-encode it. The encoding's own buffer is
/// what is kept: an `Arc<str>` would copy every chunk once more, which cost
/// a 200,000-row job about 5 % of its CPU (docs/PERFORMANCE.md).
pub type ChunkJson = Arc<String>;

#[async_trait]
pub trait ResultTopic: Send + Sync + 'static {
    /// Appends a chunk and returns once it is acknowledged (readable by every
    /// reader). Chunks of a job arrive in `chunk_seq` order without gaps;
    /// re-publishing an already stored seq (a resumed job) is a no-op when
    /// the same attempt stored it, replaces it when an older attempt did
    /// (readers then get the new copy), and is refused with
    /// [`ResultError::Superseded`] when a newer attempt did.
    async fn publish(&self, chunk: &Chunk) -> Result<(), ResultError> {
        self.publish_batch(std::slice::from_ref(chunk)).await?;
        Ok(())
    }
    /// Publishes consecutive chunks of one job, in order, and returns once
    /// all are acknowledged, with each chunk's JSON as stored (what `read`
    /// will answer), so a cache in front need not encode it again. An
    /// implementation may have them in flight together, but a reader never
    /// sees one before those it follows.
    async fn publish_batch(&self, chunks: &[Chunk]) -> Result<Vec<ChunkJson>, ResultError>;
    /// Chunks of a job with `chunk_seq` in `from..from + limit`, in order.
    async fn read(
        &self,
        job: JobId,
        offset: Offset,
        from: u64,
        limit: usize,
    ) -> Result<Vec<ChunkJson>, ResultError>;
    /// Removes every chunk of an expired job.
    async fn delete(&self, job: JobId, offset: Offset, chunks: u64) -> Result<(), ResultError>;
    /// Drops what this process keeps of `job`'s chunks in front of the
    /// topic (a cache filled on publish). A worker that finds it was taken
    /// over calls it: copies it published after its lease ran out may have
    /// been replaced in the topic by the newer attempt's.
    fn forget_cached(&self, _job: JobId) {}
    /// True when the topic is holding as much as it may; admission answers
    /// 503 until expiry frees space.
    fn is_full(&self) -> bool {
        false
    }
    /// Bytes of chunks this process holds, for `/metrics`.
    fn held_bytes(&self) -> HeldBytes {
        HeldBytes::default()
    }
    /// Answers when the topic's store does (readiness); the embedded log
    /// always does.
    async fn ready(&self) -> Result<(), ResultError> {
        Ok(())
    }
    /// Flushes what is in flight at shutdown.
    async fn close(&self) {}
}
