//! Scenario 6: the producer's fatal error. rdkafka's `MockCluster` answers
//! a produce request with `OutOfOrderSequenceNumber`; for the head of the
//! line librdkafka takes that for a desynchronised idempotent producer and
//! raises a fatal error, after which that producer sends nothing. The
//! result topic replaces it and the retry goes out on the new one. The mock
//! does not deduplicate idempotent retries, so duplicates are not counted
//! here (scenarios 3 and 4 count them on tansu).

use std::sync::Arc;

use pseudostream::coord::memory::MemoryChunkIndex;
use pseudostream::model::{JobId, Offset};
use pseudostream::results::ResultTopic;
use pseudostream::results::kafka::{Compression, KafkaResultTopic};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use super::broker::stream_through;
use crate::kafka_results::chunk;

const OUT_OF_ORDER: RDKafkaRespErr = RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER;

fn mock_cluster() -> MockCluster<'static, DefaultProducerContext> {
    MockCluster::new(1).expect("rdkafka's mock cluster")
}

/// The result topic on its own: the publish that meets the fatal error
/// fails, the producer is replaced, and the same chunk published again
/// lands; the job's chunks read back without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_replaces_the_producer() {
    let mock = mock_cluster();
    mock.create_topic("results", 2, 1).unwrap();
    let topic = KafkaResultTopic::connect(
        &mock.bootstrap_servers(),
        "results",
        2,
        Compression::None,
        Arc::new(MemoryChunkIndex::new()),
    )
    .await
    .unwrap();
    let (job, offset) = (JobId::new(), Offset(7));
    for seq in 0..2 {
        topic
            .publish(&chunk(job, offset, seq, false))
            .await
            .unwrap();
    }

    mock.request_errors(RDKafkaApiKey::Produce, &[OUT_OF_ORDER]);
    let failed = topic.publish(&chunk(job, offset, 2, false)).await;
    assert!(failed.is_err(), "the publish that met the error fails");
    assert_eq!(topic.producer_replacements(), 1, "the producer is replaced");
    topic.publish(&chunk(job, offset, 2, false)).await.unwrap();
    topic.publish(&chunk(job, offset, 3, true)).await.unwrap();

    let seqs: Vec<u64> = topic
        .read(job, offset, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|c| {
            serde_json::from_str::<serde_json::Value>(c).unwrap()["chunkSeq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [0, 1, 2, 3]);
}

/// The service: a job streaming when the fatal error comes completes, and
/// its stream checks out (chunkSeq without a gap, rows equal to a direct
/// query, its audit row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: needs redis-server, initdb and pg_ctl, runuser"]
async fn after_a_fatal_producer_error_the_job_resumes_without_a_gap() {
    let mock = mock_cluster();
    let job = stream_through(
        mock.bootstrap_servers(),
        |config| {
            mock.create_topic(&config.kafka_topic, config.kafka_partitions, 1)
                .unwrap();
        },
        async |job| {
            mock.request_errors(RDKafkaApiKey::Produce, &[OUT_OF_ORDER]);
            job.open();
        },
    )
    .await;
    eprintln!(
        "fatal producer error: {} chunks, the job completed",
        job.chunks
    );
}
