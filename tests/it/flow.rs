//! The whole flow a REST client and a dashboard see.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn submit_poll_until_last_then_read_the_offset() {
    let server = Server::start().await;
    let (status, accepted) = server
        .post(
            ALICE,
            "/v1/jobs",
            json!({
                "filter": r#"status >= 500 and service in ("checkout", "payments")"#,
                "timeRange": dataset_range(),
            }),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["deduplicated"], false);
    assert!(["queued", "running", "completed"].contains(&accepted["status"].as_str().unwrap()));
    let job_id = accepted["jobId"].as_str().unwrap();
    let offset = accepted["offset"].as_u64().unwrap();
    assert_eq!(accepted["fingerprint"].as_str().unwrap().len(), 64);
    assert_eq!(
        accepted["links"]["chunks"],
        format!("/v1/jobs/{job_id}/chunks")
    );

    let chunks = server.read_all(ALICE, job_id).await;
    let last = chunks.last().unwrap();
    assert_eq!(last["status"], "completed");
    assert_eq!(chunks.iter().filter(|c| c["isLast"] == true).count(), 1);
    let rows = rows(&chunks);
    assert_eq!(last["totalRows"].as_u64().unwrap(), rows.len() as u64);
    assert!(
        !rows.is_empty(),
        "the demo data has server errors in checkout/payments"
    );
    assert!(
        chunks
            .iter()
            .all(|c| c["rows"].as_array().unwrap().len() <= 10)
    );
    for row in &rows {
        assert!(row["status"].as_i64().unwrap() >= 500);
        assert!(["checkout", "payments"].contains(&row["service"].as_str().unwrap()));
        assert!(row["ts"].as_str().unwrap().ends_with('Z'));
    }
    let times: Vec<&str> = rows.iter().map(|r| r["ts"].as_str().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first by default"
    );

    let (status, job) = server.get(ALICE, &format!("/v1/jobs/{job_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(job["status"], "completed");
    assert_eq!(job["rows"].as_u64().unwrap(), rows.len() as u64);
    assert!(job["expiresAt"].is_string());

    let (status, by_offset) = server.get(ALICE, &format!("/v1/offsets/{offset}")).await;
    assert_eq!(status, 200);
    assert_eq!(by_offset["jobId"], job_id);
    let (status, page) = server
        .get(
            ALICE,
            &format!("/v1/offsets/{offset}/chunks?from=0&limit=2"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        page["chunks"].as_array().unwrap().len(),
        2.min(chunks.len())
    );
    assert_eq!(page["chunks"][0], chunks[0]);

    let (status, list) = server.get(ALICE, "/v1/jobs?status=completed").await;
    assert_eq!(status, 200);
    assert_eq!(list["jobs"][0]["jobId"], job_id);
    server.stop().await;
}

#[tokio::test]
async fn empty_result_is_one_last_chunk() {
    let server = Server::start().await;
    let accepted = server.submit(ALICE, r#"service = "no-such-service""#).await;
    let chunks = server
        .read_all(ALICE, accepted["jobId"].as_str().unwrap())
        .await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0]["isLast"], true);
    assert_eq!(chunks[0]["rows"].as_array().unwrap().len(), 0);
    assert_eq!(chunks[0]["totalRows"], 0);
    assert_eq!(chunks[0]["status"], "completed");
    server.stop().await;
}

#[tokio::test]
async fn submit_with_wait_includes_the_first_chunk() {
    let server = Server::start().await;
    let (status, body) = server
        .post(ALICE, "/v1/jobs?wait=5", json!({ "filter": "status = 200", "timeRange": { "last": "7d" }, "fields": ["ts", "status"] }))
        .await;
    assert_eq!(status, 202);
    let first = &body["firstChunk"];
    assert_eq!(first["chunkSeq"], 0);
    assert_eq!(first["rows"].as_array().unwrap().len(), 10);
    let row = first["rows"][0].as_object().unwrap();
    let mut keys: Vec<&str> = row.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["status", "ts"], "only the requested fields");
    server.stop().await;
}

#[tokio::test]
async fn row_cap_truncates_and_asc_order() {
    let server = Server::start().await;
    let (status, body) = server
        .post(
            ALICE,
            "/v1/jobs",
            json!({ "filter": "", "timeRange": { "last": "7d" }, "order": "asc", "maxRows": 25 }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let chunks = server
        .read_all(ALICE, body["jobId"].as_str().unwrap())
        .await;
    let rows = rows(&chunks);
    assert_eq!(rows.len(), 25);
    assert_eq!(chunks.len(), 3);
    let last = chunks.last().unwrap();
    assert_eq!(last["truncated"], true);
    assert_eq!(last["totalRows"], 25);
    let times: Vec<&str> = rows.iter().map(|r| r["ts"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let server = Server::start().await;
    let job = server.submit(ALICE, "status = 404").await;
    server.read_all(ALICE, job["jobId"].as_str().unwrap()).await;
    server.submit(BOB, "status = 404").await;
    let expected = [
        "pseudostream_jobs_accepted_total 1",
        "pseudostream_dedup_hits_total 1",
        "pseudostream_first_chunk_seconds_count 1",
        "pseudostream_jobs_finished_total{status=\"completed\"} 1",
        "pseudostream_offsets{state=\"leased\"} 1",
    ];
    // The worker counts a finished job just after publishing its last
    // chunk, on its own threads, so a reader can get there first.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let text = loop {
        let text = server.metrics().await;
        if expected.iter().all(|l| text.contains(l)) || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    for line in expected {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    assert!(
        text.contains("route=\"/v1/jobs/{job_id}/chunks\",method=\"GET\",status=\"200\""),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let server = Server::start().await;
    let response = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let ready: serde_json::Value = server
        .http
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["offsets"]["size"], 1000);
    for backend in ["coordination", "audit", "results"] {
        assert_eq!(ready["backends"][backend], "ok", "{ready}");
    }
    server.stop().await;
}
