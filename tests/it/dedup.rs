//! Identical queries share one job, within a tenant only.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn the_same_filter_again_is_deduplicated() {
    let server = Server::start().await;
    let first = server
        .submit(ALICE, r#"service = "checkout" and status = 200"#)
        .await;
    // Reordered operands, extra parentheses, other whitespace: same query.
    let again = server
        .submit(BOB, "(status = 200)   AND service = \"checkout\"")
        .await;
    assert_eq!(again["deduplicated"], true);
    assert_eq!(again["jobId"], first["jobId"]);
    assert_eq!(again["offset"], first["offset"]);
    assert_eq!(again["fingerprint"], first["fingerprint"]);

    // Another tenant never shares.
    let other = server
        .submit(ZED_OTHER_TENANT, r#"service = "checkout" and status = 200"#)
        .await;
    assert_eq!(other["deduplicated"], false);
    assert_ne!(other["jobId"], first["jobId"]);

    // A semantic difference is a different job.
    let different = server
        .submit(ALICE, r#"service = "checkout" and status = 201"#)
        .await;
    assert_eq!(different["deduplicated"], false);
    server.stop().await;
}

/// "My jobs" lists the jobs a user started and the live ones they joined,
/// marked, a page at a time.
#[tokio::test]
async fn my_jobs_list_joined_jobs_and_page_by_cursor() {
    let server = Server::start().await;
    let older = server.submit(ALICE, r#"service = "search""#).await;
    let shared = server.submit(ALICE, r#"service = "checkout""#).await;
    let joined = server.submit(BOB, r#"service = "checkout""#).await;
    assert_eq!(joined["deduplicated"], true);
    assert_eq!(joined["jobId"], shared["jobId"]);

    let (status, bobs) = server.get(BOB, "/v1/jobs").await;
    assert_eq!(status, 200, "{bobs}");
    assert_eq!(bobs["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(bobs["jobs"][0]["jobId"], shared["jobId"]);
    assert_eq!(bobs["jobs"][0]["joined"], true);
    assert_eq!(bobs["next"], Value::Null);

    let response = server
        .http
        .get(server.url("/v1/jobs?limit=1"))
        .bearer_auth(ALICE)
        .send()
        .await
        .unwrap();
    let link = response.headers()["link"].to_str().unwrap().to_owned();
    let first: Value = response.json().await.unwrap();
    assert_eq!(first["jobs"][0]["jobId"], shared["jobId"]);
    assert_eq!(first["jobs"][0]["joined"], false);
    let next = first["next"].as_str().expect("a next page");
    assert_eq!(
        link,
        format!("</v1/jobs?limit=1&cursor={next}>; rel=\"next\"")
    );
    let (_, second) = server
        .get(ALICE, &format!("/v1/jobs?limit=1&cursor={next}"))
        .await;
    assert_eq!(second["jobs"][0]["jobId"], older["jobId"]);
    assert_eq!(second["next"], Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn twenty_concurrent_identical_submissions_end_on_one_job() {
    let mut config = config();
    // Even with a strict limit, identical submissions are free.
    config.rate_limit = pseudostream::config::RateLimit {
        count: 1,
        per: std::time::Duration::from_secs(3600),
    };
    let server = Server::start_with(config, Default::default()).await;
    let body = json!({ "filter": r#"endpoint ~ "^/api/v2" and latency_ms > 100"#, "timeRange": { "last": "3d" } });
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let http = server.http.clone();
        let url = server.url("/v1/jobs");
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(ALICE)
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }));
    }
    let mut ids = HashSet::new();
    let mut fresh = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 202, "{body}");
        ids.insert(body["jobId"].as_str().unwrap().to_owned());
        if body["deduplicated"] == false {
            fresh += 1;
        }
    }
    assert_eq!(ids.len(), 1, "one job for all");
    assert_eq!(fresh, 1, "exactly one submission started it");

    let (_, audit) = server.get(OLGA_OPS, "/v1/audit?user=alice").await;
    assert_eq!(
        audit["entries"].as_array().unwrap().len(),
        20,
        "every submission is audited"
    );
    server.stop().await;
}
