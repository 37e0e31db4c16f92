//! Push streams: Server-Sent Events and WebSocket give the chunks polling
//! gives, resume, heartbeat, end, follow an offset across jobs, keep
//! tenancy, refuse at the cap, drop a client that does not read, and (the
//! distributed case) are served by an instance that did not run the job.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pseudostream::jobs::Hooks;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{ALICE, Server, ZED_OTHER_TENANT, config, scratch_dir, wait_until};

/// One event as a client sees it; a comment (heartbeat) has `comment` set.
#[derive(Debug, Default, Clone)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: String,
    comment: Option<String>,
}

/// A minimal EventSource: reads one response's events as they arrive.
struct SseClient {
    response: reqwest::Response,
    buffer: String,
}

impl SseClient {
    async fn open(server: &Server, key: &str, path: &str, last_event_id: Option<&str>) -> Self {
        let response = Self::request(server, key, path, last_event_id).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{path}"
        );
        SseClient {
            response,
            buffer: String::new(),
        }
    }

    async fn request(
        server: &Server,
        key: &str,
        path: &str,
        last_event_id: Option<&str>,
    ) -> reqwest::Response {
        let mut request = server.http.get(server.url(path)).bearer_auth(key);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        request.send().await.expect("request")
    }

    /// The next event or comment; `None` once the server closed the stream.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(parse(&block));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk())
                .await
                .expect("an event within 30 s")
                .expect("the stream reads");
            self.buffer.push_str(std::str::from_utf8(&chunk?).unwrap());
        }
    }

    /// The next event that is not a comment.
    async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            match self.next().await {
                Some(e) if e.comment.is_some() => continue,
                other => return other,
            }
        }
    }

    /// Chunks until the `end` event (returned too); the stream must then close.
    async fn chunks_until_end(&mut self) -> (Vec<SseEvent>, SseEvent) {
        let mut chunks = Vec::new();
        loop {
            let event = self.next_event().await.expect("the end event");
            match event.event.as_str() {
                "message" => chunks.push(event),
                "end" => return (chunks, event),
                other => panic!("unexpected {other} event: {event:?}"),
            }
        }
    }
}

fn parse(block: &str) -> SseEvent {
    let mut event = SseEvent {
        event: "message".into(),
        ..SseEvent::default()
    };
    for line in block.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            event.comment = Some(comment.trim().to_owned());
        } else if let Some((field, value)) = line.split_once(':') {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event.event = value.to_owned(),
                "id" => event.id = Some(value.to_owned()),
                "data" => event.data.push_str(value),
                _ => {}
            }
        }
    }
    event
}

fn data(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|e| serde_json::from_str(&e.data).expect("chunk JSON"))
        .collect()
}

/// A server whose workers wait for a permit before each chunk.
async fn gated(mut config: pseudostream::config::Config) -> (Server, Arc<Semaphore>) {
    config.stream_heartbeat = Duration::from_millis(100);
    let gate = Arc::new(Semaphore::new(0));
    let hooks = Hooks {
        chunk_gate: Some(gate.clone()),
        ..Hooks::default()
    };
    (Server::start_with(config, hooks).await, gate)
}

