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
//! (or, from a newer attempt, a replacement); a publish this process knows
//! the index cannot hold yet skips that check (`recorded.rs`). Reads seek
//! to the recorded positions with a small pool of assign-only consumers:
//! no consumer groups, so no rebalancing and no committed offsets to look
//! after.
//!
//! A chunk whose send failed may still have landed; the job's next publish
//! looks for it at the partition's tail before sending it again
//! (`doubt.rs`), so the topic holds each chunk once. A broker that lost
//! its data is noticed, the topic made again, and the jobs whose chunks
//! went with it told so (`loss.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::Producer;

mod admin;
mod doubt;
mod loss;
mod producer;
mod publish;
mod reader;
mod recorded;
mod send;

pub use self::admin::ensure_topic;
pub(crate) use self::admin::ensure_topic_with_policy;
use self::admin::{partition_count, partition_ends};
use self::doubt::{Doubts, Tails};
use self::loss::Incarnations;
use self::producer::ReplaceableProducers;
use self::reader::{Fetch, Needed, ReaderPool};
use self::recorded::OwnRecords;
use self::send::Outgoing;
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
/// A publish unacknowledged this long has the topic looked at: the broker
/// may have lost it (`loss.rs`).
const STALLED_AFTER: Duration = Duration::from_secs(3);
/// The longest wait between two attempts to reach a broker.
pub(super) const RECONNECT_BACKOFF_MAX_MS: &str = "1000";
/// How long one produce request may go unanswered before it is sent again.
const REQUEST_TIMEOUT_MS: &str = "5000";
/// librdkafka gives up on a message a little before `PUBLISH_TIMEOUT`, so a
/// timed-out publish has usually been failed (not left in flight) by then.
const MESSAGE_TIMEOUT_MS: &str = "25000";

/// The result topic's producer settings: idempotent, acknowledged by every
/// replica, sent at once. Its bulk producer lingers instead
/// (`bulk_producer_config`). The bench's raw-producer baseline uses
/// these: sending all its messages at once, it is fastest without
/// lingering, so the baseline is not handicapped.
pub fn producer_config(brokers: &str, compression: Compression) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // A lone chunk (a job's first) is waited for: no lingering.
        .set("linger.ms", "0")
        // A broker that holds a request this long is taken for gone: the
        // request is sent again (idempotence keeps it from being written
        // twice) instead of waiting librdkafka's default 30 s.
        .set("request.timeout.ms", REQUEST_TIMEOUT_MS)
        // The topic is made by `ensure_topic` (compacted, its partitions);
        // one the broker made on a producer's metadata request after
        // losing it would have neither.
        .set("allow.auto.create.topics", "false")
        // A broker back after an outage is reached within a second, not
        // after librdkafka's backoff of up to 10 s.
        .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
        .set("compression.type", compression.as_str());
    config
}

/// The settings of the producer that sends a job's later batches: as
/// `producer_config`'s, but lingering for a batch to fill (`producer.rs`).
fn bulk_producer_config(brokers: &str, compression: Compression) -> ClientConfig {
    let mut config = producer_config(brokers, compression);
    config
        .set("linger.ms", producer::BULK_LINGER_MS)
        .set("batch.num.messages", producer::BULK_BATCH_MESSAGES);
    config
}

/// Re-exported: the setting lives in `config`, which imports no backend.
pub use crate::config::Compression;

pub struct KafkaResultTopic {
    producers: ReplaceableProducers,
    brokers: String,
    topic: String,
    partitions: i32,
    index: Arc<dyn ChunkIndex>,
    readers: Arc<ReaderPool>,
    /// Where a send starting now will land after, per partition.
    tails: Tails,
    /// Jobs whose last send failed: their chunks may be in the topic.
    doubts: Doubts,
    /// The topic's incarnation (one per loss of its data), and each
    /// running job's.
    incarnations: Incarnations,
    /// Jobs whose next publish needs no look at the index first.
    own_records: OwnRecords,
    /// When the topic was last looked at for a loss; held while looking.
    last_look: tokio::sync::Mutex<Option<std::time::Instant>>,
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
        let ends = partition_ends(brokers, topic, partitions).await?;

