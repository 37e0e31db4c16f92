//! Rate limit and offset-pool exhaustion: clear 429/503 with Retry-After.

use std::time::Duration;

use pseudostream::config::RateLimit;

use crate::support::*;

#[tokio::test]
async fn a_second_new_job_within_the_period_is_429() {
    let mut config = config();
    config.rate_limit = RateLimit {
        count: 1,
        per: Duration::from_secs(3600),
    };
    let server = Server::start_with(config, Default::default()).await;
    let first = server.submit(ALICE, "status = 404").await;
    let response = server
        .http
        .post(server.url("/v1/jobs"))
        .bearer_auth(ALICE)
        .json(&serde_json::json!({ "filter": "status = 403", "timeRange": { "last": "7d" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 3600);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "https://pseudostream.dev/problems/rate-limited"
    );

    // Dedup hits are free; other users have their own allowance.
    assert_eq!(
        server.submit(ALICE, "status = 404").await["jobId"],
        first["jobId"]
    );
    server.submit(BOB, "status = 403").await;
    server.stop().await;
}

#[tokio::test]
async fn an_exhausted_pool_is_503_never_an_overwrite() {
    let mut config = config();
    config.offset_pool_size = 2;
    let server = Server::start_with(config, Default::default()).await;
    let a = server.submit(ALICE, "status = 200").await;
    let b = server.submit(ALICE, "status = 201").await;
    let mut offsets = vec![a["offset"].as_u64().unwrap(), b["offset"].as_u64().unwrap()];
    offsets.sort();
    assert_eq!(offsets, [0, 1], "round robin from the start");
    let response = server
        .http
        .post(server.url("/v1/jobs"))
        .bearer_auth(ALICE)
        .json(&serde_json::json!({ "filter": "status = 204", "timeRange": { "last": "7d" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "https://pseudostream.dev/problems/pool-exhausted"
    );
    // The holders are untouched.
    let (_, holder) = server
        .get(ALICE, &format!("/v1/offsets/{}", a["offset"]))
        .await;
    assert_eq!(holder["jobId"], a["jobId"]);
    server.stop().await;
}
