//! The result topic's producers, replaced when they can no longer produce.
//!
//! Two producers share the work: `prompt` sends each message at once (a
//! job's first chunk, which a dashboard waits for, and its last); `bulk`
//! lingers up to `BULK_LINGER_MS` and sends a job's later batches in
//! requests of `BULK_BATCH_MESSAGES`, which a full batch reaches at once.
//! Sent at once, a long job's messages woke librdkafka's broker thread
//! for every few of them; in bulk a long job takes about an eighth less
//! CPU, and in requests of 256 rather than 64 the broker and the broker
//! thread spend less again on each message (`docs/PERFORMANCE.md`). A
//! job's batches go one after another (each acknowledged before the next
//! is sent), so its chunks stay in order across the two.
//!
//! An idempotent producer can end up fenced for good: after a request
//! timed out and its reply was lost, librdkafka bumps the producer's epoch
//! and the broker may answer every later message with `ProducerFenced`
//! (seen against tansu with the broker's replies dropped for 10 s, in the
//! fault suite). Every job would then fail until a restart. So producers
//! that report such an error are replaced by new ones (new producer ids,
//! their own sequence numbers); the failed publish is retried by the
//! worker and goes out on the new ones.

use std::sync::{PoisonError, RwLock};

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer, PurgeConfig};
use tracing::warn;

/// How long the bulk producer waits for a batch to fill, and the batch
/// that sends at once. The worker's later publishes take up to 64, 128,
/// 256, then 512 chunks a time, what the query has ready (`worker/run.rs`),
/// so a long job whose rows keep up fills 256-message requests from its
/// third batch on, and its smaller batches wait the linger. A request
/// also ends at librdkafka's `batch.size` (1 MB): with chunks over about
/// 4 KB a 256-message request is cut by bytes first, and its rest may wait
/// the linger (with requests cut at 300 KB, 256 was still no slower than
/// 64: `docs/PERFORMANCE.md`).
pub const BULK_LINGER_MS: &str = "5";
pub const BULK_BATCH_MESSAGES: &str = "256";

/// The two producers in use.
#[derive(Clone)]
pub struct Producers {
    prompt: FutureProducer,
    bulk: FutureProducer,
}

impl Producers {
    fn create(configs: &[ClientConfig; 2]) -> Result<Producers, KafkaError> {
        Ok(Producers {
            prompt: configs[0].create()?,
            bulk: configs[1].create()?,
        })
    }

    /// The producer that sends at once.
    pub fn prompt(&self) -> &FutureProducer {
        &self.prompt
    }

    /// The producer for a send of `messages` messages together.
    pub fn for_send(&self, messages: usize) -> &FutureProducer {
        if messages > 1 {
            &self.bulk
        } else {
            &self.prompt
        }
    }

    fn both(&self) -> [&FutureProducer; 2] {
        [&self.prompt, &self.bulk]
    }

    /// Waits until every message handed to either is delivered.
    pub fn flush(&self, timeout: std::time::Duration) -> Result<(), KafkaError> {
        self.both().into_iter().try_for_each(|p| p.flush(timeout))
    }
}

/// The producers in use, with a generation that counts replacements.
pub struct ReplaceableProducers {
    /// The prompt producer's settings, then the bulk one's.
    configs: [ClientConfig; 2],
    current: RwLock<(Producers, u64)>,
}

impl ReplaceableProducers {
    /// `prompt` and `bulk` are the two producers' settings.
    pub fn new(
        prompt: ClientConfig,
        bulk: ClientConfig,
    ) -> Result<ReplaceableProducers, KafkaError> {
        let configs = [prompt, bulk];
        let producers = Producers::create(&configs)?;
        Ok(ReplaceableProducers {
            configs,
            current: RwLock::new((producers, 0)),
        })
    }

    /// The producers to use now, and their generation (for `replace_after`).
    pub fn current(&self) -> (Producers, u64) {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the producers of `generation` when `error` says they can
    /// no longer produce; producers already replaced (by another publish
    /// that saw the same error) are left alone. Says whether it replaced
    /// them.
    pub fn replace_after(&self, error: &KafkaError, generation: u64) -> bool {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let fatal = (current.0.both().iter()).any(|p| p.client().fatal_error().is_some());
        if current.1 != generation || !(is_fencing(error) || fatal) {
            return false;
        }
        warn!(%error, generation = generation + 1, "the Kafka producers can no longer produce; replacing them");
        self.create_in(&mut current)
    }

    /// Replaces the producers whatever their state: their idempotence
    /// state and metadata belong to a topic the broker lost. What they
    /// still hold is purged, so the sends waiting on them fail now (and are
    /// retried on the new ones) instead of when their messages time out.
    pub fn replace(&self, why: &str) -> bool {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        warn!(
            generation = current.1 + 1,
            "{why}; replacing the Kafka producers"
        );
        let old = current.0.clone();
        let replaced = self.create_in(&mut current);
        drop(current);
        if replaced {
            for producer in old.both() {
                producer.purge(PurgeConfig::default().queue().inflight());
            }
        }
        replaced
    }

    fn create_in(&self, current: &mut (Producers, u64)) -> bool {
        match Producers::create(&self.configs) {
            Ok(producers) => {
                *current = (producers, current.1 + 1);
                true
            }
            Err(e) => {
                warn!(error = %e, "could not create new Kafka producers; keeping the old ones");
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
