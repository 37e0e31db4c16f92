//! What a hostile or careless client tried, each request with the answer it
//! must get, so none comes back: raw bytes on a socket, since several of
//! these are requests no HTTP client library would send.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// One raw request and the answer it must get.
struct Case {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
    /// The problem `type` slug.
    problem: &'static str,
}

fn case(
    name: &'static str,
    request: impl Into<Vec<u8>>,
    status: u16,
    problem: &'static str,
) -> Case {
    Case {
        name,
        request: request.into(),
        status,
        problem,
    }
}

fn get(path: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\nconnection: close\r\n\r\n"
    )
    .into_bytes()
}

fn submit(body: &Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "POST /v1/jobs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ALICE}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn time_range(range: Value) -> Vec<u8> {
    submit(&json!({ "filter": "", "timeRange": range }))
}

fn cases(job_id: &str) -> Vec<Case> {
    let upper = job_id.to_uppercase();
    let undashed = job_id.replace('-', "");
    let huge_method = format!(
        "{} /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "X".repeat(100 * 1024)
    );
    let many_headers: String = (0..120).map(|n| format!("x-h{n}: v\r\n")).collect();
    vec![
        // 1. Odd methods are answered, and counted under `other` (see below).
        case(
            "a 100 KB method name",
            huge_method,
            405,
            "method-not-allowed",
        ),
        // 3. Time arithmetic that overflowed into a 500.
        case(
            "last 999999999d",
            time_range(json!({"last": "999999999d"})),
            400,
            "time-range-too-long",
        ),
        case(
            "last 300000y",
            time_range(json!({"last": "300000y"})),
            400,
            "time-range-too-long",
        ),
        // 4. Bodies declared over the limit are refused before they are read.
        case(
            "a Content-Length of 99999999999",
            format!(
                "POST /v1/jobs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ALICE}\r\ncontent-type: application/json\r\ncontent-length: 99999999999\r\nconnection: close\r\n\r\n"
            ),
            413,
            "body-too-large",
        ),
        // 6. Time ranges that should be refused.
        case(
            "a leap second",
            time_range(json!({"from": "2026-12-01T23:59:60.5Z", "to": "2026-12-02T00:00:00Z"})),
            400,
            "invalid-request",
        ),
        case(
            "a range empty at microseconds",
            time_range(
                json!({"from": "2026-12-01T00:00:00.0000001Z", "to": "2026-12-01T00:00:00.0000009Z"}),
            ),
            400,
            "invalid-request",
        ),
        case(
            "a time past 9999 in UTC",
            time_range(
                json!({"from": "9999-12-31T23:00:00-05:00", "to": "9999-12-31T23:30:00-05:00"}),
            ),
            400,
            "invalid-request",
        ),
        case(
            "a time before year 1 in UTC",
            time_range(
                json!({"from": "0001-01-01T00:00:00+01:00", "to": "0001-01-01T02:00:00+01:00"}),
            ),
            400,
            "invalid-request",
        ),
        // 7. Errors raised by the HTTP layer are problems too.
        case(
            "too many headers",
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n"),
            431,
            "headers-too-large",
        ),
        case(
            "a 70 KB request target",
            format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70 * 1024)),
            414,
            "uri-too-long",
        ),
        case(
            "a control byte in a header value",
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-bad: a\x01b\r\n\r\n".to_vec(),
            400,
            "malformed-request",
        ),
        case(
            "two different Content-Lengths",
            "POST /v1/jobs HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}",
            400,
            "malformed-request",
        ),
        case(
            "two Authorization headers",
            format!(
                "GET /v1/jobs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ZED_OTHER_TENANT}\r\nauthorization: Bearer {ALICE}\r\nconnection: close\r\n\r\n"
            ),
            400,
            "invalid-parameter",
        ),
        case(
            "a job id in braces",
            get(&format!("/v1/jobs/%7B{job_id}%7D"), ALICE),
            404,
            "not-found",
        ),
        case(
            "a urn:uuid job id",
            get(&format!("/v1/jobs/urn:uuid:{job_id}"), ALICE),
            404,
            "job-not-found",
        ),
        case(
            "an upper-case job id",
            get(&format!("/v1/jobs/{upper}"), ALICE),
            404,
            "job-not-found",
        ),
        case(
            "an undashed job id",
            get(&format!("/v1/jobs/{undashed}"), ALICE),
            404,
            "job-not-found",
        ),
        case(
            "offset 0000",
            get("/v1/offsets/0000", ALICE),
            404,
            "offset-not-found",
        ),
        case(
            "offset +0",
            get("/v1/offsets/+0", ALICE),
            404,
            "offset-not-found",
        ),
        case(
            "offset %30",
            get("/v1/offsets/%30", ALICE),
            404,
            "not-found",
        ),
        case(
            "a cursor past 2^53",
            get(
                &format!("/v1/jobs/{job_id}/chunks?from=18446744073709551615"),
                ALICE,
            ),
            400,
            "invalid-parameter",
        ),
    ]
}

