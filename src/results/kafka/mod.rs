//! The result topic on Kafka, for deployments with several processes.
//!
//! Chunks live in one compacted topic, so dashboards can also read them
//! straight from Kafka (see `docs/KAFKA.md`): the partition is the job's
//! offset (the pool slot) modulo the partition count, the key is
//! `"{offset}/{chunkSeq}"`, the headers carry `jobId`, `chunkSeq`,
//! `attempt` and `isLast`, and the value is the chunk JSON the embedded log
//! serves.
//!
//! Kafka cannot look a message up by key, so a [`ChunkIndex`] (in Redis)
//! records where each chunk landed — `(partition, KafkaPosition)` per
//! `(jobId, chunkSeq)`, with the attempt that wrote it — and doubles as the
//! "already stored" check that makes re-publishing a stored seq a no-op
//! (or, from a newer attempt, a replacement). Reads seek to the recorded
//! positions with a small pool of assign-only consumers: no consumer
//! groups, so no rebalancing and no committed offsets to look after.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer};

mod admin;
mod producer;
mod reader;

pub use self::admin::ensure_topic;
pub(crate) use self::admin::ensure_topic_with_policy;
use self::admin::partition_count;
use self::producer::ReplaceableProducer;
use self::reader::{Fetch, Needed, ReaderPool};
use super::{ChunkJson, ResultError, ResultTopic};
use crate::coord::{ChunkIndex, ChunkPlace, CoordError};
use crate::model::{Chunk, JobId, Offset};

/// A message's position within its Kafka partition. Named apart from
/// [`Offset`], which is the public pool slot dashboards embed.
pub type KafkaPosition = i64;

/// The key of the message `warm_up` publishes; it has no offset prefix,
/// so connectors that keep only their offset's keys skip it.
const WARM_UP_KEY: &str = "warm-up";

/// How long readiness waits for the broker's metadata.
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a publish may wait for the broker's acknowledgement.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one produce request may go unanswered before it is sent again.
const REQUEST_TIMEOUT_MS: &str = "5000";
/// librdkafka gives up on a message a little before `PUBLISH_TIMEOUT`, so a
/// timed-out publish has usually been failed (not left in flight) by then.
const MESSAGE_TIMEOUT_MS: &str = "25000";

/// The result topic's producer settings: idempotent, acknowledged by every
/// replica, sent at once. The bench's raw-producer baseline uses them too,
/// so the two send alike.
pub fn producer_config(brokers: &str, compression: Compression) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Publishes wait for their acknowledgement; batching only adds latency.
        .set("linger.ms", "0")
        // A broker that holds a request this long is taken for gone: the
        // request is sent again (idempotence keeps it from being written
        // twice) instead of waiting librdkafka's default 30 s.
        .set("request.timeout.ms", REQUEST_TIMEOUT_MS)
        .set("compression.type", compression.as_str());
    config
}

/// Re-exported: the setting lives in `config`, which imports no backend.
pub use crate::config::Compression;

pub struct KafkaResultTopic {
    producer: ReplaceableProducer,
    topic: String,
    partitions: i32,
    index: Arc<dyn ChunkIndex>,
    readers: Arc<ReaderPool>,
}

