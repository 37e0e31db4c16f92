//! Creating topics and reading their partition count: the admin calls made
//! at start.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

use super::{kafka_error, unavailable};
use crate::results::ResultError;

/// Bound on admin and metadata calls at connect.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Creates `topic` with `partitions` and the result topic's settings
/// (compacted) unless it exists.
pub async fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> Result<(), ResultError> {
    // Compaction keeps the latest message per key, so tombstones eventually
    // remove an expired job's chunks from the log.
    ensure_topic_with_policy(brokers, topic, partitions, "compact").await
}

/// Creates `topic` unless it exists, with the given `cleanup.policy`.
pub(crate) async fn ensure_topic_with_policy(
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

pub(super) async fn partition_count(brokers: &str, topic: &str) -> Result<i32, ResultError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(unavailable)?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        // A freshly created topic may take a moment to show its partitions.
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        loop {
            let metadata = consumer
                .fetch_metadata(Some(&topic), ADMIN_TIMEOUT)
                .map_err(kafka_error)?;
            let count = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map_or(0, |t| t.partitions().len());
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
