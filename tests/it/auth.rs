//! API keys, tenant isolation and the ops-only audit trail.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn without_a_valid_key_every_route_is_401() {
    let server = Server::start().await;
    for path in ["/v1/jobs", "/v1/offsets/0", "/v1/audit"] {
        let response = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let (status, _) = server.get("not-a-key", path).await;
        assert_eq!(status, 401, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn another_tenant_sees_nothing() {
    let server = Server::start().await;
    let job = server.submit(ALICE, "status = 502").await;
    let id = job["jobId"].as_str().unwrap();
    let offset = job["offset"].as_u64().unwrap();
    for path in [
        format!("/v1/jobs/{id}"),
        format!("/v1/jobs/{id}/chunks"),
        format!("/v1/offsets/{offset}"),
        format!("/v1/offsets/{offset}/chunks"),
    ] {
        let (status, problem) = server.get(ZED_OTHER_TENANT, &path).await;
        assert_eq!(status, 404, "{path}: {problem}");
    }
    let (status, _) = server
        .delete(ZED_OTHER_TENANT, &format!("/v1/jobs/{id}"))
        .await;
    assert_eq!(status, 404);
    let (_, list) = server.get(ZED_OTHER_TENANT, "/v1/jobs").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0);
    // Same tenant, other user: may read the job (shared dashboards) but it is not in their list.
    let (status, _) = server.get(BOB, &format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200);
    let (_, list) = server.get(BOB, "/v1/jobs").await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0);
    server.stop().await;
}

#[tokio::test]
async fn the_audit_trail_is_for_ops_of_the_tenant() {
    let server = Server::start().await;
    let job = server.submit(ALICE, r#"region = "eu-west-1""#).await;
    server.read_all(ALICE, job["jobId"].as_str().unwrap()).await;
    let (status, problem) = server.get(ALICE, "/v1/audit").await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(
        problem["type"],
        "https://pseudostream.dev/problems/forbidden"
    );

    let (status, audit) = server.get(OLGA_OPS, "/v1/audit?user=alice").await;
    assert_eq!(status, 200);
    let entry = &audit["entries"][0];
    assert_eq!(entry["jobId"], job["jobId"]);
    assert_eq!(entry["user"], "alice");
    assert_eq!(entry["tenant"], "acme");
    assert_eq!(entry["filter"], r#"region = "eu-west-1""#);
    assert_eq!(entry["fingerprint"], job["fingerprint"]);
    assert_eq!(entry["offset"], job["offset"]);
    assert!(entry["submittedAt"].is_string());
    // The audit row follows the job a moment after its last chunk.
    wait_until(
        "the audit row says completed",
        std::time::Duration::from_secs(10),
        || async {
            server.get(OLGA_OPS, "/v1/audit?user=alice").await.1["entries"][0]["status"]
                == "completed"
        },
    )
    .await;
    let (_, audit) = server.get(OLGA_OPS, "/v1/audit?user=alice").await;
    let (_, view) = server
        .get(
            ALICE,
            &format!("/v1/jobs/{}", job["jobId"].as_str().unwrap()),
        )
        .await;
    assert_eq!(audit["entries"][0]["rows"], view["rows"]);
    assert!(audit["entries"][0]["firstChunkAt"].is_string());
    let (status, problem) = server.get(OLGA_OPS, "/v1/audit?from=yesterday").await;
    assert_eq!(status, 400, "{problem}");
    server.stop().await;
}

#[tokio::test]
async fn a_key_revoked_in_the_keys_file_is_refused_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api-keys");
    let added = "key-from-file-01";
    std::fs::write(&file, format!("# test keys\n{added}=fay:acme:query\n")).unwrap();
    let mut config = config();
    config.api_keys_file = Some(file.clone());
    let server = Server::start_with(config, Default::default()).await;
    assert_eq!(server.get(added, "/v1/jobs").await.0, 200);
    assert_eq!(
        server.get(ALICE, "/v1/jobs").await.0,
        200,
        "the configured list stays"
    );

    // Revoked by rewriting the file: no signal, no restart.
    std::fs::write(&file, "# fay left\n").unwrap();
    wait_until(
        "the revoked key is refused",
        Duration::from_secs(10),
        || async { server.get(added, "/v1/jobs").await.0 == 401 },
    )
    .await;
    assert_eq!(server.get(ALICE, "/v1/jobs").await.0, 200);
    server.stop().await;
}