impl KafkaResultTopic {
    /// Connects to Kafka, creating the topic (compacted, with `partitions`
    /// partitions) when missing; `index` records where chunks land. An existing topic keeps its
    /// partition count, which is then the one used.
    pub async fn connect(
        brokers: &str,
        topic: &str,
        partitions: i32,
        compression: Compression,
        index: Arc<dyn ChunkIndex>,
    ) -> Result<KafkaResultTopic, ResultError> {
        if partitions < 1 {
            return Err(ResultError::Unavailable(format!(
                "the result topic needs at least one partition, not {partitions}"
            )));
        }
        ensure_topic(brokers, topic, partitions).await?;
        let partitions = partition_count(brokers, topic).await?;

        let producer = ReplaceableProducer::new(
            producer_config(brokers, compression)
                .set("message.timeout.ms", MESSAGE_TIMEOUT_MS)
                .clone(),
        )
        .map_err(unavailable)?;

        let readers = Arc::new(ReaderPool::new(brokers)?);
        let topic = KafkaResultTopic {
            producer,
            topic: topic.to_owned(),
            partitions,
            index,
            readers,
        };
        // An idempotent producer holds its first messages until it has a
        // producer id and the topic's partition leaders: up to half a second
        // against tansu, which the first chunks after a start would wait
        // for. One tombstone (null value, no headers) takes that wait here;
        // compaction removes it like any other.
        topic
            .produce(0, WARM_UP_KEY, None, OwnedHeaders::new())
            .await?;
        Ok(topic)
    }

    /// The partition count in use (the topic's real one).
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// Waits until every message handed to the producer is delivered. Call
    /// on graceful shutdown; publishes and deletes already wait for their
    /// own messages, so this only matters for ones cancelled mid-flight.
    pub async fn flush(&self, timeout: Duration) -> Result<(), ResultError> {
        let (producer, _) = self.producer.current();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(unavailable)?
            .map_err(kafka_error)
    }

    fn partition_of(&self, offset: Offset) -> i32 {
        // `partitions` is at least 1 (checked at connect), so the cast is lossless.
        (offset.0 % self.partitions as u32) as i32
    }

    /// Waits for a message's acknowledgement; returns where it landed.
    async fn produce(
        &self,
        partition: i32,
        key: &str,
        payload: Option<&str>,
        headers: OwnedHeaders,
    ) -> Result<(i32, KafkaPosition), ResultError> {
        let mut record = FutureRecord::<str, str>::to(&self.topic)
            .partition(partition)
            .key(key)
            .headers(headers);
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        // A full local queue is waited out within the same overall budget.
        let (producer, generation) = self.producer.current();
        let send = producer.send(record, PUBLISH_TIMEOUT);
        match tokio::time::timeout(PUBLISH_TIMEOUT, send).await {
            Err(_) => Err(ResultError::Timeout),
            Ok(Err((e, _))) => {
                // Retried by the caller, on a new producer if this one is done.
                self.producer.replace_after(&e, generation);
                Err(kafka_error(e))
            }
            Ok(Ok(delivery)) => Ok((delivery.partition, delivery.offset)),
        }
    }

