//! Creating topics and reading their partition count: the admin calls made
//! at start.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::types::RDKafkaRespErr;

use super::{kafka_error, unavailable};
use crate::results::ResultError;

/// The result topic's `cleanup.policy`.
pub(super) const RESULT_TOPIC_POLICY: &str = "compact";

/// Bound on admin and metadata calls at connect.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Creates `topic` with `partitions` and the result topic's settings
/// (compacted) unless it exists.
pub async fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> Result<(), ResultError> {
    // Compaction keeps the latest message per key, so tombstones eventually
    // remove an expired job's chunks from the log.
    ensure_topic_with_policy(brokers, topic, partitions, RESULT_TOPIC_POLICY).await
}

/// Creates `topic` unless it exists, with the given `cleanup.policy`.
/// An existing topic is found in the metadata first, so a service whose
/// topic was made for it needs no right to create topics (nor a broker
/// that can: rdkafka's mock cluster cannot).
pub(crate) async fn ensure_topic_with_policy(
    brokers: &str,
    topic: &str,
    partitions: i32,
    cleanup_policy: &str,
) -> Result<(), ResultError> {
    if partitions_in_metadata(brokers, topic).await? > 0 {
        return Ok(());
    }
    create_topic(brokers, topic, partitions, cleanup_policy).await
}

/// Creates `topic`; one that exists already is left as it is.
pub(super) async fn create_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    cleanup_policy: &str,
) -> Result<(), ResultError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(unavailable)?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1))
        .set("cleanup.policy", cleanup_policy);
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let created = tokio::time::timeout(ADMIN_TIMEOUT, admin.create_topics([&new], &options))
        .await
        .map_err(|_| ResultError::Timeout)?
        .map_err(kafka_error)?;
    for outcome in created {
        match outcome {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(ResultError::Unavailable(format!(
                    "creating topic {name}: {code}"
                )));
            }
        }
    }
    Ok(())
}

/// The topic's partitions as the cluster's metadata has them now (0 for a
/// topic it does not know). A consumer asks: unlike a producer's, its
/// metadata requests never make the broker create the topic.
async fn partitions_in_metadata(brokers: &str, topic: &str) -> Result<usize, ResultError> {
    let consumer = metadata_client(brokers)?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || partitions_now(&consumer, &topic))
        .await
        .map_err(unavailable)?
}

/// Whether the cluster knows the topic: `false` only when its metadata
/// says the topic does not exist; an error when the broker does not answer
/// or the topic is in some other trouble (no leader yet, say).
pub(super) async fn topic_exists(brokers: &str, topic: &str) -> Result<bool, ResultError> {
    let consumer = metadata_client(brokers)?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let metadata = consumer
            .fetch_metadata(Some(&topic), ADMIN_TIMEOUT)
            .map_err(kafka_error)?;
        match metadata.topics().iter().find(|t| t.name() == topic) {
            None => Ok(false),
            Some(t) => match t.error() {
                None => Ok(true),
                Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => Ok(false),
                Some(e) => Err(ResultError::Unavailable(format!(
                    "the metadata of topic {topic} says {e:?}"
                ))),
            },
        }
    })
    .await
    .map_err(unavailable)?
}

fn metadata_client(brokers: &str) -> Result<BaseConsumer, ResultError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(unavailable)
}

fn partitions_now(consumer: &BaseConsumer, topic: &str) -> Result<usize, ResultError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
        .map_err(kafka_error)?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len()))
}

pub(super) async fn partition_count(brokers: &str, topic: &str) -> Result<i32, ResultError> {
    let consumer = metadata_client(brokers)?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        // A freshly created topic may take a moment to show its partitions.
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        loop {
            let count = partitions_now(&consumer, &topic)?;
            if count > 0 {
                return i32::try_from(count).map_err(unavailable);
            }
            if Instant::now() >= deadline {
                return Err(ResultError::Unavailable(format!(
                    "topic {topic} has no partitions in the cluster metadata"
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .map_err(unavailable)?
}

/// Each partition's end (its high watermark, the next position written).
pub(super) async fn partition_ends(
    brokers: &str,
    topic: &str,
    partitions: i32,
) -> Result<Vec<i64>, ResultError> {
    let consumer = metadata_client(brokers)?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        (0..partitions)
            .map(|partition| {
                consumer
                    .fetch_watermarks(&topic, partition, ADMIN_TIMEOUT)
                    .map(|(_, high)| high)
                    .map_err(kafka_error)
            })
            .collect()
    })
    .await
    .map_err(unavailable)?
}
