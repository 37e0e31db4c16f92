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
async fn users_of_two_tenants_with_one_name_have_their_own_allowance() {
    let other_bob = "key-bob-globex-01";
    let mut config = config();
    config
        .api_keys
        .push_str(&format!(",{other_bob}=bob:globex:query"));
    config.rate_limit = RateLimit {
        count: 1,
        per: Duration::from_secs(3600),
    };
    let server = Server::start_with(config, Default::default()).await;
    server.submit(other_bob, "status = 404").await;
    // bob of acme has not submitted yet: globex's bob used only his own.
    server.submit(BOB, "status = 404").await;
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

#[tokio::test]
async fn a_full_result_store_is_503_until_results_expire() {
    let mut config = config();
    // Past one byte of memory, chunks spill to the disk, which is full at
    // its first byte too.
    config.result_memory_bytes = 1;
    config.result_disk_bytes = 1;
    config.result_ttl = Duration::from_millis(300);
    config.expiry_interval = Duration::from_millis(50);
    let server = Server::start_with(config, Default::default()).await;
    let first = server.submit(ALICE, "status = 200").await;
    server
        .read_all(ALICE, first["jobId"].as_str().unwrap())
        .await;

    let body = serde_json::json!({ "filter": "status = 201", "timeRange": { "last": "7d" } });
    let (status, problem) = server.post(ALICE, "/v1/jobs", body.clone()).await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(
        problem["type"],
        "https://pseudostream.dev/problems/overloaded"
    );
    // A live identical query still shares the job: it costs no memory.
    assert_eq!(
        server.submit(BOB, "status = 200").await["deduplicated"],
        true
    );

    wait_until(
        "expiry frees the store",
        Duration::from_secs(10),
        || async { server.post(ALICE, "/v1/jobs", body.clone()).await.0 == 202 },
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn past_the_memory_budget_results_are_served_from_spill_files() {
    let in_memory = Server::start().await;
    let mut config = config();
    config.result_memory_bytes = 1;
    let data_dir = config.data_dir.clone();
    let spilling = Server::start_with(config, Default::default()).await;

    let mut results = Vec::new();
    for server in [&in_memory, &spilling] {
        let job = server.submit(ALICE, "status = 200").await;
        let chunks = server.read_all(ALICE, job["jobId"].as_str().unwrap()).await;
        assert!(chunks.len() > 2, "a result of several chunks");
        results.push(rows(&chunks));
    }
    assert_eq!(results[0], results[1]);

    let metrics = spilling.metrics().await;
    assert!(
        metrics.contains("pseudostream_result_bytes{where=\"memory\"} 0"),
        "{metrics}"
    );
    assert!(!metrics.contains("pseudostream_result_bytes{where=\"disk\"} 0\n"));
    // Spill files are unlinked as they are made: nothing to clean up.
    let left = std::fs::read_dir(data_dir.join("results")).unwrap().count();
    assert_eq!(left, 0);
    in_memory.stop().await;
    spilling.stop().await;
}
