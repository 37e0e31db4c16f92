//! The broker losing its data (a broker that keeps it in memory, restarted).
//!
//! The topic is gone, or its partitions start again from position 0, and
//! with them every chunk published so far. Nothing says so at once:
//! librdkafka holds messages for a topic it cannot find until they time out
//! (25 s), and its idempotent producer's id means nothing to the new broker.
//! So a publish that stalls or fails has the topic looked at (`Topic
//! state` below), and a message acknowledged at or below a position
//! acknowledged before it was sent proves the loss outright.
//!
//! What follows a loss: the topic is made again, the producer is replaced
//! (and what it held purged), and every job whose chunks were in the topic
//! before is told so at its next publish (`ResultError::Lost`), so it ends
//! `failed` instead of completing with chunks missing. Each loss starts a
//! new *incarnation* of the topic; a job is known to be whole in the
//! incarnation it was started in (or last confirmed in).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, error};

use super::admin::{RESULT_TOPIC_POLICY, create_topic, partition_ends, topic_exists};
use super::reader::{Fetch, Needed};
use super::{KafkaResultTopic, unavailable};
use crate::model::JobId;
use crate::results::ResultError;

/// The topic is looked at no more often than this, however many publishes
/// stall together.
const LOOK_INTERVAL: Duration = Duration::from_secs(2);
/// A look that takes longer tells nothing (the broker is not answering).
const LOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// Jobs this process keeps more than this many entries for are forgotten
/// (a job that failed mid-stream leaves its entry until its expiry); a
/// forgotten job is only checked again by a read of its last chunk.
const MAX_TRACKED_JOBS: usize = 100_000;

/// The topic's incarnation, and the one each running job's chunks are in.
#[derive(Default)]
pub(super) struct Incarnations {
    current: AtomicU64,
    jobs: Mutex<HashMap<JobId, u64>>,
}

/// Whether a job's earlier chunks are in the topic as it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Continuity {
    /// In this incarnation: publish on.
    Whole,
    /// In an incarnation lost since.
    Lost,
    /// Not started by this process (taken over): its last chunk must be
    /// read to know.
    Unknown,
}

impl Incarnations {
    pub(super) fn current(&self) -> u64 {
        self.current.load(Ordering::SeqCst)
    }