        let producers = ReplaceableProducers::new(
            producer_config(brokers, compression)
                .set("message.timeout.ms", MESSAGE_TIMEOUT_MS)
                .clone(),
            bulk_producer_config(brokers, compression)
                .set("message.timeout.ms", MESSAGE_TIMEOUT_MS)
                .clone(),
        )
        .map_err(unavailable)?;

        let readers = Arc::new(ReaderPool::new(brokers)?);
        let topic = KafkaResultTopic {
            producers,
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            partitions,
            index,
            readers,
            tails: Tails::new(&ends),
            doubts: Doubts::default(),
            incarnations: Incarnations::default(),
            own_records: OwnRecords::default(),
            last_look: tokio::sync::Mutex::new(None),
        };
        // An idempotent producer holds its first messages until it has a
        // producer id and the topic's partition leaders: up to half a second
        // against tansu, which the first chunks after a start would wait
        // for. Tombstones (null value, no headers) take that wait here, one
        // sent alone and two together (each producer's first send);
        // compaction removes them like any other.
        let warm_up = || Outgoing {
            key: WARM_UP_KEY.to_owned(),
            payload: None,
            headers: OwnedHeaders::new(),
        };
        topic.produce(0, warm_up()).await?;
        for landed in topic.produce_all(0, vec![warm_up(), warm_up()]).await {
            landed?;
        }
        Ok(topic)
    }

    /// The partition count in use (the topic's real one).
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// How many times the producer was replaced because it could no longer
    /// produce (fenced, or a fatal error).
    pub fn producer_replacements(&self) -> u64 {
        self.producers.current().1
    }

    /// Waits until every message handed to the producer is delivered. Call
    /// on graceful shutdown; publishes and deletes already wait for their
    /// own messages, so this only matters for ones cancelled mid-flight.
    pub async fn flush(&self, timeout: Duration) -> Result<(), ResultError> {
        let (producers, _) = self.producers.current();
        tokio::task::spawn_blocking(move || producers.flush(timeout))
            .await
            .map_err(unavailable)?
            .map_err(kafka_error)
    }

    fn partition_of(&self, offset: Offset) -> i32 {
        // `partitions` is at least 1 (checked at connect), so the cast is lossless.
        (offset.0 % self.partitions as u32) as i32
    }
}

#[async_trait]
impl ResultTopic for KafkaResultTopic {
    /// The broker answers a metadata request for the topic in time.
    async fn ready(&self) -> Result<(), ResultError> {
        let producer = self.producers.current().0.prompt().clone();
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
            tracing::warn!(error = %e, "could not flush the Kafka producers at shutdown");
        }
    }

    /// The batch's messages are all in flight together (librdkafka batches
    /// them); the index learns of them only once every one is acknowledged,
    /// in one index write, so readers never see a gap.
    async fn publish_batch(&self, chunks: &[Chunk]) -> Result<Vec<ChunkJson>, ResultError> {
        let encoded: Vec<ChunkJson> = chunks.iter().map(|c| c.to_json().into()).collect();
        let outcome = self.publish_encoded(chunks, &encoded).await;
        self.own_records.after(chunks, &outcome);
        outcome.map(|()| encoded)
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
        let tombstones = (0..chunks.max(stored))
            .map(|seq| Outgoing {
                key: chunk_key(offset, seq),
                payload: None,
                headers: chunk_headers(job, seq, None),
            })
            .collect();
        for outcome in self.produce_all(partition, tombstones).await {
            outcome?;
        }
        self.index.forget(job).await?;
        self.incarnations.forget(job);
        self.own_records.forget(job);
        self.doubts.take(job);
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
