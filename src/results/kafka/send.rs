//! Handing messages to a producer (a lone message to the prompt one, a
//! batch to the bulk one: `producer.rs`) and waiting for their
//! acknowledgements, watching for a broker that lost the topic while a
//! wait stalls.
//!
//! A batch's messages are all queued first and their acknowledgements then
//! awaited in order, by the one task that sent them. Acknowledgements of a
//! partition come back in order, so most are already there when their turn
//! comes, and cost no timer and no wake-up. A Kafka job's CPU goes largely
//! to its messages (`docs/PERFORMANCE.md`), so what each one costs here is
//! its record and its delivery report.

use std::time::Duration;

use futures::FutureExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use tokio::time::Instant;

use super::loss::Loss;
use super::{KafkaPosition, KafkaResultTopic, PUBLISH_TIMEOUT, STALLED_AFTER, kafka_error};
use crate::results::ResultError;

/// How long a full local queue is waited out before queuing again.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(50);

/// One message for the result topic.
pub(super) struct Outgoing<'a> {
    pub(super) key: String,
    /// `None` is a tombstone.
    pub(super) payload: Option<&'a str>,
    pub(super) headers: OwnedHeaders,
}

/// Where a message landed: its partition and position.
pub(super) type Landed = Result<(i32, KafkaPosition), ResultError>;

impl KafkaResultTopic {
    /// Sends one message and waits for its acknowledgement.
    pub(super) async fn produce(&self, partition: i32, message: Outgoing<'_>) -> Landed {
        let mut landed = self.produce_all(partition, vec![message]).await;
        landed.pop().unwrap_or(Err(ResultError::Timeout))
    }

    /// Sends `messages` to `partition`, all in flight together, and waits
    /// for every acknowledgement within one `PUBLISH_TIMEOUT`; returns
    /// where each landed, in the order given.
    // The error `send_result` returns hands the record back, as rdkafka has it.
    #[allow(clippy::result_large_err)]
    pub(super) async fn produce_all(
        &self,
        partition: i32,
        messages: Vec<Outgoing<'_>>,
    ) -> Vec<Landed> {
        let (producers, generation) = self.producers.current();
        let producer = producers.for_send(messages.len());
        let (floor, incarnation) = (self.tails.floor(partition), self.incarnations.current());
        let deadline = Instant::now() + PUBLISH_TIMEOUT;
        let mut queued = Vec::with_capacity(messages.len());
        for Outgoing {
            key,
            payload,
            headers,
        } in messages
        {
            let mut record = FutureRecord::<str, str>::to(&self.topic)
                .partition(partition)
                .key(&key)
                .headers(headers);
            if let Some(payload) = payload {
                record = record.payload(payload);
            }
            let send = |record| producer.send_result(record);
            let stalled = || self.look_and_recover();
            queued.push(queue(record, deadline, STALLED_AFTER, send, stalled).await);
        }
        let mut landed = Vec::with_capacity(queued.len());
        let mut looked = false;
        for delivery in queued {
            let outcome = match delivery {
                Ok(delivery) => self.acknowledgement(delivery, deadline).await,
                Err(e) => Some(Err(e)),
            };
            landed.push(match outcome {
                None => Err(ResultError::Timeout),
                Some(Err(e)) => {
                    // Retried by the caller, on a new producer if this one is
                    // done; if not, the topic is looked at, once a batch (a
                    // look can take seconds, and a batch's messages tend to
                    // fail together).
                    if !self.producers.replace_after(&e, generation) && !looked {
                        looked = true;
                        self.look_and_recover().await;
                    }
                    Err(kafka_error(e))
                }
                Some(Ok(place)) => {
                    self.acknowledged(partition, floor, incarnation, place)
                        .await;
                    Ok(place)
                }
            });
        }
        landed
    }

