//! Chunks in doubt: sent, but their delivery failed, so they may be in the
//! topic or not.
//!
//! librdkafka may write a message it reported as failed: a produce request
//! whose reply was lost is on the broker, though the message timed out, or
//! its producer was fenced and replaced (see `producer.rs`). Sending such a
//! chunk again would put it in the topic twice, which a reader of the raw
//! topic sees (readers served by the chunk index never do). So after a
//! failed send, the job's next publish first reads the partition's tail:
//! a chunk found there, with the very content about to be sent, is indexed
//! where it landed instead of being sent again.
//!
//! Only the tail is read: every message appended before a send began sits
//! at or below the position this process last saw acknowledged in that
//! partition (its `Tails`), so the chunk, if it landed, is after it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::TopicPartitionList;

use tracing::info;

use super::reader::{is_transient, job_and_seq};
use super::{KafkaPosition, KafkaResultTopic, kafka_error};
use crate::model::{Chunk, JobId};
use crate::results::{ChunkJson, ResultError};

/// How long reading a partition's tail may take. It must reach the end of
/// the partition: silence is no proof that a chunk is not there.
const TAIL_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Per partition, the last position this process saw acknowledged (or the
/// partition's end at connect): a message sent after it was read lands
/// after it.
pub(super) struct Tails {
    last: Vec<AtomicI64>,
}

impl Tails {
    /// `ends` are the partitions' high watermarks (the next position).
    pub(super) fn new(ends: &[KafkaPosition]) -> Tails {
        Tails {
            last: ends.iter().map(|end| AtomicI64::new(end - 1)).collect(),
        }
    }

    /// The position a send starting now is sure to land after.
    pub(super) fn floor(&self, partition: i32) -> KafkaPosition {
        self.slot(partition)
            .map_or(-1, |p| p.load(Ordering::SeqCst))
    }

    /// A message was acknowledged at `position`. The latest wins, not the
    /// highest: a broker that lost its data starts again from 0, and a
    /// floor too low only costs a longer read.
    pub(super) fn acknowledged(&self, partition: i32, position: KafkaPosition) {
        if position < 0 {
            return; // the broker did not say where
        }
        if let Some(slot) = self.slot(partition) {
            slot.store(position, Ordering::SeqCst);
        }
    }

    /// Every partition's floor, in partition order.
    pub(super) fn floors(&self) -> Vec<KafkaPosition> {
        self.last.iter().map(|p| p.load(Ordering::SeqCst)).collect()
    }

    /// The partitions start again from nothing (the broker lost them).
    pub(super) fn restart(&self) {
        for slot in &self.last {
            slot.store(-1, Ordering::SeqCst);
        }
    }

    fn slot(&self, partition: i32) -> Option<&AtomicI64> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.last.get(p))
    }
}

/// Where a job's chunks in doubt may be: after `floor` in `partition`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Doubt {
    pub(super) partition: i32,
    pub(super) floor: KafkaPosition,
}

/// The jobs whose last send failed, until their next publish has looked.
#[derive(Default)]
pub(super) struct Doubts {
    jobs: Mutex<HashMap<JobId, Doubt>>,
}

impl Doubts {
    /// A send of `job`'s chunks failed; the lowest floor of its failed
    /// sends is kept, so one look covers them all.
    pub(super) fn failed(&self, job: JobId, doubt: Doubt) {
        let mut jobs = crate::lock(&self.jobs);
        let kept = jobs.entry(job).or_insert(doubt);
        if kept.partition != doubt.partition || doubt.floor < kept.floor {
            *kept = doubt;
        }
    }

    /// Takes the job's doubt, to look at the tail; put it back with
    /// `failed` when the look fails.
    pub(super) fn take(&self, job: JobId) -> Option<Doubt> {
        crate::lock(&self.jobs).remove(&job)
    }
}

