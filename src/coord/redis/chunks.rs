//! The Redis [`ChunkIndex`]: one hash per job, seq -> `{partition}:{position}`.

use std::ops::Range;

use ::redis::aio::ConnectionManager;
use async_trait::async_trait;

use super::conn::{call, open};
use super::keys::Keys;
use crate::coord::{ChunkIndex, ChunkPlace, CoordError, IndexedChunks};
use crate::model::JobId;

/// The index outlives any sensible result TTL; expiry deletes it long before.
/// It only protects Redis from jobs whose delete never ran.
const INDEX_TTL_SECS: i64 = 7 * 24 * 3600;

pub struct RedisChunkIndex {
    conn: ConnectionManager,
    keys: Keys,
}

impl RedisChunkIndex {
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisChunkIndex, CoordError> {
        let (_, conn) = open(url).await?;
        Ok(RedisChunkIndex {
            conn,
            keys: Keys::new(prefix),
        })
    }
}

#[async_trait]
impl ChunkIndex for RedisChunkIndex {
    async fn count(&self, job: JobId) -> Result<u64, CoordError> {
        let mut conn = self.conn.clone();
        call(
            ::redis::cmd("HLEN")
                .arg(self.keys.chunks(job))
                .query_async(&mut conn),
        )
        .await
    }

    async fn probe(&self, job: JobId, seq: u64) -> Result<IndexedChunks, CoordError> {
        let index = self.keys.chunks(job);
        let mut conn = self.conn.clone();
        let (contains, count): (bool, u64) = call(
            ::redis::pipe()
                .cmd("HEXISTS")
                .arg(&index)
                .arg(seq)
                .cmd("HLEN")
                .arg(&index)
                .query_async(&mut conn),
        )
        .await?;
        Ok(IndexedChunks { contains, count })
    }

    async fn record(&self, job: JobId, landed: &[(u64, ChunkPlace)]) -> Result<(), CoordError> {
        let index = self.keys.chunks(job);
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        for (seq, place) in landed {
            pipe.cmd("HSETNX")
                .arg(&index)
                .arg(*seq)
                .arg(format!("{}:{}", place.partition, place.position))
                .ignore();
        }
        pipe.cmd("EXPIRE").arg(&index).arg(INDEX_TTL_SECS).ignore();
        let mut conn = self.conn.clone();
        call(pipe.query_async::<()>(&mut conn)).await
    }

    async fn places(
        &self,
        job: JobId,
        seqs: Range<u64>,
    ) -> Result<Vec<Option<ChunkPlace>>, CoordError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let index = self.keys.chunks(job);
        let seqs: Vec<u64> = seqs.collect();
        let mut conn = self.conn.clone();
        let entries: Vec<Option<String>> = call(
            ::redis::cmd("HMGET")
                .arg(&index)
                .arg(&seqs)
                .query_async(&mut conn),
        )
        .await?;
        entries
            .into_iter()
            .map(|entry| {
                entry
                    .map(|entry| {
                        parse_place(&entry).ok_or_else(|| {
                            CoordError::Unavailable(format!(
                                "malformed index entry {entry:?} in {index}"
                            ))
                        })
                    })
                    .transpose()
            })
            .collect()
    }

    async fn forget(&self, job: JobId) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        call(
            ::redis::cmd("DEL")
                .arg(self.keys.chunks(job))
                .query_async::<()>(&mut conn),
        )
        .await
    }
}

fn parse_place(entry: &str) -> Option<ChunkPlace> {
    let (partition, position) = entry.split_once(':')?;
    Some(ChunkPlace {
        partition: partition.parse().ok()?,
        position: position.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entries_round_trip() {
        let place = |partition, position| ChunkPlace {
            partition,
            position,
        };
        assert_eq!(parse_place("3:12345"), Some(place(3, 12345)));
        assert_eq!(parse_place("3"), None);
        assert_eq!(parse_place("x:1"), None);
    }
}
