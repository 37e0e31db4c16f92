//! The ops page and what it reads: the page and its assets under their
//! Content-Security-Policy, the overview (the pool by tenant, the last
//! hour) for ops keys only, and the audit search's paging and CSV.

use std::sync::Arc;
use std::time::Duration;

use pseudostream::config::RateLimit;
use pseudostream::jobs::Hooks;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::support::*;

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

#[tokio::test]
async fn the_page_and_its_assets_are_served_under_a_strict_policy() {
    let server = Server::start().await;
    let mut bodies = Vec::new();
    for (path, content_type) in [
        ("/ops", "text/html; charset=utf-8"),
        ("/ops/app.js", "text/javascript; charset=utf-8"),
        ("/ops/app.css", "text/css; charset=utf-8"),
    ] {
        // No key: the page holds no data, the key is typed into it.
        let response = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["content-security-policy"], POLICY, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert!(!headers.contains_key("set-cookie"), "{path}");
        bodies.push(response.text().await.unwrap());
    }
    let (html, js) = (&bodies[0], &bodies[1]);
    assert!(html.contains(r#"<script type="module" src="/ops/app.js"></script>"#));
    assert!(html.contains(r#"<link rel="stylesheet" href="/ops/app.css">"#));
    // The policy would block these anyway; the page must not need them.
    assert_eq!(html.matches("<script").count(), 1, "one external script");
    for inline in ["<style", " style=", " onclick=", " onload=", "javascript:"] {
        assert!(!html.contains(inline), "the page has {inline}");
    }
    for unsafe_sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "eval(",
        "new Function",
    ] {
        assert!(!js.contains(unsafe_sink), "the script uses {unsafe_sink}");
    }
    assert!(js.contains("sessionStorage"), "the key lives in the tab");
    server.stop().await;
}

#[tokio::test]
async fn the_overview_is_for_ops_keys_only() {
    let server = Server::start().await;
    let (status, body) = server.get(ALICE, "/v1/ops/overview").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["type"], "https://pseudostream.dev/problems/forbidden");
    assert!(
        body["detail"].as_str().unwrap().contains("`ops` role"),
        "{body}"
    );
    let response = server
        .http
        .get(server.url("/v1/ops/overview"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    server.stop().await;
}

async fn overview(server: &Server, key: &str) -> Value {
    let response = server
        .http
        .get(server.url("/v1/ops/overview"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

fn job_at(overview: &Value, job_id: &str) -> Option<Value> {
    overview["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["jobId"] == job_id)
        .cloned()
}

#[tokio::test]
async fn the_overview_shows_the_pool_by_tenant_and_the_last_hour() {
    let gate = Arc::new(Semaphore::new(0));
    let mut config = config();
    // One job an hour per user, so a second submission is a 429.
    config.rate_limit = RateLimit {
        count: 1,
        per: Duration::from_secs(3600),
    };
    let hooks = Hooks {
        chunk_gate: Some(gate.clone()),
        ..Hooks::default()
    };
    let server = Server::start_with(config, hooks).await;
    let ours = server.submit(ALICE, "status >= 500").await;
    let theirs = server.submit(ZED_OTHER_TENANT, "status >= 500").await;
    let (status, _) = server
        .post(
            ALICE,
            "/v1/jobs",
            json!({ "filter": "status = 404", "timeRange": { "last": "7d" } }),
        )
        .await;
    assert_eq!(status, 429);
    let id = ours["jobId"].as_str().unwrap();

    let seen = overview(&server, OLGA_OPS).await;
    assert_eq!(seen["caller"], json!({ "user": "olga", "tenant": "acme" }));
    assert_eq!(seen["pool"]["size"], 1000);
    assert_eq!(seen["pool"]["leased"], 2);
    assert_eq!(seen["pool"]["otherTenants"], json!([theirs["offset"]]));
    assert_eq!(seen["pool"]["admitting"], json!([]));
    assert_eq!(seen["jobs"].as_array().unwrap().len(), 1, "{seen}");
    let job = job_at(&seen, id).expect("our job");
    assert_eq!(job["offset"], ours["offset"]);
    assert_eq!(job["user"], "alice");
    assert_eq!(job["filter"], "status >= 500");
    assert_eq!(job["fingerprint"], ours["fingerprint"]);
    assert!(["queued", "running"].contains(&job["status"].as_str().unwrap()));
    // The other tenant's ops see their job, and ours only as taken.
    let theirs_seen = overview(&server, ZOE_OTHER_TENANT_OPS).await;
    assert!(job_at(&theirs_seen, id).is_none());
    assert_eq!(theirs_seen["pool"]["otherTenants"], json!([ours["offset"]]));

    let hour = &seen["lastHour"];
    let minutes = hour["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 60);
    assert_eq!(
        hour["firstChunkCounts"].as_array().unwrap().len(),
        hour["bucketBoundsSeconds"].as_array().unwrap().len() + 1
    );
    let rejected: u64 = minutes
        .iter()
        .map(|m| m["rateLimited"].as_u64().unwrap())
        .sum();
    assert_eq!(rejected, 1, "the 429 is counted");

    // Ops may cancel any job of their tenant; it ends, and keeps its
    // offset (shown as cancelled) until its result expires.
    let (status, body) = server.delete(OLGA_OPS, &format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 202, "{body}");
    gate.add_permits(10_000);
    wait_until(
        "the job shows as cancelled",
        Duration::from_secs(20),
        || async {
            job_at(&overview(&server, OLGA_OPS).await, id)
                .is_some_and(|j| j["status"] == "cancelled" && j["finishedAt"].is_string())
        },
    )
    .await;
    server
        .read_all(ZED_OTHER_TENANT, theirs["jobId"].as_str().unwrap())
        .await;
    let hour = &overview(&server, OLGA_OPS).await["lastHour"];
    let first_chunks: u64 = hour["firstChunkCounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert!(first_chunks >= 1, "{hour}");
    server.stop().await;
}

async fn audit_page(server: &Server, query: &str) -> (Value, Option<String>) {
    let response = server
        .http
        .get(server.url(&format!("/v1/audit?{query}")))
        .bearer_auth(OLGA_OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{query}");
    let link = response
        .headers()
        .get("link")
        .map(|l| l.to_str().unwrap().to_owned());
    (response.json().await.unwrap(), link)
}

#[tokio::test]
async fn the_audit_search_pages_by_cursor_and_exports_csv() {
    let server = Server::start().await;
    let mut jobs = Vec::new();
    for n in 0..5 {
        let job = server.submit(ALICE, &format!("status = {}", 500 + n)).await;
        jobs.push(job);
    }
    for job in &jobs {
        server.read_all(ALICE, job["jobId"].as_str().unwrap()).await;
    }

    // Two at a time: every entry once, newest first, the last page says so.
    let mut seen = Vec::new();
    let mut query = "limit=2&user=alice".to_owned();
    loop {
        let (page, link) = audit_page(&server, &query).await;
        for entry in page["entries"].as_array().unwrap() {
            seen.push(entry["jobId"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => {
                let link = link.expect("a Link to the next page");
                assert!(link.contains("user=alice"), "{link}");
                assert!(link.ends_with("rel=\"next\""), "{link}");
                query = format!("limit=2&user=alice&cursor={next}");
            }
            None => {
                assert!(link.is_none());
                break;
            }
        }
    }
    let mut expected: Vec<String> = jobs
        .iter()
        .rev()
        .map(|j| j["jobId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, expected);

    let fingerprint = jobs[2]["fingerprint"].as_str().unwrap();
    let (page, _) = audit_page(&server, &format!("fingerprint={fingerprint}")).await;
    assert_eq!(page["entries"][0]["jobId"], jobs[2]["jobId"]);
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    // The audit row follows the job a moment after its last chunk.
    wait_until(
        "every job is audited as completed",
        Duration::from_secs(10),
        || async {
            let (page, _) = audit_page(&server, "status=completed").await;
            page["entries"].as_array().unwrap().len() == 5
        },
    )
    .await;
    let (page, _) = audit_page(&server, "status=running").await;
    assert_eq!(page["entries"], json!([]));
    assert_eq!(page["next"], Value::Null);

    for (query, field) in [
        ("status=done", "status"),
        ("fingerprint=abc", "fingerprint"),
        ("cursor=not-a-cursor", "cursor"),
        ("format=xml", "format"),
    ] {
        let (status, body) = server.get(OLGA_OPS, &format!("/v1/audit?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["field"], field, "{body}");
    }

    // CSV, by parameter or by Accept: a header line, then a line per entry.
    for request in [
        server.http.get(server.url("/v1/audit?format=csv&limit=3")),
        server
            .http
            .get(server.url("/v1/audit?limit=3"))
            .header("accept", "text/csv"),
    ] {
        let response = request.bearer_auth(OLGA_OPS).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/csv; charset=utf-8"
        );
        assert!(response.headers().contains_key("link"), "more pages");
        let text = response.text().await.unwrap();
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("submissionId,jobId,fingerprint,user,tenant,offset,filter"));
        expected.truncate(3);
        for (line, job_id) in lines[1..].iter().zip(&expected) {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields[1], job_id, "{line}");
            assert_eq!(fields[3], "alice");
            assert_eq!(fields[11], "completed");
        }
    }
    // A query key gets no audit, in any format.
    let (status, _) = server.get(ALICE, "/v1/audit?format=csv").await;
    assert_eq!(status, 403);
    server.stop().await;
}
