//! Publishing a job's chunks: skipping those the index already holds,
//! sending the fresh ones in flight together, and indexing them once
//! acknowledged.

use std::collections::BTreeMap;

use super::doubt::Doubt;
use super::loss::Continuity;
use super::send::{Landed, Outgoing};
use super::{KafkaResultTopic, chunk_headers, chunk_key, superseded_if_newer};
use crate::coord::ChunkPlace;
use crate::model::{Chunk, JobId, Offset};
use crate::results::{ChunkJson, ResultError};

impl KafkaResultTopic {
    /// Publishes consecutive chunks of one job, encoded as `encoded`,
    /// skipping those the index already holds.
    pub(super) async fn publish_encoded(
        &self,
        chunks: &[Chunk],
        encoded: &[ChunkJson],
    ) -> Result<(), ResultError> {
        let Some(first) = chunks.first() else {
            return Ok(());
        };
        let fresh: Vec<(&Chunk, &ChunkJson)> = if self.own_records.known_before(first) {
            chunks.iter().zip(encoded).collect()
        } else {
            self.unindexed(chunks, encoded).await?
        };
        if fresh.is_empty() {
            return Ok(());
        }
        self.publish_fresh(first.job_id, first.offset, &fresh).await
    }

    /// The chunks the index does not hold yet (a resumed job re-publishes
    /// what an earlier run stored): one stored by this attempt is skipped,
    /// one stored by an older attempt published again, and one stored by a
    /// newer attempt refused. Chunks are indexed without gaps, so the
    /// index's count is the next seq: a batch past it is refused.
    async fn unindexed<'c>(
        &self,
        chunks: &'c [Chunk],
        encoded: &'c [ChunkJson],
    ) -> Result<Vec<(&'c Chunk, &'c ChunkJson)>, ResultError> {
        let Some(first) = chunks.first() else {
            return Ok(Vec::new());
        };
        // The attempt that indexed each seq of the batch, if any.
        let (expected, indexed) = if let [chunk] = chunks {
            // One round trip: the seq's place and the count together.
            let probe = self.index.probe(chunk.job_id, chunk.chunk_seq).await?;
            (probe.count, vec![probe.written_by])
        } else {
            let expected = self.index.count(first.job_id).await?;
            let indexed = if first.chunk_seq < expected {
                let end = expected.min(first.chunk_seq + chunks.len() as u64);
                let places = self.index.places(first.job_id, first.chunk_seq..end);
                places.await?.iter().map(|p| p.map(|p| p.attempt)).collect()
            } else {
                Vec::new()
            };
            (expected, indexed)
        };
        if first.chunk_seq > expected {
            return Err(ResultError::OutOfSequence {
                job: first.job_id,
                seq: first.chunk_seq,
                expected,
            });
        }
        let mut fresh = Vec::with_capacity(chunks.len());
        for (n, (chunk, json)) in chunks.iter().zip(encoded).enumerate() {
            match indexed.get(n).copied().flatten() {
                Some(by) if by >= chunk.attempt => superseded_if_newer(chunk, by)?,
                _ => fresh.push((chunk, json)),
            }
        }
        Ok(fresh)
    }

    /// Publishes chunks of one job that the index does not have yet, in
    /// flight together, and indexes them once they are acknowledged, up to
    /// the first that failed (the index takes no gaps; the retry sends the
    /// rest again).
    pub(super) async fn publish_fresh(
        &self,
        job: JobId,
        offset: Offset,
        fresh: &[(&Chunk, &ChunkJson)],
    ) -> Result<(), ResultError> {
        let partition = self.partition_of(offset);
        let Some(first) = fresh.first().map(|(chunk, _)| chunk.chunk_seq) else {
            return Ok(());
        };
        let incarnation = self.incarnations.current();
        match self.incarnations.continuity(job, first) {
            Continuity::Whole => {}
            Continuity::Lost => return Err(ResultError::Lost { job, chunks: first }),
            Continuity::Unknown => {
                self.confirm_chunk(job, first - 1).await?;
                self.incarnations.whole_in(job, incarnation);
            }
        }
        let earlier = self.doubts.take(job);
        let landed = match earlier {
            Some(doubt) => self.look_at_tail(job, doubt, fresh).await?,
            None => BTreeMap::new(),
        };
        // A failed send below keeps the earlier floor too: what the look
        // found but could not index (after a gap) is looked for again.
        let floor = earlier.map_or(self.tails.floor(partition), |doubt| {
            doubt.floor.min(self.tails.floor(partition))
        });
        let (seqs, messages): (Vec<u64>, Vec<Outgoing>) = fresh
            .iter()
            .filter(|(chunk, _)| !landed.contains_key(&chunk.chunk_seq))
            .map(|(chunk, json)| {
                let message = Outgoing {
                    key: chunk_key(offset, chunk.chunk_seq),
                    payload: Some(json.as_ref()),
                    headers: chunk_headers(job, chunk.chunk_seq, Some(chunk)),
                };
                (chunk.chunk_seq, message)
            })
            .unzip();
        let sent = self.produce_all(partition, messages).await;
        let mut outcomes: BTreeMap<u64, Landed> = landed
            .into_iter()
            .map(|(seq, position)| (seq, Ok((partition, position))))
            .collect();
        outcomes.extend(seqs.into_iter().zip(sent));

        // Two publishers racing for one seq both land in Kafka with the same
        // key; the newest attempt's index entry wins (of one attempt's, the
        // first), and reads take the indexed copy or a later one of an
        // attempt at least as new (see `fetch`).
        let attempt = fresh.first().map_or(0, |(chunk, _)| chunk.attempt);
        let mut places = Vec::with_capacity(outcomes.len());
        let mut failed = None;
        for (seq, outcome) in outcomes {
            match outcome {
                Ok((partition, position)) if failed.is_none() => {
                    let place = ChunkPlace {
                        partition,
                        position,
                        attempt,
                    };
                    places.push((seq, place));
                }
                Ok(_) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if failed.is_some() {
            // What failed may have landed all the same, after `floor`.
            self.doubts.failed(job, Doubt { partition, floor });
        }
        if first > 0 && self.incarnations.current() != incarnation {
            // The topic lost the chunks before these while they were sent.
            return Err(ResultError::Lost { job, chunks: first });
        }
        if !places.is_empty() {
            let chunks: Vec<&Chunk> = fresh.iter().map(|(chunk, _)| *chunk).collect();
            self.record(&chunks, &places).await?;
        }
        if first == 0 {
            self.incarnations.whole_in(job, incarnation);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if fresh.iter().any(|(chunk, _)| chunk.is_last) {
            self.incarnations.forget(job);
        }
        Ok(())
    }

    /// Indexes where `chunks` (of one attempt) landed; refused when a newer
    /// attempt indexed one of those seqs first. A seq whose indexed copy
    /// lies before an older attempt's copy (a frozen worker's, landed late)
    /// gets the indexed attempt's copy written once more, after it:
    /// compaction keeps a key's last message, and reads take a later copy
    /// of an attempt at least as new. Rows are deterministic, so that copy
    /// is the indexed one's text; a last chunk (whose status could differ)
    /// is only written again by its own attempt.
    async fn record(
        &self,
        chunks: &[&Chunk],
        landed: &[(u64, ChunkPlace)],
    ) -> Result<(), ResultError> {
        let Some(first) = chunks.first() else {
            return Ok(());
        };
        let recorded = self.index.record(first.job_id, landed).await?;
        for (seq, attempt) in recorded.rewrite {
            let Some(chunk) = chunks.iter().find(|c| c.chunk_seq == seq) else {
                continue;
            };
            if chunk.is_last && chunk.attempt != attempt {
                continue;
            }
            let copy = Chunk {
                attempt,
                ..(*chunk).clone()
            };
            let json = copy.to_json();
            let message = Outgoing {
                key: chunk_key(copy.offset, seq),
                payload: Some(&json),
                headers: chunk_headers(copy.job_id, seq, Some(&copy)),
            };
            let partition = self.partition_of(copy.offset);
            if let Err(e) = self.produce(partition, message).await {
                tracing::warn!(job_id = %copy.job_id, seq, attempt, error = %e,
                    "could not write a chunk again after an older attempt's late copy");
            }
        }
        if !recorded.superseded {
            return Ok(());
        }
        let (Some(low), Some(high)) = (landed.first(), landed.last()) else {
            return Ok(());
        };
        let places = self.index.places(first.job_id, low.0..high.0 + 1).await?;
        let newer = places
            .iter()
            .flatten()
            .map(|p| p.attempt)
            .max()
            .unwrap_or(first.attempt);
        superseded_if_newer(first, newer)
    }
}