/// Sends `request` on a new connection and reads the answer to its end
/// (every case's answer closes the connection): (status, headers, body).
async fn raw(server: &Server, request: &[u8]) -> (u16, String, String) {
    let addr = server.app.addr.unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it reads all of a long
    // request; what it answered is what counts.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer));
    let _ = read
        .await
        .expect("the server answers and closes the connection");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test]
async fn every_hostile_request_gets_its_answer() {
    let server = Server::start().await;
    let job = server.submit(ALICE, "status = 503").await;
    let job_id = job["jobId"].as_str().unwrap();
    assert_eq!(
        server.get(ALICE, "/v1/offsets/0").await.0,
        200,
        "offset 0 is the canonical spelling"
    );
    for case in cases(job_id) {
        let (status, head, body) = raw(&server, &case.request).await;
        assert_eq!(status, case.status, "{}: {head}\n{body}", case.name);
        assert!(
            head.contains("content-type: application/problem+json"),
            "{}: {head}",
            case.name
        );
        let problem: Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(
            problem["type"],
            format!("https://pseudostream.dev/problems/{}", case.problem),
            "{}: {body}",
            case.name
        );
        assert_eq!(problem["status"], case.status, "{}", case.name);
    }
    server.stop().await;
}

#[tokio::test]
async fn odd_methods_do_not_grow_the_metrics() {
    let server = Server::start().await;
    let odd = |n: usize| {
        let padding = "Y".repeat(n % 7 * 1000);
        format!("X{n:05}{padding} /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    };
    raw(&server, odd(0).as_bytes()).await;
    // The first scrape is counted in the second.
    server.metrics().await;
    let before = server.metrics().await;
    for n in 1..300 {
        let (status, ..) = raw(&server, odd(n).as_bytes()).await;
        assert_eq!(status, 405);
    }
    let after = server.metrics().await;
    assert_eq!(
        after.lines().count(),
        before.lines().count(),
        "new series from odd methods:\n{after}"
    );
    // Counts and sums gain a few digits; series would add kilobytes.
    assert!(
        after.len() < before.len() + 512,
        "{} -> {} bytes",
        before.len(),
        after.len()
    );
    assert!(after.contains("method=\"other\""), "{after}");
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_body_with_expect_continue_gets_413_not_100() {
    let server = Server::start().await;
    let request = format!(
        "POST /v1/jobs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ALICE}\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n"
    );
    let (status, head, _) = raw(&server, request.as_bytes()).await;
    assert_eq!(status, 413, "{head}");
    server.stop().await;
}

#[tokio::test]
async fn partial_requests_are_closed() {
    let mut config = config();
    config.header_timeout = Duration::from_millis(500);
    config.body_timeout = Duration::from_millis(500);
    let server = Server::start_with(config, Default::default()).await;
    let addr = server.app.addr.unwrap();

    // Slow-loris: heads that never end are closed by the server.
    let mut lorises = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .unwrap();
        lorises.push(s);
    }
    for mut s in lorises {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a partial head was left open");
    }

    // A body that trickles in: 408 once the body timeout passes.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ALICE}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut answer))
        .await
        .expect("the server answers a trickling body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("/problems/request-timeout"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_get_503() {
    let mut config = config();
    config.max_connections = 8;
    let server = Server::start_with(config, Default::default()).await;
    let addr = server.app.addr.unwrap();
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    wait_until(
        "a connection over the cap is refused",
        Duration::from_secs(10),
        || async {
            let (status, head, body) = raw(
                &server,
                b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            )
            .await;
            status == 503 && head.contains("retry-after") && body.contains("/problems/overloaded")
        },
    )
    .await;
    drop(held);
    wait_until(
        "connections are taken again",
        Duration::from_secs(10),
        || async {
            let request = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
            raw(&server, request).await.0 == 200
        },
    )
    .await;
    server.stop().await;
}
