//! `Idempotency-Key` on `POST /v1/jobs`: a retry gets the same job, without
//! another audit row or a rate-limit check; the key with another body is 422.

use std::time::Duration;

use pseudostream::config::RateLimit;
use pseudostream::jobs::Hooks;
use serde_json::{Value, json};

use crate::support::*;

async fn post_with_key(server: &Server, user_key: &str, key: &str, body: &Value) -> (u16, Value) {
    let response = server
        .http
        .post(server.url("/v1/jobs"))
        .bearer_auth(user_key)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn audit_rows(server: &Server, user: &str) -> usize {
    let (status, audit) = server
        .get(OLGA_OPS, &format!("/v1/audit?user={user}"))
        .await;
    assert_eq!(status, 200, "{audit}");
    audit["entries"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_retry_with_the_same_key_gets_the_same_job_unmetered_and_unaudited() {
    let mut config = config();
    // One new job per user per hour: a second admission would be 429.
    config.rate_limit = RateLimit {
        count: 1,
        per: Duration::from_secs(3600),
    };
    let server = Server::start_with(config, Hooks::default()).await;
    let body = json!({ "filter": "status = 500", "timeRange": { "last": "7d" } });
    let (status, first) = post_with_key(&server, ALICE, "order-7", &body).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["deduplicated"], false);
    for _ in 0..3 {
        let (status, again) = post_with_key(&server, ALICE, "order-7", &body).await;
        assert_eq!(status, 202, "{again}");
        assert_eq!(again["jobId"], first["jobId"]);
        assert_eq!(again["offset"], first["offset"]);
        assert_eq!(again["fingerprint"], first["fingerprint"]);
        assert_eq!(again["deduplicated"], false);
    }
    assert_eq!(audit_rows(&server, "alice").await, 1, "audited once");

    // The same key with another body is refused, and changes nothing.
    let other = json!({ "filter": "status = 501", "timeRange": { "last": "7d" } });
    let (status, problem) = post_with_key(&server, ALICE, "order-7", &other).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem["type"],
        "https://pseudostream.dev/problems/idempotency-key-reused"
    );
    // Without a key (or with a new one) the rate limit applies as before.
    let (status, _) = post_with_key(&server, ALICE, "order-8", &other).await;
    assert_eq!(status, 429);
    // Keys are per user: Bob's "order-7" is his own.
    let (status, bobs) = post_with_key(&server, BOB, "order-7", &other).await;
    assert_eq!(status, 202, "{bobs}");
    assert_ne!(bobs["jobId"], first["jobId"]);
    server.stop().await;
}

#[tokio::test]
async fn a_key_is_free_again_once_its_job_has_expired() {
    let mut config = config();
    config.result_ttl = Duration::from_millis(200);
    config.expiry_interval = Duration::from_millis(50);
    let server = Server::start_with(config, Hooks::default()).await;
    let body = json!({ "filter": "status = 404", "timeRange": { "last": "1d" } });
    let (status, first) = post_with_key(&server, ALICE, "k-expire", &body).await;
    assert_eq!(status, 202, "{first}");
    let id = first["jobId"].as_str().unwrap().to_owned();
    wait_until("the job expired", Duration::from_secs(30), || async {
        server.get(ALICE, &format!("/v1/jobs/{id}")).await.0 == 404
    })
    .await;
    let other = json!({ "filter": "status = 403", "timeRange": { "last": "1d" } });
    let (status, second) = post_with_key(&server, ALICE, "k-expire", &other).await;
    assert_eq!(status, 202, "{second}");
    assert_ne!(second["jobId"], first["jobId"]);
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_key_is_400() {
    let server = Server::start().await;
    let body = json!({ "filter": "", "timeRange": { "last": "1d" } });
    for key in [String::new(), "k".repeat(256), "tab\there".to_owned()] {
        let (status, problem) = post_with_key(&server, ALICE, &key, &body).await;
        assert_eq!(status, 400, "{key:?}: {problem}");
        assert_eq!(
            problem["type"],
            "https://pseudostream.dev/problems/invalid-parameter"
        );
        assert_eq!(problem["field"], "Idempotency-Key");
    }
    let (status, _) = post_with_key(&server, ALICE, &"k".repeat(255), &body).await;
    assert_eq!(status, 202);
    server.stop().await;
}

#[tokio::test]
async fn a_client_hanging_up_mid_admission_leaves_nothing_stuck() {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let hooks = Hooks {
        admission_gate: Some(gate.clone()),
        ..Hooks::default()
    };
    let server = Server::start_with(config(), hooks).await;
    let body = json!({ "filter": "status = 429", "timeRange": { "last": "7d" } });
    let client = {
        let (http, url, body) = (server.http.clone(), server.url("/v1/jobs"), body.clone());
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(ALICE)
                .header("idempotency-key", "hang-up")
                .json(&body)
                .send()
                .await
        })
    };
    // Held after leasing its offset, before the audit row and the insert.
    wait_until(
        "the admission holds an offset",
        Duration::from_secs(10),
        || async { server.get(ALICE, "/readyz").await.1["offsets"]["leased"] == 1 },
    )
    .await;
    client.abort();
    let _ = client.await;
    gate.add_permits(1);
    // The admission still completes: the job exists and the key replays it.
    wait_until("the job was admitted", Duration::from_secs(10), || async {
        server.get(ALICE, "/v1/jobs").await.1["jobs"]
            .as_array()
            .is_some_and(|jobs| jobs.len() == 1)
    })
    .await;
    let (_, list) = server.get(ALICE, "/v1/jobs").await;
    gate.add_permits(10);
    let (status, again) = post_with_key(&server, ALICE, "hang-up", &body).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["jobId"], list["jobs"][0]["jobId"]);
    server.stop().await;
}
