//! The Redis [`ChunkIndex`]: one hash per job, seq ->
//! `{partition}:{position}:{attempt}`; recording is a script, so the
//! newest attempt's place wins atomically.

use std::ops::Range;

use ::redis::Script;
use ::redis::aio::ConnectionManager;
use async_trait::async_trait;

use super::conn::{call, open};
use super::keys::Keys;
use crate::coord::{ChunkIndex, ChunkPlace, CoordError, IndexedChunks, Recorded};
use crate::model::JobId;

/// The index outlives any sensible result TTL; expiry deletes it long before.
/// It only protects Redis from jobs whose delete never ran.
const INDEX_TTL_SECS: i64 = 7 * 24 * 3600;

pub struct RedisChunkIndex {
    conn: ConnectionManager,
    keys: Keys,
    record: Script,
}

impl RedisChunkIndex {
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisChunkIndex, CoordError> {
        let (_, conn) = open(url).await?;
        Ok(RedisChunkIndex {
            conn,
            keys: Keys::new(prefix),
            record: Script::new(include_str!("scripts/record_chunks.lua")),
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
        let (entry, count): (Option<String>, u64) = call(
            ::redis::pipe()
                .cmd("HGET")
                .arg(&index)
                .arg(seq)
                .cmd("HLEN")
                .arg(&index)
                .query_async(&mut conn),
        )
        .await?;
        let written_by = entry
            .map(|entry| parse_entry(&index, &entry).map(|place| place.attempt))
            .transpose()?;
        Ok(IndexedChunks { written_by, count })
    }

    async fn record(
        &self,
        job: JobId,
        landed: &[(u64, ChunkPlace)],
    ) -> Result<Recorded, CoordError> {
        let mut invocation = self.record.prepare_invoke();
        invocation.key(self.keys.chunks(job)).arg(INDEX_TTL_SECS);
        for (seq, place) in landed {
            invocation.arg(*seq).arg(format!(
                "{}:{}:{}",
                place.partition, place.position, place.attempt
            ));
        }
        let mut conn = self.conn.clone();
        let answer: Vec<u64> = call(invocation.invoke_async(&mut conn)).await?;
        let (superseded, rewrite) = answer.split_first().unwrap_or((&0, &[]));
        Ok(Recorded {
            superseded: *superseded == 1,
            rewrite: rewrite
                .chunks_exact(2)
                .map(|pair| (pair[0], u32::try_from(pair[1]).unwrap_or(u32::MAX)))
                .collect(),
        })
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
            .map(|entry| entry.map(|entry| parse_entry(&index, &entry)).transpose())
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

fn parse_entry(index: &str, entry: &str) -> Result<ChunkPlace, CoordError> {
    parse_place(entry).ok_or_else(|| {
        CoordError::Unavailable(format!("malformed index entry {entry:?} in {index}"))
    })
}

/// An entry without an attempt (written before chunks carried one) counts
/// as attempt 0, older than any worker's.
fn parse_place(entry: &str) -> Option<ChunkPlace> {
    let mut parts = entry.splitn(3, ':');
    let partition = parts.next()?.parse().ok()?;
    let position = parts.next()?.parse().ok()?;
    let attempt = match parts.next() {
        Some(attempt) => attempt.parse().ok()?,
        None => 0,
    };
    Some(ChunkPlace {
        partition,
        position,
        attempt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entries_round_trip() {
        let place = |partition, position, attempt| ChunkPlace {
            partition,
            position,
            attempt,
        };
        assert_eq!(parse_place("3:12345:2"), Some(place(3, 12345, 2)));
        assert_eq!(parse_place("3:12345"), Some(place(3, 12345, 0)));
        assert_eq!(parse_place("3"), None);
        assert_eq!(parse_place("x:1"), None);
        assert_eq!(parse_place("3:1:x"), None);
    }
}
