//! A table of bad requests: each gets a 4xx problem+json with a stable type,
//! never a 500.

use crate::support::*;

/// Also read by `openapi`, which checks every status here is documented.
pub struct Case {
    pub name: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
    pub status: u16,
    pub problem: &'static str,
}

const fn post(name: &'static str, body: &'static str, status: u16, problem: &'static str) -> Case {
    Case {
        name,
        method: "POST",
        path: "/v1/jobs",
        content_type: "application/json",
        body,
        status,
        problem,
    }
}

const fn get(name: &'static str, path: &'static str, status: u16, problem: &'static str) -> Case {
    Case {
        name,
        method: "GET",
        path,
        content_type: "",
        body: "",
        status,
        problem,
    }
}

pub fn cases() -> Vec<Case> {
    vec![
        post("malformed json", "{", 400, "invalid-json"),
        post("not an object", "[]", 400, "invalid-json"),
        post(
            "missing filter",
            r#"{"timeRange": {"last": "7d"}}"#,
            400,
            "invalid-json",
        ),
        post(
            "missing time range",
            r#"{"filter": "status = 500"}"#,
            400,
            "invalid-json",
        ),
        post(
            "unknown body field",
            r#"{"filter": "", "timeRange": {"last": "7d"}, "colour": 1}"#,
            400,
            "invalid-json",
        ),
        post(
            "filter is a number",
            r#"{"filter": 5, "timeRange": {"last": "7d"}}"#,
            400,
            "invalid-json",
        ),
        post(
            "syntax error",
            r#"{"filter": "status >", "timeRange": {"last": "7d"}}"#,
            400,
            "filter-syntax",
        ),
        post(
            "unclosed paren",
            r#"{"filter": "(status = 500", "timeRange": {"last": "7d"}}"#,
            400,
            "filter-syntax",
        ),
        post(
            "unterminated string",
            r#"{"filter": "service = \"abc", "timeRange": {"last": "7d"}}"#,
            400,
            "filter-syntax",
        ),
        post(
            "unknown field",
            r#"{"filter": "colour = 1", "timeRange": {"last": "7d"}}"#,
            400,
            "unknown-field",
        ),
        post(
            "regex on integer",
            r#"{"filter": "status ~ \"5..\"", "timeRange": {"last": "7d"}}"#,
            400,
            "type-mismatch",
        ),
        post(
            "string for integer",
            r#"{"filter": "status = \"500\"", "timeRange": {"last": "7d"}}"#,
            400,
            "type-mismatch",
        ),
        post(
            "bad regex",
            r#"{"filter": "endpoint ~ \"(\"", "timeRange": {"last": "7d"}}"#,
            400,
            "invalid-regex",
        ),
        post(
            "huge regex",
            r#"{"filter": "endpoint ~ \"\\\\w{1000}\\\\w{1000}\\\\w{1000}\"", "timeRange": {"last": "7d"}}"#,
            400,
            "invalid-regex",
        ),
        post(
            "bad time literal",
            r#"{"filter": "ts > \"yesterday\"", "timeRange": {"last": "7d"}}"#,
            400,
            "invalid-literal",
        ),
        post(
            "range over 90 days",
            r#"{"filter": "", "timeRange": {"last": "91d"}}"#,
            400,
            "time-range-too-long",
        ),
        post(
            "from after to",
            r#"{"filter": "", "timeRange": {"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}}"#,
            400,
            "invalid-request",
        ),
        post(
            "not rfc3339",
            r#"{"filter": "", "timeRange": {"from": "2026-01-01", "to": "2026-01-02"}}"#,
            400,
            "invalid-request",
        ),
        post(
            "both absolute and relative",
            r#"{"filter": "", "timeRange": {"from": "2026-01-01T00:00:00Z", "last": "7d"}}"#,
            400,
            "invalid-request",
        ),
        post(
            "bad last",
            r#"{"filter": "", "timeRange": {"last": "a week"}}"#,
            400,
            "invalid-request",
        ),
        post(
            "bad maxStaleness",
            r#"{"filter": "", "timeRange": {"last": "7d"}, "maxStaleness": "fresh"}"#,
            400,
            "invalid-request",
        ),
        post(
            "unknown output field",
            r#"{"filter": "", "timeRange": {"last": "7d"}, "fields": ["nope"]}"#,
            400,
            "unknown-field",
        ),
        post(
            "bad order",
            r#"{"filter": "", "timeRange": {"last": "7d"}, "order": "sideways"}"#,
            400,
            "invalid-json",
        ),
        post(
            "zero max rows",
            r#"{"filter": "", "timeRange": {"last": "7d"}, "maxRows": 0}"#,
            400,
            "invalid-request",
        ),
        post(
            "max rows over cap",
            r#"{"filter": "", "timeRange": {"last": "7d"}, "maxRows": 500001}"#,
            400,
            "invalid-request",
        ),
        Case {
            name: "wrong content type",
            method: "POST",
            path: "/v1/jobs",
            content_type: "text/plain",
            body: "{}",
            status: 415,
            problem: "unsupported-media-type",
        },
        Case {
            name: "wait too long on submit",
            method: "POST",
            path: "/v1/jobs?wait=60",
            content_type: "application/json",
            body: r#"{"filter": "", "timeRange": {"last": "7d"}}"#,
            status: 400,
            problem: "invalid-parameter",
        },
        get("not a job id", "/v1/jobs/not-a-uuid", 404, "job-not-found"),
        get(
            "unknown job",
            "/v1/jobs/01890000-0000-7000-8000-000000000000",
            404,
            "job-not-found",
        ),
        get(
            "offset not a number",
            "/v1/offsets/abc",
            404,
            "offset-not-found",
        ),
        get("free offset", "/v1/offsets/999", 404, "offset-not-found"),
        get(
            "negative from",
            "/v1/jobs/01890000-0000-7000-8000-000000000000/chunks?from=-1",
            400,
            "invalid-parameter",
        ),
        get(
            "wait over the cap",
            "/v1/offsets/1/chunks?wait=26",
            404,
            "offset-not-found",
        ),
        get(
            "bad status filter",
            "/v1/jobs?status=done",
            400,
            "invalid-parameter",
        ),
        get("limit zero", "/v1/jobs?limit=0", 400, "invalid-parameter"),
        get(
            "a cursor the API did not give",
            "/v1/jobs?cursor=page-2",
            400,
            "invalid-parameter",
        ),
        get("unknown route", "/v2/everything", 404, "not-found"),
        Case {
            name: "wrong method",
            method: "PUT",
            path: "/v1/jobs",
            content_type: "",
            body: "",
            status: 405,
            problem: "method-not-allowed",
        },
    ]
}

