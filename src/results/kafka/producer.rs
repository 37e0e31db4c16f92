//! The result topic's producer, replaced when it can no longer produce.
//!
//! An idempotent producer can end up fenced for good: after a request
//! timed out and its reply was lost, librdkafka bumps the producer's epoch
//! and the broker may answer every later message with `ProducerFenced`
//! (seen against tansu with the broker's replies dropped for 10 s, in the
//! fault suite). Every job would then fail until a restart. So a producer
//! that reports such an error is replaced by a new one (a new producer id,
//! its own sequence numbers); the failed publish is retried by the worker
//! and goes out on the new producer.

use std::sync::{PoisonError, RwLock};

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer, PurgeConfig};
use tracing::warn;

/// The producer in use, with a generation that counts replacements.
pub struct ReplaceableProducer {
    config: ClientConfig,
    current: RwLock<(FutureProducer, u64)>,
}

impl ReplaceableProducer {
    pub fn new(config: ClientConfig) -> Result<ReplaceableProducer, KafkaError> {
        let producer = config.create()?;
        Ok(ReplaceableProducer {
            config,
            current: RwLock::new((producer, 0)),
        })
    }

    /// The producer to use now, and its generation (for `replace_after`).
    pub fn current(&self) -> (FutureProducer, u64) {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the producer of `generation` when `error` says it can no
    /// longer produce; a producer already replaced (by another publish that
    /// saw the same error) is left alone. Says whether it replaced it.
    pub fn replace_after(&self, error: &KafkaError, generation: u64) -> bool {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.1 != generation
            || !(is_fencing(error) || current.0.client().fatal_error().is_some())
        {
            return false;
        }
        warn!(%error, generation = generation + 1, "the Kafka producer can no longer produce; replacing it");
        self.create_in(&mut current)
    }

    /// Replaces the producer whatever its state: its idempotence state and
    /// metadata belong to a topic the broker lost. What it still holds is
    /// purged, so the sends waiting on it fail now (and are retried on the
    /// new one) instead of when their messages time out.
    pub fn replace(&self, why: &str) -> bool {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        warn!(
            generation = current.1 + 1,
            "{why}; replacing the Kafka producer"
        );
        let old = current.0.clone();
        let replaced = self.create_in(&mut current);
        drop(current);
        if replaced {
            old.purge(PurgeConfig::default().queue().inflight());
        }
        replaced
    }

    fn create_in(&self, current: &mut (FutureProducer, u64)) -> bool {
        match self.config.create() {
            Ok(producer) => {
                *current = (producer, current.1 + 1);
                true
            }
            Err(e) => {
                warn!(error = %e, "could not create a new Kafka producer; keeping the old one");
                false
            }
        }
    }
}

/// Errors after which an idempotent producer's messages keep failing.
fn is_fencing(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::UnknownProducerId
                | RDKafkaErrorCode::InvalidProducerIdMapping
                | RDKafkaErrorCode::Fatal
        )
    )
}