fn job_id(job: &Value) -> String {
    job["jobId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn sse_gives_the_polled_chunks_live_then_ends_and_closes() {
    let (server, gate) = gated(config()).await;
    let job = server.submit(ALICE, "status >= 500").await;
    let id = job_id(&job);
    // Opened before any chunk exists: every chunk comes through the feed.
    let mut stream = SseClient::open(&server, ALICE, &format!("/v1/jobs/{id}/events"), None).await;
    gate.add_permits(10_000);
    let (chunks, end) = stream.chunks_until_end().await;
    assert!(
        stream.next().await.is_none(),
        "the stream closes after `end`"
    );

    let polled = server.read_all(ALICE, &id).await;
    assert_eq!(data(&chunks), polled, "the stream gives the polled chunks");
    let ids: Vec<String> = chunks.iter().map(|e| e.id.clone().unwrap()).collect();
    let seqs: Vec<String> = (0..polled.len()).map(|n| n.to_string()).collect();
    assert_eq!(ids, seqs, "each event's id is its chunkSeq");
    let end: Value = serde_json::from_str(&end.data).unwrap();
    assert_eq!(end["status"], "completed");
    assert_eq!(end["jobId"], id.as_str());
    assert_eq!(end["chunks"], polled.len());
    server.stop().await;
}

#[tokio::test]
async fn sse_resumes_after_last_event_id_or_from() {
    let server = Server::start().await;
    let job = server.submit(ALICE, "").await;
    let id = job_id(&job);
    let polled = server.read_all(ALICE, &id).await;
    assert!(polled.len() > 4, "the test needs a few chunks");
    let path = format!("/v1/jobs/{id}/events");

    let mut resumed = SseClient::open(&server, ALICE, &path, Some("2")).await;
    let (chunks, _) = resumed.chunks_until_end().await;
    assert_eq!(data(&chunks), polled[3..], "after chunk 2");

    let from = format!("{path}?from=2");
    let mut from = SseClient::open(&server, ALICE, &from, None).await;
    let (chunks, _) = from.chunks_until_end().await;
    assert_eq!(data(&chunks), polled[2..], "from chunk 2");

    let bad = SseClient::request(&server, ALICE, &path, Some("yesterday")).await;
    assert_eq!(bad.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn an_idle_stream_sends_heartbeats() {
    let (server, gate) = gated(config()).await;
    let id = job_id(&server.submit(ALICE, "").await);
    let mut stream = SseClient::open(&server, ALICE, &format!("/v1/jobs/{id}/events"), None).await;
    for _ in 0..2 {
        let event = stream.next().await.unwrap();
        assert_eq!(event.comment.as_deref(), Some("heartbeat"), "{event:?}");
    }
    gate.add_permits(10_000);
    stream.chunks_until_end().await;
    server.stop().await;
}

#[tokio::test]
async fn an_offset_stream_follows_the_offset_to_its_next_job() {
    let mut config = config();
    config.offset_pool_size = 1;
    config.result_ttl = Duration::from_secs(2);
    config.expiry_interval = Duration::from_millis(50);
    let server = Server::start_with(config, Hooks::default()).await;
    let first = server.submit(ALICE, "status >= 500").await;
    let mut stream = SseClient::open(&server, ALICE, "/v1/offsets/0/events", None).await;

    let announced = stream.next_event().await.unwrap();
    assert_eq!(announced.event, "job");
    let announced: Value = serde_json::from_str(&announced.data).unwrap();
    assert_eq!(announced["jobId"], first["jobId"]);
    let (chunks, end) = stream.chunks_until_end().await;
    assert!(!chunks.is_empty());
    let first_id = job_id(&first);
    assert_eq!(
        chunks[0].id.as_deref(),
        Some(format!("{first_id}:0").as_str()),
        "an offset stream's ids name the job"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&end.data).unwrap()["jobId"],
        first["jobId"]
    );

    // The one offset frees when the first job expires; the next job takes it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let second = loop {
        let body = json!({ "filter": "status < 500", "timeRange": { "last": "7d" } });
        let (status, job) = server.post(ALICE, "/v1/jobs", body).await;
        if status == 202 {
            break job;
        }
        assert_eq!(status, 503, "{job}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the offset never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let announced = stream.next_event().await.unwrap();
    assert_eq!(announced.event, "job", "{announced:?}");
    let announced: Value = serde_json::from_str(&announced.data).unwrap();
    assert_eq!(announced["jobId"], second["jobId"]);
    let (chunks, _) = stream.chunks_until_end().await;
    let polled = server.read_all(ALICE, &job_id(&second)).await;
    assert_eq!(
        data(&chunks),
        polled,
        "the second job's chunks, from its first"
    );
    server.stop().await;
}

#[tokio::test]
async fn another_tenants_job_or_offset_streams_as_not_found() {
    let server = Server::start().await;
    let job = server.submit(ZED_OTHER_TENANT, "").await;
    let id = job_id(&job);
    let offset = &job["offset"];
    for path in [
        format!("/v1/jobs/{id}/events"),
        format!("/v1/offsets/{offset}/events"),
    ] {
        let (status, problem) = server.get(ALICE, &path).await;
        assert_eq!(status, 404, "{path}: {problem}");
        assert!(problem["type"].as_str().unwrap().ends_with("-not-found"));
    }
    server.stop().await;
}

#[tokio::test]
async fn streams_past_the_cap_get_503_with_retry_after() {
    let mut config = config();
    config.max_streams = 1;
    let (server, gate) = gated(config).await;
    let id = job_id(&server.submit(ALICE, "").await);
    let path = format!("/v1/jobs/{id}/events");
    let open = SseClient::open(&server, ALICE, &path, None).await;

    let refused = SseClient::request(&server, ALICE, &path, None).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let ws =
        tokio_tungstenite::connect_async(ws_request(&server, &format!("/v1/jobs/{id}/ws"), None))
            .await;
    assert!(ws.is_err(), "the WebSocket is refused too");
    assert!(
        server
            .metrics()
            .await
            .contains("pseudostream_streams_refused_total 2")
    );

    drop(open);
    wait_until(
        "the slot is free again",
        Duration::from_secs(10),
        || async {
            server
                .metrics()
                .await
                .contains("pseudostream_streams_open{transport=\"sse\"} 0")
        },
    )
    .await;
    gate.add_permits(10_000);
    let mut again = SseClient::open(&server, ALICE, &path, None).await;
    again.chunks_until_end().await;
    server.stop().await;
}

/// A server holding a job whose output (about 15 MB) is far more than the
/// socket buffers and hyper's write buffer hold, with a stream buffer of 2
/// chunks; the job waits at the gate until the client is connected.
async fn a_job_too_big_for_a_slow_reader() -> (Server, Arc<tokio::sync::Semaphore>, String) {
    let dir = scratch_dir();
    pseudostream::demo::generate(
        &dir,
        chrono::Utc::now().date_naive(),
        2,
        30_000,
        pseudostream::demo::DEMO_SEED,
        &|_, _| {},
    )
    .unwrap();
    let mut config = config();
    config.source = Some(dir.to_string_lossy().into_owned());
    config.chunk_rows = 100;
    config.stream_buffer = 2;
    let (server, gate) = gated(config).await;
    let id = job_id(&server.submit(ALICE, "").await);
    (server, gate, id)
}

/// A client socket with a small receive window.
async fn slow_socket(server: &Server) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(server.app.addr.unwrap()).await.unwrap()
}

async fn wait_for_open_stream(server: &Server, transport: &str) {
    let open = format!("pseudostream_streams_open{{transport=\"{transport}\"}} 1");
    wait_until("the stream is open", Duration::from_secs(10), || async {
        server.metrics().await.contains(&open)
    })
    .await;
}

async fn wait_for_slow_drop(server: &Server) {
    wait_until("the client is dropped", Duration::from_secs(30), || async {
        server
            .metrics()
            .await
            .contains("pseudostream_streams_slow_dropped_total 1")
    })
    .await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_with_an_error_event() {
    let (server, gate, id) = a_job_too_big_for_a_slow_reader().await;
    // A client that reads nothing yet.
    let mut client = slow_socket(&server).await;
    let addr = server.app.addr.unwrap();
    let request = format!(
        "GET /v1/jobs/{id}/events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {ALICE}\r\nconnection: close\r\n\r\n"
    );
    client.write_all(request.as_bytes()).await.unwrap();
    wait_for_open_stream(&server, "sse").await;
    gate.add_permits(100_000);
    wait_for_slow_drop(&server).await;

    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut received))
        .await
        .expect("the server ends the response")
        .unwrap();
    let received = String::from_utf8_lossy(&received);
    assert!(
        received.contains("event: error\n"),
        "ends with an error event"
    );
    assert!(received.contains("/problems/stream-too-slow"));
    assert!(
        !received.contains("event: end\n"),
        "it did not get to the end"
    );
    server.stop().await;
}

/// Notes a websocket message: a text message's `type`, a close frame's code.
fn note(message: Message, kinds: &mut Vec<String>, code: &mut Option<u16>) {
    match message {
        Message::Text(text) => {
            let value: Value = serde_json::from_str(&text).unwrap();
            kinds.push(value["type"].as_str().unwrap_or_default().to_owned());
        }
        Message::Close(frame) => *code = frame.map(|f| u16::from(f.code)),
        _ => {}
    }
}

#[tokio::test]
async fn a_websocket_that_stops_reading_is_dropped_before_the_end() {
    let (server, gate, id) = a_job_too_big_for_a_slow_reader().await;
    let socket = slow_socket(&server).await;
    let path = format!("/v1/jobs/{id}/ws");
    let (mut ws, _) =
        tokio_tungstenite::client_async(ws_request(&server, &path, Some(ALICE)), socket)
            .await
            .unwrap();
    wait_for_open_stream(&server, "websocket").await;
    // The client reads the job's first chunk, then stops reading. Were it
    // to read nothing at all, the drop could cut the first 100-row
    // chunk's frame short (larger than the two sockets' buffers), and no
    // whole chunk would arrive.
    let mut kinds = Vec::new();
    let mut code = None;
    gate.add_permits(1);
    while !kinds.iter().any(|k| k == "chunk") {
        let message = tokio::time::timeout(Duration::from_secs(30), ws.next()).await;
        let Ok(Some(Ok(message))) = message else {
            panic!("the first chunk did not arrive: {message:?}");
        };
        note(message, &mut kinds, &mut code);
    }
    gate.add_permits(100_000);
    wait_for_slow_drop(&server).await;

    // What was sent before the drop still arrives; the socket then ends
    // without the job's end.
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(30), ws.next()).await
    {
        note(message, &mut kinds, &mut code);
    }
    assert!(kinds.iter().any(|k| k == "chunk"), "some chunks arrived");
    assert!(
        !kinds.iter().any(|k| k == "end"),
        "it did not get to the end"
    );
    assert!(matches!(code, None | Some(1013)), "closed with {code:?}");
    server.stop().await;
}

