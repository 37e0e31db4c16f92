//! Tenancy, as a table: every endpoint that takes a job id or an offset,
//! called by another tenant with the first tenant's ids, answers exactly as
//! for ids that do not exist; the audit trail is for `ops` of the tenant.

use serde_json::{Value, json};

use crate::support::*;

/// (method, path with `{id}` and `{offset}`)
const ENDPOINTS: [(&str, &str); 8] = [
    ("GET", "/v1/jobs/{id}"),
    ("GET", "/v1/jobs/{id}/chunks"),
    ("GET", "/v1/jobs/{id}/chunks?from=0&limit=5&wait=1"),
    ("DELETE", "/v1/jobs/{id}"),
    ("GET", "/v1/offsets/{offset}"),
    ("GET", "/v1/offsets/{offset}/chunks"),
    ("GET", "/v1/offsets/{offset}/chunks?from=0&wait=1"),
    ("GET", "/v1/offsets/{offset}/chunks?wait=26"),
];

/// No job has this id, and a fresh server's pool never gets this far.
const MISSING_ID: &str = "01890000-0000-7000-8000-000000000000";
const MISSING_OFFSET: &str = "999";

async fn call(server: &Server, key: &str, method: &str, path: &str) -> (u16, Value) {
    match method {
        "GET" => server.get(key, path).await,
        "DELETE" => server.delete(key, path).await,
        other => unreachable!("{other}"),
    }
}

/// Status, problem type and detail with the id or offset taken out.
fn answer((status, body): (u16, Value), id: &str, offset: &str) -> (u16, Value, String) {
    let detail = body["detail"]
        .as_str()
        .unwrap_or_default()
        .replace(id, "{id}")
        .replace(&format!("offset {offset} "), "offset {offset} ");
    (status, body["type"].clone(), detail)
}

#[tokio::test]
async fn another_tenants_ids_look_like_missing_ones() {
    let server = Server::start().await;
    let job = server.submit(ALICE, "status = 503").await;
    let id = job["jobId"].as_str().unwrap().to_owned();
    let offset = job["offset"].to_string();
    server.read_all(ALICE, &id).await;
    for (method, template) in ENDPOINTS {
        let path =
            |id: &str, offset: &str| template.replace("{id}", id).replace("{offset}", offset);
        let theirs = call(&server, ZED_OTHER_TENANT, method, &path(&id, &offset)).await;
        let missing = call(
            &server,
            ZED_OTHER_TENANT,
            method,
            &path(MISSING_ID, MISSING_OFFSET),
        )
        .await;
        let missing_for_owner =
            call(&server, ALICE, method, &path(MISSING_ID, MISSING_OFFSET)).await;
        let what = format!("{method} {template}: {theirs:?} vs {missing:?}");
        assert_eq!(theirs.0, 404, "{what}");
        assert_eq!(
            answer(theirs, &id, &offset),
            answer(missing.clone(), MISSING_ID, MISSING_OFFSET),
            "{what}"
        );
        assert_eq!(
            answer(missing, MISSING_ID, MISSING_OFFSET),
            answer(missing_for_owner, MISSING_ID, MISSING_OFFSET),
            "{what}: the caller's tenant changes nothing"
        );
    }
    // None of it touched the job.
    let (status, view) = server.get(ALICE, &format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(view["cancelRequested"], false);
    assert_eq!(view["status"], "completed");
    server.stop().await;
}

#[tokio::test]
async fn idempotency_keys_and_listings_stay_in_their_tenant() {
    let server = Server::start().await;
    let body = json!({ "filter": "status = 504", "timeRange": { "last": "7d" } });
    let mut ids = Vec::new();
    for key in [ALICE, ZED_OTHER_TENANT] {
        let response = server
            .http
            .post(server.url("/v1/jobs"))
            .bearer_auth(key)
            .header("idempotency-key", "shared-key")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let accepted: Value = response.json().await.unwrap();
        assert_eq!(accepted["deduplicated"], false, "no sharing across tenants");
        ids.push(accepted["jobId"].clone());
    }
    assert_ne!(ids[0], ids[1]);
    let (_, list) = server.get(ZED_OTHER_TENANT, "/v1/jobs").await;
    let listed: Vec<&Value> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| &j["jobId"])
        .collect();
    assert_eq!(listed, [&ids[1]]);
    server.stop().await;
}

#[tokio::test]
async fn the_audit_trail_needs_ops_and_shows_only_the_tenant() {
    let server = Server::start().await;
    let job = server.submit(ALICE, "status = 505").await;
    for key in [ALICE, BOB, ZED_OTHER_TENANT] {
        let (status, problem) = server.get(key, "/v1/audit").await;
        assert_eq!(status, 403, "{problem}");
        assert_eq!(
            problem["type"],
            "https://pseudostream.dev/problems/forbidden"
        );
    }
    let (status, audit) = server.get(OLGA_OPS, "/v1/audit").await;
    assert_eq!(status, 200);
    assert_eq!(audit["entries"][0]["jobId"], job["jobId"]);
    for path in ["/v1/audit", "/v1/audit?user=alice"] {
        let (status, audit) = server.get(ZOE_OTHER_TENANT_OPS, path).await;
        assert_eq!(status, 200, "{audit}");
        assert_eq!(audit["entries"], json!([]), "{path}");
    }
    server.stop().await;
}