impl KafkaResultTopic {
    /// After a failed send of the job's chunks, finds those of `fresh`
    /// that landed all the same: where they are, by seq. The doubt stays
    /// when the look fails.
    pub(super) async fn look_at_tail(
        &self,
        job: JobId,
        doubt: Doubt,
        fresh: &[(&Chunk, &ChunkJson)],
    ) -> Result<BTreeMap<u64, KafkaPosition>, ResultError> {
        let partition = doubt.partition;
        let read = TailRead {
            topic: self.topic.clone(),
            job: job.to_string(),
            doubt,
            wanted: fresh
                .iter()
                .map(|(chunk, json)| (chunk.chunk_seq, ChunkJson::clone(json)))
                .collect(),
        };
        match self
            .readers
            .with_reader(move |consumer| find_at_tail(consumer, &read))
            .await
        {
            Ok(found) => {
                if !found.is_empty() {
                    info!(%job, partition, chunks = ?found.keys().collect::<Vec<_>>(),
                        "chunks whose send failed had landed; indexed where they are, not sent again");
                }
                Ok(found)
            }
            Err(e) => {
                self.doubts.failed(job, doubt);
                Err(e)
            }
        }
    }
}

/// What to look for at a partition's tail.
struct TailRead {
    topic: String,
    job: String,
    doubt: Doubt,
    /// The chunks about to be sent, by seq, as they would be sent.
    wanted: BTreeMap<u64, ChunkJson>,
}

/// Reads the partition from just after the doubt's floor to its end and
/// returns where each wanted chunk is, when it is there with the same
/// content. Fails (and nothing may be sent again) unless the read reached
/// the partition's end.
fn find_at_tail(
    consumer: &BaseConsumer,
    read: &TailRead,
) -> Result<BTreeMap<u64, KafkaPosition>, ResultError> {
    let Doubt { partition, floor } = read.doubt;
    let from = floor.saturating_add(1).max(0);
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(&read.topic, partition, rdkafka::Offset::Offset(from))
        .map_err(kafka_error)?;
    consumer.assign(&assignment).map_err(kafka_error)?;

    let deadline = Instant::now() + TAIL_READ_TIMEOUT;
    let mut found = BTreeMap::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ResultError::Timeout);
        }
        let message = match consumer.poll(remaining) {
            None => return Err(ResultError::Timeout),
            Some(Err(KafkaError::PartitionEOF(p))) if p == partition => return Ok(found),
            Some(Err(KafkaError::PartitionEOF(_))) => continue,
            Some(Err(e)) if is_transient(&e) => continue,
            Some(Err(e)) => return Err(kafka_error(e)),
            Some(Ok(message)) => message,
        };
        if message.topic() != read.topic
            || message.partition() != partition
            || message.offset() < from
        {
            continue;
        }
        let Some((job, seq)) = message.headers().and_then(job_and_seq) else {
            continue;
        };
        if job != read.job || found.contains_key(&seq) {
            continue;
        }
        let same = read
            .wanted
            .get(&seq)
            .is_some_and(|json| message.payload() == Some(json.as_bytes()));
        if same {
            found.insert(seq, message.offset());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_keeps_the_lowest_floor_of_its_failed_sends() {
        let doubts = Doubts::default();
        let job = JobId::new();
        let doubt = |floor| Doubt {
            partition: 1,
            floor,
        };
        doubts.failed(job, doubt(10));
        doubts.failed(job, doubt(4));
        doubts.failed(job, doubt(12));
        assert_eq!(doubts.take(job), Some(doubt(4)));
        assert_eq!(doubts.take(job), None);
    }

    #[test]
    fn the_floor_follows_the_latest_acknowledgement() {
        let tails = Tails::new(&[0, 7]);
        assert_eq!(tails.floor(0), -1, "an empty partition");
        assert_eq!(tails.floor(1), 6);
        tails.acknowledged(1, 9);
        tails.acknowledged(1, 2);
        assert_eq!(tails.floor(1), 2, "a broker that started again from 0");
        assert_eq!(tails.floor(5), -1, "a partition it does not know");
    }
}
