//! Reading chunks back: a small pool of assign-only consumers that seek to
//! the positions the chunk index recorded, with no consumer group.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedHeaders, Headers, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio::sync::Semaphore;
use tracing::warn;

use super::{KafkaPosition, RECONNECT_BACKOFF_MAX_MS, kafka_error, unavailable};
use crate::results::ResultError;

/// How long a read may take to fetch its chunks from Kafka.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence after which a read is over (the first read of a fetch; later
/// ones wait longer for their first message, see `fetch`).
const READ_SILENCE: Duration = Duration::from_millis(500);
/// Reader consumers kept open; a read holds one while it fetches.
const READERS: usize = 4;
/// librdkafka insists on a group id for `assign`, though nothing joins or
/// commits to it: consumer groups are never used.
const READER_GROUP: &str = "pseudostream-result-readers";
/// How long a reader's request may go unanswered.
const READER_SOCKET_TIMEOUT_MS: &str = "5000";

/// What one read needs from a partition: the indexed copy of each seq.
pub(super) struct Fetch {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) job: String,
    pub(super) needed: BTreeMap<u64, Needed>,
}

/// Where the indexed copy of a seq is, and which attempt wrote it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Needed {
    pub(super) position: KafkaPosition,
    pub(super) attempt: u32,
}

/// Assign-only consumers kept open between reads, so a read costs a fetch,
/// not a fresh connection and metadata round.
pub(super) struct ReaderPool {
    brokers: String,
    /// Idle readers, with the pool's generation they were made in.
    idle: Mutex<Vec<(BaseConsumer, u64)>>,
    /// Bumped by `renew`: readers of an earlier one are dropped.
    generation: AtomicU64,
    permits: Semaphore,
}

impl ReaderPool {
    pub(super) fn new(brokers: &str) -> Result<ReaderPool, ResultError> {
        let idle = (0..READERS)
            .map(|_| reader(brokers).map(|r| (r, 0)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ReaderPool {
            brokers: brokers.to_owned(),
            idle: Mutex::new(idle),
            generation: AtomicU64::new(0),
            permits: Semaphore::new(READERS),
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(BaseConsumer, u64)>> {
        crate::lock(&self.idle)
    }

    /// Drops every reader (those in use once their read is over); new ones
    /// are made as reads need them. After the broker lost the topic, a
    /// reader that fetched from it before crashed librdkafka 2.12.1 on its
    /// next fetch (tansu answers with a leader change that names no topic,
    /// which librdkafka looks up by a null name).
    pub(super) fn renew(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let stale = std::mem::take(&mut *self.idle());
        // Closing a consumer may wait on its threads.
        tokio::task::spawn_blocking(move || drop(stale));
    }

    /// Chunk JSON by seq: every needed seq, or an error.
    pub(super) async fn fetch(
        self: &Arc<Self>,
        request: Fetch,
    ) -> Result<BTreeMap<u64, String>, ResultError> {
        self.with_reader(move |consumer| fetch(consumer, &request))
            .await
    }

    /// Runs a blocking `read` on an idle reader, which it may assign.
    pub(super) async fn with_reader<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&BaseConsumer) -> Result<T, ResultError> + Send + 'static,
    ) -> Result<T, ResultError> {
        let _permit = self.permits.acquire().await.map_err(unavailable)?;
        // A consumer lost to a panicked read is replaced here.
        let generation = self.generation.load(Ordering::SeqCst);
        let idle = self.idle().pop().filter(|(_, made)| *made == generation);
        let (consumer, made) = match idle {
            Some(idle) => idle,
            None => (reader(&self.brokers)?, generation),
        };
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let found = read(&consumer);
            // Leave nothing assigned, so an idle reader fetches nothing.
            if let Err(e) = consumer.unassign() {
                warn!(error = %e, "could not unassign a result reader");
            }
            if made == pool.generation.load(Ordering::SeqCst) {
                pool.idle().push((consumer, made));
            }
            found
        })
        .await
        .map_err(unavailable)?
    }
}

fn reader(brokers: &str) -> Result<BaseConsumer, ResultError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", READER_GROUP)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // The end of the partition tells a read that a chunk is not coming.
        .set("enable.partition.eof", "true")
        // Readers want the few messages they asked for, quickly: a longer
        // broker-side wait showed up as ~100 ms per single-chunk read.
        .set("fetch.wait.max.ms", "10")
        .set("auto.offset.reset", "earliest")
        // A fetch whose reply was lost is given up (and its connection
        // made again) after this, not librdkafka's default 60 s: reads
        // and the look for chunks in doubt (`doubt.rs`) must not stall
        // that long after a network fault.
        .set("socket.timeout.ms", READER_SOCKET_TIMEOUT_MS)
        .set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS)
        .create()
        .map_err(unavailable)
}

/// How far before the first needed position each read of `fetch` starts:
/// at it, then (after a miss) a record batch back (a few hundred chunks at
/// most here), further, and finally the start of the partition.
const READ_BACK: [KafkaPosition; 4] = [0, 256, 4096, KafkaPosition::MAX];

