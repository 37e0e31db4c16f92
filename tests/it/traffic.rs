//! The traffic topic, read by a plain Kafka consumer: one HTTP Types record
//! per exchange, with who made it, and never a secret or a body.

use std::time::{Duration, Instant};

use rdkafka::message::Message;
use serde_json::{Value, json};

use crate::kafka_results::{Names, brokers, plain_consumer, redis_url};
use crate::support::*;

/// Every record on the topic's one partition so far, as JSON.
fn records(topic: &str) -> Vec<Value> {
    let consumer = plain_consumer(&crate::kafka_results::brokers(), topic, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            None => continue,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => panic!("consumer error: {e}"),
            Some(Ok(m)) => out.push(serde_json::from_slice(m.payload().unwrap()).unwrap()),
        }
    }
    out
}

#[tokio::test]
#[ignore = "needs Kafka at PSEUDOSTREAM_TEST_KAFKA_BROKERS (default 127.0.0.1:9092) and Redis"]
async fn every_exchange_goes_to_the_traffic_topic_without_secrets() {
    let names = Names::fresh();
    let traffic = format!("{}-traffic", names.topic);
    let mut config = config();
    config.kafka_brokers = Some(brokers());
    config.kafka_topic = names.topic.clone();
    config.redis_url = Some(redis_url());
    config.redis_prefix = names.prefix.clone();
    config.traffic_topic = Some(traffic.clone());
    let server = Server::start_with(config, Default::default()).await;

    let body = json!({ "filter": "status = 503", "timeRange": { "last": "1d" } });
    let response = server
        .http
        .post(server.url("/v1/jobs?wait=0"))
        .bearer_auth(ALICE)
        .header("idempotency-key", "secret-idempotency-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(server.get("not-a-key-at-all", "/v1/jobs").await.0, 401);

    // Records are produced off the request path: poll until both are there.
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let topic = traffic.clone();
        let seen = tokio::task::spawn_blocking(move || records(&topic))
            .await
            .unwrap();
        if seen.len() >= 2 {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "only {} records: {seen:?}",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let submit = seen
        .iter()
        .find(|r| r["request"]["method"] == "post")
        .expect("the submission");
    assert_eq!(submit["request"]["pathname"], "/v1/jobs");
    assert_eq!(submit["request"]["query"]["wait"], "0");
    assert_eq!(submit["response"]["statusCode"], 202);
    assert_eq!(submit["user"], "alice");
    assert_eq!(submit["tenant"], "acme");
    assert!(submit["durationMs"].as_f64().unwrap() >= 0.0);
    let refused = seen
        .iter()
        .find(|r| r["response"]["statusCode"] == 401)
        .expect("the refused request");
    assert!(refused.get("user").is_none(), "{refused}");
    let text = serde_json::to_string(&seen).unwrap();
    for secret in [
        ALICE,
        "not-a-key-at-all",
        "secret-idempotency-key",
        "status = 503",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    server.stop().await;
}