#[tokio::test]
async fn streams_end_cleanly_on_shutdown() {
    let (server, _gate) = gated(config()).await;
    let id = job_id(&server.submit(ALICE, "").await);
    let mut stream = SseClient::open(&server, ALICE, &format!("/v1/jobs/{id}/events"), None).await;
    server.app.shutdown.cancel();
    let event = stream.next_event().await.unwrap();
    assert_eq!(event.event, "error");
    assert!(event.data.contains("/problems/shutting-down"), "{event:?}");
    assert!(stream.next().await.is_none());
    server.app.done.await.unwrap().unwrap();
}

fn ws_request(
    server: &Server,
    path: &str,
    key: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let url = format!("{}{path}", server.base.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    if let Some(key) = key {
        let value = format!("Bearer {key}").parse().unwrap();
        request.headers_mut().insert("authorization", value);
    }
    request
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Every text message until the close frame, and the close code.
async fn ws_messages(ws: &mut Ws) -> (Vec<Value>, u16) {
    let mut messages = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a message within 30 s")
            .expect("a close frame before the end")
            .expect("the socket reads");
        match message {
            Message::Text(text) => messages.push(serde_json::from_str(&text).unwrap()),
            Message::Close(frame) => return (messages, frame.map_or(1005, |f| f.code.into())),
            _ => {}
        }
    }
}

fn ws_chunks(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| m["type"] == "chunk")
        .map(|m| m["chunk"].clone())
        .collect()
}