#[tokio::test]
async fn every_bad_input_gets_a_clear_problem() {
    let server = Server::start().await;
    for case in cases() {
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
        let mut request = server
            .http
            .request(method, server.url(case.path))
            .bearer_auth(ALICE);
        if !case.content_type.is_empty() {
            request = request
                .header("content-type", case.content_type)
                .body(case.body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(status, case.status, "{}: {body}", case.name);
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{}",
            case.name
        );
        assert_eq!(
            body["type"],
            format!("https://pseudostream.dev/problems/{}", case.problem),
            "{}: {body}",
            case.name
        );
        assert!(
            body["title"].is_string() && body["detail"].is_string(),
            "{}",
            case.name
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn filter_errors_say_where_and_what_was_expected() {
    let server = Server::start().await;
    let (status, problem) = server
        .post(ALICE, "/v1/jobs", serde_json::json!({ "filter": "status = 500 and\n  colour = \"red\"", "timeRange": { "last": "7d" } }))
        .await;
    assert_eq!(status, 400);
    assert_eq!(problem["line"], 2);
    assert_eq!(problem["column"], 3);
    assert!(
        problem["expected"].as_str().unwrap().contains("status"),
        "{problem}"
    );
    assert!(
        problem["detail"].as_str().unwrap().starts_with("2:3:"),
        "{problem}"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let server = Server::start().await;
    let filter = "x".repeat(100 * 1024);
    let (status, problem) = server
        .post(
            ALICE,
            "/v1/jobs",
            serde_json::json!({ "filter": filter, "timeRange": { "last": "7d" } }),
        )
        .await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(
        problem["type"],
        "https://pseudostream.dev/problems/body-too-large"
    );
    let long_filter = "status = 1 or ".repeat(400) + "status = 2";
    let (status, problem) = server
        .post(
            ALICE,
            "/v1/jobs",
            serde_json::json!({ "filter": long_filter, "timeRange": { "last": "7d" } }),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(
        problem["type"],
        "https://pseudostream.dev/problems/filter-too-long"
    );
    server.stop().await;
}