/// Reads the partition from the first needed position until every needed
/// seq is found. A message counts for a seq when its headers name the job and
/// seq, it sits at or after the indexed position, and an attempt at least as
/// new as the indexed one wrote it: the indexed copy, or a later duplicate
/// that compaction kept in its place, but never the copy of a worker that
/// was taken over (frozen past its lease), wherever it landed. Messages of
/// other jobs sharing the partition are skipped.
///
/// tansu 0.6 answers a fetch that starts inside a record batch with the
/// batches after it, so the messages of that batch from the asked offset on
/// never arrive (seen under 100 concurrent jobs, whose chunks share
/// batches). So a read that misses chunks is repeated from further and
/// further back (`READ_BACK`) before it fails.
fn fetch(consumer: &BaseConsumer, request: &Fetch) -> Result<BTreeMap<u64, String>, ResultError> {
    let Some(start) = request.needed.values().map(|n| n.position).min() else {
        return Ok(BTreeMap::new());
    };
    let mut found: HashMap<u64, String> = HashMap::with_capacity(request.needed.len());
    let mut read_up_to = None;
    // Patience for a read's first message grows with each attempt: silence
    // right away is what tansu's skipped batch looks like, but a busy
    // broker can also take seconds to answer a fetch on a long partition.
    let mut first_wait = READ_SILENCE;
    for back in READ_BACK {
        if found.len() == request.needed.len() {
            break;
        }
        let from = start.saturating_sub(back).max(0);
        if from < start {
            warn!(job = %request.job, partition = request.partition, from, start,
                "chunks missing from a read at their position; reading again from earlier");
        }
        read_up_to = scan(consumer, request, from, first_wait, &mut found)?;
        first_wait *= 4;
        if from == 0 {
            break;
        }
    }
    if found.len() < request.needed.len() {
        let missing: Vec<_> = request
            .needed
            .iter()
            .filter(|(seq, _)| !found.contains_key(seq))
            .collect();
        return Err(ResultError::Unavailable(format!(
            "chunks (seq, position) {missing:?} of job {} are indexed but not in partition {} (read up to {read_up_to:?})",
            request.job, request.partition
        )));
    }
    Ok(found.into_iter().collect())
}

/// One read of the partition from `from`, adding what it finds to `found`,
/// until every needed seq is there or the read has passed them all.
/// Returns the highest position read.
fn scan(
    consumer: &BaseConsumer,
    request: &Fetch,
    from: KafkaPosition,
    first_wait: Duration,
    found: &mut HashMap<u64, String>,
) -> Result<Option<KafkaPosition>, ResultError> {
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(
            &request.topic,
            request.partition,
            rdkafka::Offset::Offset(from),
        )
        .map_err(kafka_error)?;
    consumer.assign(&assignment).map_err(kafka_error)?;

    let deadline = Instant::now() + READ_TIMEOUT;
    // The highest position read in this assignment.
    let mut read_up_to: Option<KafkaPosition> = None;
    while found.len() < request.needed.len() {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ResultError::Timeout);
        }
        let wait = match read_up_to {
            None => remaining.min(first_wait),
            Some(_) => remaining.min(READ_SILENCE),
        };
        let message = match consumer.poll(wait) {
            // The end of the partition, or silence: what this read can
            // find, it has found (`fetch` decides what to do about chunks
            // still missing).
            None => break,
            Some(Err(KafkaError::PartitionEOF(p))) if p == request.partition => break,
            Some(Err(KafkaError::PartitionEOF(_))) => continue,
            Some(Err(e)) if is_transient(&e) => continue,
            Some(Err(e)) => return Err(kafka_error(e)),
            Some(Ok(message)) => message,
        };
        if message.topic() != request.topic
            || message.partition() != request.partition
            || message.offset() < from
        {
            continue;
        }
        read_up_to = read_up_to.max(Some(message.offset()));
        let Some(payload) = message.payload() else {
            continue;
        };
        let Some(copy) = message.headers().and_then(chunk_copy) else {
            continue;
        };
        if copy.job != request.job {
            continue;
        }
        let Some(needed) = request.needed.get(&copy.seq) else {
            continue;
        };
        if message.offset() < needed.position
            || copy.attempt < needed.attempt
            || found.contains_key(&copy.seq)
        {
            continue;
        }
        let seq = copy.seq;
        let json = std::str::from_utf8(payload).map_err(unavailable)?;
        found.insert(seq, json.to_owned());
    }
    Ok(read_up_to)
}

/// A connection error a consumer reports while librdkafka connects again
/// by itself. A reader idle through a broker outage finds them queued at
/// its next poll, after the broker is back: they say nothing about this read.
pub(super) fn is_transient(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageConsumption(
            RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve
        )
    )
}

pub(super) fn job_and_seq(headers: &BorrowedHeaders) -> Option<(&str, u64)> {
    chunk_copy(headers).map(|copy| (copy.job, copy.seq))
}

/// Which chunk a message is a copy of, by its headers.
struct ChunkCopy<'a> {
    job: &'a str,
    seq: u64,
    /// 0 when the header is missing (written before chunks carried one).
    attempt: u32,
}

fn chunk_copy(headers: &BorrowedHeaders) -> Option<ChunkCopy<'_>> {
    let (mut job, mut seq, mut attempt) = (None, None, 0);
    for header in headers.iter() {
        match header.key {
            "jobId" => job = header.value.and_then(|v| std::str::from_utf8(v).ok()),
            "chunkSeq" => seq = number(header.value),
            "attempt" => attempt = number(header.value).unwrap_or(0),
            _ => {}
        }
    }
    Some(ChunkCopy {
        job: job?,
        seq: seq?,
        attempt,
    })
}

/// A header's value as a number.
fn number<T: std::str::FromStr>(value: Option<&[u8]>) -> Option<T> {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
}