    /// Publishes one chunk, already encoded as `json`.
    async fn publish_one(&self, chunk: &Chunk, json: &str) -> Result<(), ResultError> {
        let seq = chunk.chunk_seq;
        // Chunks are indexed without gaps, so the count is the next seq.
        let probe = self.index.probe(chunk.job_id, seq).await?;
        let expected = probe.count;
        if let Some(by) = probe.written_by
            && by >= chunk.attempt
        {
            // Stored by this attempt (a job resumed after a crash
            // re-publishes its last chunk), or by a newer one: refused.
            return superseded_if_newer(chunk, by);
        }
        if seq > expected {
            return Err(ResultError::OutOfSequence {
                job: chunk.job_id,
                seq,
                expected,
            });
        }

        let headers = chunk_headers(chunk.job_id, seq, Some(chunk));
        let key = chunk_key(chunk.offset, seq);
        let (partition, position) = self
            .produce(self.partition_of(chunk.offset), &key, Some(json), headers)
            .await?;

        // Two publishers racing for one seq both land in Kafka with the same
        // key; the newest attempt's index entry wins (of one attempt's, the
        // first), and reads take the indexed copy or a later one of an
        // attempt at least as new (see `fetch`).
        let place = ChunkPlace {
            partition,
            position,
            attempt: chunk.attempt,
        };
        self.record(&[chunk], &[(seq, place)]).await
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
            let headers = chunk_headers(copy.job_id, seq, Some(&copy));
            let key = chunk_key(copy.offset, seq);
            let partition = self.partition_of(copy.offset);
            if let Err(e) = self
                .produce(partition, &key, Some(&copy.to_json()), headers)
                .await
            {
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

#[async_trait]
impl ResultTopic for KafkaResultTopic {
    /// The broker answers a metadata request for the topic in time.
    async fn ready(&self) -> Result<(), ResultError> {
        let (producer, _) = self.producer.current();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), READY_TIMEOUT)
                .map(|_| ())
                .map_err(kafka_error)
        })
        .await
        .map_err(unavailable)?
    }

    async fn close(&self) {
        if let Err(e) = self.flush(Duration::from_secs(10)).await {
            tracing::warn!(error = %e, "could not flush the Kafka producer at shutdown");
        }
    }

    /// The batch's messages are all in flight together (librdkafka batches
    /// them); the index learns of them only once every one is acknowledged,
    /// in one index write, so readers never see a gap.
    async fn publish_batch(&self, chunks: &[Chunk]) -> Result<Vec<ChunkJson>, ResultError> {
        let encoded: Vec<ChunkJson> = chunks.iter().map(|c| c.to_json().into()).collect();
        let (Some(first), true) = (chunks.first(), chunks.len() > 1) else {
            for (chunk, json) in chunks.iter().zip(&encoded) {
                self.publish_one(chunk, json).await?;
            }
            return Ok(encoded);
        };
        let expected = self.index.count(first.job_id).await?;
        if first.chunk_seq > expected {
            return Err(ResultError::OutOfSequence {
                job: first.job_id,
                seq: first.chunk_seq,
                expected,
            });
        }
        // Chunks already indexed (a resumed job) are skipped, as in
        // `publish_one`, unless an older attempt wrote them.
        let indexed = if first.chunk_seq < expected {
            let end = expected.min(first.chunk_seq + chunks.len() as u64);
            self.index
                .places(first.job_id, first.chunk_seq..end)
                .await?
        } else {
            Vec::new()
        };
        let mut fresh: Vec<(&Chunk, &ChunkJson)> = Vec::with_capacity(chunks.len());
        for (n, (chunk, json)) in chunks.iter().zip(&encoded).enumerate() {
            match indexed.get(n).copied().flatten() {
                Some(place) if place.attempt >= chunk.attempt => {
                    superseded_if_newer(chunk, place.attempt)?;
                }
                _ => fresh.push((chunk, json)),
            }
        }
        if fresh.is_empty() {
            return Ok(encoded);
        }
        let sends = fresh.iter().map(|(chunk, json)| {
            let headers = chunk_headers(chunk.job_id, chunk.chunk_seq, Some(chunk));
            let key = chunk_key(chunk.offset, chunk.chunk_seq);
            async move {
                self.produce(self.partition_of(chunk.offset), &key, Some(json), headers)
                    .await
            }
        });
        let landed = join_all(sends).await;
        let mut places = Vec::with_capacity(fresh.len());
        let mut failed = None;
        for ((chunk, _), outcome) in fresh.iter().zip(landed) {
            match outcome {
                Ok((partition, position)) if failed.is_none() => {
                    let place = ChunkPlace {
                        partition,
                        position,
                        attempt: chunk.attempt,
                    };
                    places.push((chunk.chunk_seq, place));
                }
                Ok(_) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        // What landed before the first failure is indexed even when the
        // batch fails, so the retry sends only the rest again (the index
        // takes no gaps, so what landed after it is sent again too).
        if !places.is_empty() {
            let landed: Vec<&Chunk> = fresh.iter().map(|(chunk, _)| *chunk).collect();
            self.record(&landed, &places).await?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(encoded),
        }
    }

    async fn read(
        &self,
        job: JobId,
        _offset: Offset,
        from: u64,
        limit: usize,
    ) -> Result<Vec<ChunkJson>, ResultError> {
        let stored = self.index.count(job).await?;
        let wanted = stored
            .saturating_sub(from)
            .min(u64::try_from(limit).unwrap_or(u64::MAX));
        if wanted == 0 {
            return Ok(Vec::new());
        }
        let places = self.index.places(job, from..from + wanted).await?;

        let mut needed = BTreeMap::new();
        let mut partition = None;
        for (seq, place) in (from..).zip(places) {
            let Some(ChunkPlace {
                partition: p,
                position,
                attempt,
            }) = place
            else {
                break;
            };
            // All chunks of a job share its offset, hence its partition.
            if *partition.get_or_insert(p) != p {
                break;
            }
            needed.insert(seq, Needed { position, attempt });
        }
        let Some(partition) = partition else {
            return Ok(Vec::new());
        };

        let request = Fetch {
            topic: self.topic.clone(),
            partition,
            job: job.to_string(),
            needed,
        };
        let found = self.readers.fetch(request).await?;
        Ok(found.into_values().map(ChunkJson::from).collect())
    }

    async fn delete(&self, job: JobId, offset: Offset, chunks: u64) -> Result<(), ResultError> {
        // The index may know of a chunk the job's progress never counted (a
        // crash between publish and progress); tombstone that one too.
        let stored = self.index.count(job).await?;
        let partition = self.partition_of(offset);
        // Tombstones go first: the offset is re-leased only after delete
        // returns, so no new job's chunk can be shadowed by them.
        let tombstones = (0..chunks.max(stored)).map(|seq| {
            let key = chunk_key(offset, seq);
            async move {
                let headers = chunk_headers(job, seq, None);
                self.produce(partition, &key, None, headers).await
            }
        });
        for outcome in join_all(tombstones).await {
            outcome?;
        }
        self.index.forget(job).await?;
        Ok(())
    }
}

/// A message key: readers of the raw topic select an offset by its prefix.
fn chunk_key(offset: Offset, seq: u64) -> String {
    format!("{offset}/{seq}")
}

/// `attempt` and `isLast` are left off tombstones (`chunk` is `None`):
/// they end a chunk, they are not one.
fn chunk_headers(job: JobId, seq: u64, chunk: Option<&Chunk>) -> OwnedHeaders {
    let job = job.to_string();
    let seq = seq.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "jobId",
            value: Some(&job),
        })
        .insert(Header {
            key: "chunkSeq",
            value: Some(&seq),
        });
    match chunk {
        Some(chunk) => headers
            .insert(Header {
                key: "attempt",
                value: Some(&chunk.attempt.to_string()),
            })
            .insert(Header {
                key: "isLast",
                value: Some(if chunk.is_last { "true" } else { "false" }),
            }),
        None => headers,
    }
}

/// A seq stored by `by`, an attempt at least as new as `chunk`'s: nothing
/// to publish when it is the same attempt, a refusal when it is newer.
fn superseded_if_newer(chunk: &Chunk, by: u32) -> Result<(), ResultError> {
    if by > chunk.attempt {
        return Err(ResultError::Superseded {
            job: chunk.job_id,
            seq: chunk.chunk_seq,
            attempt: chunk.attempt,
            newer: by,
        });
    }
    Ok(())
}

/// The index is part of the topic: its failures are the topic's.
impl From<CoordError> for ResultError {
    fn from(e: CoordError) -> ResultError {
        match e {
            CoordError::Timeout => ResultError::Timeout,
            CoordError::Unavailable(reason) => ResultError::Unavailable(reason),
            other => ResultError::Unavailable(other.to_string()),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> ResultError {
    ResultError::Unavailable(e.to_string())
}

fn kafka_error(e: KafkaError) -> ResultError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::OperationTimedOut) => {
            ResultError::Timeout
        }
        _ => unavailable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_put_the_offset_first() {
        assert_eq!(chunk_key(Offset(42), 7), "42/7");
    }
}