    /// Waits for one message's acknowledgement until `deadline` (`None`
    /// past it); a wait that stalls has the topic looked at meanwhile.
    async fn acknowledgement(
        &self,
        mut delivery: DeliveryFuture,
        deadline: Instant,
    ) -> Option<Result<(i32, KafkaPosition), KafkaError>> {
        if let Some(outcome) = (&mut delivery).now_or_never() {
            return Some(delivered(outcome));
        }
        loop {
            let stalled_at = deadline.min(Instant::now() + STALLED_AFTER);
            if let Ok(outcome) = tokio::time::timeout_at(stalled_at, &mut delivery).await {
                return Some(delivered(outcome));
            }
            if Instant::now() >= deadline {
                return None;
            }
            // A broker that lost the topic lets messages wait: look at it,
            // while still waiting.
            let loss = tokio::select! {
                outcome = &mut delivery => return Some(delivered(outcome)),
                loss = self.look_for_loss() => loss,
            };
            // Not cut off by the deadline: a recovery begun is finished.
            if let Some(loss) = loss {
                self.recover_from_loss(loss).await;
            }
        }
    }

    /// Looks at the topic and, if the broker lost it, recovers.
    async fn look_and_recover(&self) {
        if let Some(loss) = self.look_for_loss().await {
            self.recover_from_loss(loss).await;
        }
    }

    /// Notes an acknowledged position, and a loss when it lies at or before
    /// one acknowledged before the message was sent.
    async fn acknowledged(
        &self,
        partition: i32,
        floor: KafkaPosition,
        incarnation: u64,
        (landed_in, position): (i32, KafkaPosition),
    ) {
        // A position is unknown (-1) when the broker did not say.
        if (0..=floor).contains(&position) {
            let why = format!(
                "a message landed at position {position} of partition {partition}, at or before {floor}, acknowledged earlier"
            );
            self.recover_from_loss(Loss {
                seen: incarnation,
                why,
            })
            .await;
        }
        self.tails.acknowledged(landed_in, position);
    }
}

/// Hands `record` to the producer's local queue with `send`. A full queue
/// is waited out until `deadline`, with `stalled` run every `look_every`
/// of it (a broker that lost the topic lets the queue fill up); past the
/// deadline the message is not handed over, and has timed out.
async fn queue<R, D, Look: Future<Output = ()>>(
    mut record: R,
    deadline: Instant,
    look_every: Duration,
    mut send: impl FnMut(R) -> Result<D, (KafkaError, R)>,
    mut stalled: impl FnMut() -> Look,
) -> Result<D, KafkaError> {
    let mut look_at = Instant::now() + look_every;
    loop {
        if Instant::now() >= deadline {
            return Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut,
            ));
        }
        match send(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                if Instant::now() >= look_at {
                    stalled().await;
                    look_at = Instant::now() + look_every;
                }
                tokio::time::sleep(QUEUE_FULL_PAUSE).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// A delivery report as a position or the error it carries. The producer
/// is held until every report is in, so a report cannot go missing; if
/// one did, the message is taken as failed, and retried.
fn delivered(
    report: Result<OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
) -> Result<(i32, KafkaPosition), KafkaError> {
    match report {
        Ok(Ok(delivery)) => Ok((delivery.partition, delivery.offset)),
        Ok(Err((e, _))) => Err(e),
        Err(_) => Err(KafkaError::Canceled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: KafkaError = KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);

    #[tokio::test]
    async fn a_full_queue_is_waited_out() {
        let mut tries = 0;
        let deadline = Instant::now() + Duration::from_secs(1);
        let send = |record| {
            tries += 1;
            if tries < 3 {
                Err((FULL, record))
            } else {
                Ok(record)
            }
        };
        let queued = queue("chunk", deadline, STALLED_AFTER, send, || {
            std::future::ready(())
        });
        assert_eq!(queued.await.unwrap(), "chunk");
        assert_eq!(tries, 3);
    }

    #[tokio::test]
    async fn a_queue_full_until_the_deadline_times_the_message_out_and_looks_meanwhile() {
        let mut looks = 0;
        let deadline = Instant::now() + 6 * QUEUE_FULL_PAUSE;
        let send = |record| Err::<(), _>((FULL, record));
        let queued = queue("chunk", deadline, QUEUE_FULL_PAUSE, send, || {
            looks += 1;
            std::future::ready(())
        });
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(matches!(queued.await, Err(e) if e == timed_out));
        assert!(looks >= 1, "a full queue was never looked into");
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let mut tries = 0;
        let send = |record| {
            tries += 1;
            let e = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
            Err::<(), _>((e, record))
        };
        let deadline = Instant::now() + PUBLISH_TIMEOUT;
        let queued = queue("chunk", deadline, STALLED_AFTER, send, || {
            std::future::ready(())
        });
        assert!(queued.await.is_err());
        assert_eq!(tries, 1);
    }
}