#[tokio::test]
async fn websocket_streams_with_the_header_or_a_first_auth_message() {
    let server = Server::start().await;
    let id = job_id(&server.submit(ALICE, "status >= 400").await);
    let polled = server.read_all(ALICE, &id).await;
    let path = format!("/v1/jobs/{id}/ws");

    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(&server, &path, Some(ALICE)))
        .await
        .unwrap();
    let (messages, code) = ws_messages(&mut ws).await;
    assert_eq!(ws_chunks(&messages), polled);
    assert_eq!(messages.last().unwrap()["type"], "end");
    assert_eq!(code, 1000);

    // A browser cannot set headers: the key comes first, as a message.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(ws_request(&server, &format!("{path}?from=1"), None))
            .await
            .unwrap();
    let hello = json!({ "type": "auth", "key": ALICE }).to_string();
    ws.send(Message::Text(hello.into())).await.unwrap();
    let (messages, code) = ws_messages(&mut ws).await;
    assert_eq!(ws_chunks(&messages), polled[1..]);
    assert_eq!(messages[0]["id"], "1");
    assert_eq!(code, 1000);
    server.stop().await;
}

#[tokio::test]
async fn websocket_auth_that_fails_closes_with_a_reason() {
    let server = Server::start().await;
    let id = job_id(&server.submit(ALICE, "").await);
    let path = format!("/v1/jobs/{id}/ws");

    let refused =
        tokio_tungstenite::connect_async(ws_request(&server, &path, Some("not-a-key"))).await;
    assert!(
        refused.is_err(),
        "a bad header key is refused before the upgrade"
    );

    for (hello, expected) in [
        (
            json!({ "type": "auth", "key": "not-a-key" }).to_string(),
            4401,
        ),
        ("hello".to_owned(), 4400),
    ] {
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(&server, &path, None))
            .await
            .unwrap();
        ws.send(Message::Text(hello.into())).await.unwrap();
        let (messages, code) = ws_messages(&mut ws).await;
        assert_eq!(code, expected);
        assert_eq!(messages[0]["type"], "error");
        assert!(
            messages[0]["problem"]["type"]
                .as_str()
                .unwrap()
                .ends_with("/unauthorized")
        );
    }

    // Another tenant's key authenticates, but the job does not exist for it.
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(&server, &path, None))
        .await
        .unwrap();
    let hello = json!({ "type": "auth", "key": ZED_OTHER_TENANT }).to_string();
    ws.send(Message::Text(hello.into())).await.unwrap();
    assert_eq!(ws_messages(&mut ws).await.1, 4404);

    // A socket that never says who it is is closed once the wait for its
    // first message (5 s) is over, so silent sockets cannot pile up.
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(&server, &path, None))
        .await
        .unwrap();
    let (messages, code) = ws_messages(&mut ws).await;
    assert_eq!(code, 4408);
    assert_eq!(messages[0]["type"], "error");
    server.stop().await;
}