    /// The topic lost its data since incarnation `seen`: every job before
    /// is lost. False when another look already said so.
    pub(super) fn lost_since(&self, seen: u64) -> bool {
        self.current
            .compare_exchange(seen, seen + 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Where `job`'s chunks before `seq` are.
    pub(super) fn continuity(&self, job: JobId, seq: u64) -> Continuity {
        if seq == 0 {
            return Continuity::Whole;
        }
        match crate::lock(&self.jobs).get(&job) {
            Some(&at) if at == self.current() => Continuity::Whole,
            Some(_) => Continuity::Lost,
            None => Continuity::Unknown,
        }
    }

    /// `job`'s chunks so far are in incarnation `at`: it started there, or
    /// a read found its last chunk there.
    pub(super) fn whole_in(&self, job: JobId, at: u64) {
        let mut jobs = crate::lock(&self.jobs);
        if jobs.len() >= MAX_TRACKED_JOBS && !jobs.contains_key(&job) {
            jobs.clear();
        }
        jobs.insert(job, at);
    }

    /// The job ended or was dropped.
    pub(super) fn forget(&self, job: JobId) {
        crate::lock(&self.jobs).remove(&job);
    }
}

/// A loss of the topic's data, seen in incarnation `seen`.
pub(super) struct Loss {
    pub(super) seen: u64,
    pub(super) why: String,
}

impl KafkaResultTopic {
    /// After a publish stalled or failed: is the topic gone, or are its
    /// partitions shorter than positions this process saw acknowledged?
    /// A broker that does not answer tells nothing, and neither does a
    /// look while another is under way.
    pub(super) async fn look_for_loss(&self) -> Option<Loss> {
        let seen = self.incarnations.current();
        let Ok(mut last) = self.last_look.try_lock() else {
            return None;
        };
        if last.is_some_and(|at| at.elapsed() < LOOK_INTERVAL) {
            return None;
        }
        *last = Some(Instant::now());
        // Taken before the ends: a position acknowledged after them would
        // look like one the partition no longer reaches.
        let floors = self.tails.floors();
        let look = async {
            if !topic_exists(&self.brokers, &self.topic).await? {
                return Ok(Some("the result topic is gone from the broker".to_owned()));
            }
            let ends = partition_ends(&self.brokers, &self.topic, self.partitions).await?;
            Ok::<_, ResultError>(shorter_partition(&floors, &ends).map(|(partition, end, floor)| {
                format!(
                    "partition {partition} of the result topic ends at {end}, before position {floor} acknowledged earlier"
                )
            }))
        };
        match tokio::time::timeout(LOOK_TIMEOUT, look).await {
            Ok(Ok(why)) => why.map(|why| Loss { seen, why }),
            Ok(Err(e)) => {
                debug!(error = %e, "could not look at the result topic");
                None
            }
            Err(_) => {
                debug!("the result topic's metadata did not come in time");
                None
            }
        }
    }

    /// The broker lost the topic's data: the topic is made again (when
    /// gone), a new producer replaces the one whose state the broker
    /// forgot, and every job before is lost. Once per loss, however many
    /// publishes saw it.
    pub(super) async fn recover_from_loss(&self, loss: Loss) {
        if !self.incarnations.lost_since(loss.seen) {
            return;
        }
        error!(
            why = loss.why,
            "the Kafka broker lost the result topic's data; jobs that published into it will fail"
        );
        self.tails.restart();
        self.readers.renew();
        // Made straight away: it is known to be gone, and asking a client
        // about a topic being made again has crashed librdkafka 2.12.1 here
        // (a use-after-free in its metadata cache).
        let made = create_topic(
            &self.brokers,
            &self.topic,
            self.partitions,
            RESULT_TOPIC_POLICY,
        );
        if let Err(e) = made.await {
            error!(error = %e, "could not make the result topic again; the next stalled publish looks again");
        }
        self.producers.replace("the broker lost the result topic");
    }

    /// Reads chunk `seq` of `job`, which this process did not publish (the
    /// job was taken over): whether the topic still has it tells whether
    /// the chunks before are whole.
    pub(super) async fn confirm_chunk(&self, job: JobId, seq: u64) -> Result<(), ResultError> {
        let place = self
            .index
            .places(job, seq..seq + 1)
            .await?
            .pop()
            .flatten()
            .ok_or_else(|| unavailable(format!("chunk {seq} of job {job} is not indexed")))?;
        let request = Fetch {
            topic: self.topic.clone(),
            partition: place.partition,
            job: job.to_string(),
            needed: BTreeMap::from([(
                seq,
                Needed {
                    position: place.position,
                    attempt: place.attempt,
                },
            )]),
        };
        self.readers.fetch(request).await.map(|_| ())
    }
}

/// The first partition that ends at or before a position acknowledged in
/// it: `(partition, end, floor)`.
fn shorter_partition(floors: &[i64], ends: &[i64]) -> Option<(usize, i64, i64)> {
    floors
        .iter()
        .zip(ends)
        .enumerate()
        .find(|(_, (floor, end))| **floor >= 0 && **end <= **floor)
        .map(|(partition, (floor, end))| (partition, *end, *floor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_makes_every_job_started_before_it_lost() {
        let incarnations = Incarnations::default();
        let (before, after, unknown) = (JobId::new(), JobId::new(), JobId::new());
        incarnations.whole_in(before, incarnations.current());
        assert_eq!(incarnations.continuity(before, 3), Continuity::Whole);
        assert!(incarnations.lost_since(0));
        assert!(!incarnations.lost_since(0), "one loss, however many see it");
        incarnations.whole_in(after, incarnations.current());
        assert_eq!(incarnations.continuity(before, 3), Continuity::Lost);
        assert_eq!(incarnations.continuity(after, 3), Continuity::Whole);
        assert_eq!(incarnations.continuity(unknown, 3), Continuity::Unknown);
        assert_eq!(
            incarnations.continuity(unknown, 0),
            Continuity::Whole,
            "a first chunk has nothing before it"
        );
        incarnations.forget(after);
        assert_eq!(incarnations.continuity(after, 3), Continuity::Unknown);
    }

    #[test]
    fn a_partition_shorter_than_an_acknowledged_position_was_lost() {
        assert_eq!(shorter_partition(&[-1, 4], &[0, 5]), None);
        assert_eq!(shorter_partition(&[-1, 4], &[0, 4]), Some((1, 4, 4)));
        assert_eq!(shorter_partition(&[3, 4], &[0, 9]), Some((0, 0, 3)));
    }
}