#[tokio::test]
async fn a_plain_get_of_a_websocket_route_is_told_to_upgrade() {
    let server = Server::start().await;
    let id = job_id(&server.submit(ALICE, "").await);
    let (status, problem) = server.get(ALICE, &format!("/v1/jobs/{id}/ws")).await;
    assert_eq!(status, 426, "{problem}");
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("/upgrade-required")
    );
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs Kafka at PSEUDOSTREAM_TEST_KAFKA_BROKERS (default 127.0.0.1:9092) and Redis"]
async fn an_instance_that_did_not_run_the_job_streams_it() {
    use crate::kafka_results::{Names, brokers, redis_url};
    let names = Names::fresh();
    let mut shared = config();
    shared.kafka_brokers = Some(brokers());
    shared.kafka_topic = names.topic.clone();
    shared.redis_url = Some(redis_url());
    shared.redis_prefix = names.prefix.clone();
    let (runs, gate) = gated(shared.clone()).await;
    // The second instance has no workers: it only serves.
    let (app, _) = pseudostream::app::start_with_hooks(
        shared,
        pseudostream::app::Roles {
            api: true,
            workers: false,
        },
        Hooks::default(),
    )
    .await
    .expect("the API-only instance starts");
    let serves = Server {
        base: format!("http://{}", app.addr.unwrap()),
        app,
        http: reqwest::Client::new(),
    };

    let id = job_id(&runs.submit(ALICE, "status >= 500").await);
    let mut stream = SseClient::open(&serves, ALICE, &format!("/v1/jobs/{id}/events"), None).await;
    let mut ws = tokio_tungstenite::connect_async(ws_request(
        &serves,
        &format!("/v1/jobs/{id}/ws"),
        Some(ALICE),
    ))
    .await
    .unwrap()
    .0;
    gate.add_permits(100_000);
    let (chunks, end) = stream.chunks_until_end().await;
    let polled = runs.read_all(ALICE, &id).await;
    assert_eq!(data(&chunks), polled);
    assert_eq!(
        serde_json::from_str::<Value>(&end.data).unwrap()["status"],
        "completed"
    );
    assert_eq!(ws_chunks(&ws_messages(&mut ws).await.0), polled);
    serves.stop().await;
    runs.stop().await;
}
