//! Following a job's chunks to its last: pushed as Server-Sent Events
//! (`GET /v1/jobs/{id}/events`) where the server has them, polled
//! (`GET /v1/jobs/{id}/chunks?from=N&wait=`) where it has not (the events
//! route answers 404) or when a stream breaks off. Either way each chunk is
//! delivered once, in `chunkSeq` order: the next seq wanted is the resume
//! point of both (`from`), so switching loses and repeats nothing.

use std::time::Duration;

use reqwest::Response;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::ClientError;
use super::http::{Api, Failure, Problem};
use super::sse::Parser;

/// An event stream silent this long (the server's heartbeat comes every
/// 15 s) is dead, whatever TCP says.
const STREAM_IDLE: Duration = Duration::from_secs(45);
/// Event streams opened per job before polling takes over for good.
const MAX_STREAMS: u32 = 3;
/// Polls in a row that may fail with a retryable answer (503, 429, a broken
/// connection) before the client gives up.
const MAX_POLL_FAILURES: u32 = 5;

/// One chunk as the API gives it; its rows stay the server's text.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chunk {
    pub chunk_seq: u64,
    pub is_last: bool,
    pub rows: Vec<Box<RawValue>>,
    /// On the last chunk: how the job ended, and why when it failed.
    pub status: Option<String>,
    pub total_rows: Option<u64>,
    #[serde(default)]
    pub truncated: bool,
    pub error: Option<String>,
}

/// How a job's chunks reached the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Push,
    Polling,
}

/// What reading one event stream came to.
enum StreamOutcome {
    /// The last chunk was delivered.
    Done(Chunk),
    /// The stream ended or broke off before it: resume.
    BrokeOff,
}

/// Hands every chunk of `job` to `deliver` in order (with how it came) and
/// returns the last one.
pub async fn follow(
    api: &Api,
    job: &str,
    mut deliver: impl FnMut(&Chunk, Transport) -> Result<(), ClientError>,
) -> Result<Chunk, ClientError> {
    let mut next = 0;
    let mut streams = 0;
    while streams < MAX_STREAMS {
        streams += 1;
        let Some(response) = api.events(job, next).await.or_else(|f| match f {
            // A full stream cap or a busy instance: polling is cheaper.
            Failure::Problem(p) if retryable(&p) => Ok(None),
            f => Err(ClientError::from(f)),
        })?
        else {
            break;
        };
        if let StreamOutcome::Done(last) = read_stream(response, &mut next, &mut deliver).await? {
            return Ok(last);
        }
    }
    poll(api, job, next, deliver).await
}

async fn read_stream(
    mut response: Response,
    next: &mut u64,
    deliver: &mut impl FnMut(&Chunk, Transport) -> Result<(), ClientError>,
) -> Result<StreamOutcome, ClientError> {
    let mut parser = Parser::default();
    loop {
        let bytes = match tokio::time::timeout(STREAM_IDLE, response.chunk()).await {
            Ok(Ok(Some(bytes))) => bytes,
            _ => return Ok(StreamOutcome::BrokeOff),
        };
        for event in parser.feed(&bytes) {
            match event.kind.as_str() {
                "" | "message" => {
                    let chunk = parse_chunk(event.data.as_bytes())?;
                    if let Some(last) = accept(chunk, next, Transport::Push, deliver)? {
                        return Ok(StreamOutcome::Done(last));
                    }
                }
                // The stream's own end (a slow client dropped, the instance
                // shutting down) resumes; the job gone is final.
                "error" => {
                    let problem: Problem = serde_json::from_str(&event.data).unwrap_or_default();
                    if problem.status == 404 {
                        return Err(ClientError::Refused(problem.to_string()));
                    }
                    return Ok(StreamOutcome::BrokeOff);
                }
                _ => {} // `end` follows the last chunk; `job` is for offset streams
            }
        }
    }
}

async fn poll(
    api: &Api,
    job: &str,
    mut next: u64,
    mut deliver: impl FnMut(&Chunk, Transport) -> Result<(), ClientError>,
) -> Result<Chunk, ClientError> {
    let mut failures = 0;
    loop {
        let page = match api.chunks(job, next).await {
            Ok(page) => page,
            Err(failure) if failures < MAX_POLL_FAILURES => {
                let pause = match &failure {
                    Failure::Problem(p) if retryable(p) => p.retry_after,
                    Failure::NotSent(_) | Failure::Transport(_) => None,
                    Failure::Problem(_) => return Err(failure.into()),
                };
                failures += 1;
                tokio::time::sleep(pause.unwrap_or(Duration::from_secs(1))).await;
                continue;
            }
            Err(failure) => return Err(failure.into()),
        };
        failures = 0;
        for raw in page.chunks {
            let chunk = parse_chunk(raw.get().as_bytes())?;
            if let Some(last) = accept(chunk, &mut next, Transport::Polling, &mut deliver)? {
                return Ok(last);
            }
        }
        next = next.max(page.next);
    }
}

/// Delivers `chunk` if it is the next one; returns it when it is the last.
fn accept(
    chunk: Chunk,
    next: &mut u64,
    transport: Transport,
    deliver: &mut impl FnMut(&Chunk, Transport) -> Result<(), ClientError>,
) -> Result<Option<Chunk>, ClientError> {
    if chunk.chunk_seq != *next {
        // A repeat after a resume; chunks never skip a seq.
        return Ok(None);
    }
    deliver(&chunk, transport)?;
    *next += 1;
    Ok(chunk.is_last.then_some(chunk))
}

fn retryable(problem: &Problem) -> bool {
    matches!(problem.status, 429 | 502 | 503 | 504)
}

fn parse_chunk(text: &[u8]) -> Result<Chunk, ClientError> {
    serde_json::from_slice(text).map_err(|e| {
        ClientError::Unreachable(format!("a chunk is not what this client reads: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::extract::Query;
    use axum::response::IntoResponse;
    use axum::routing::get;

    use super::*;
    use crate::client::ServerArgs;

    fn chunk(seq: u64, last: bool) -> String {
        let tail = if last {
            r#","status":"completed","totalRows":2"#
        } else {
            ""
        };
        format!(
            r#"{{"jobId":"j","offset":0,"chunkSeq":{seq},"isLast":{last},"rows":[{{"n":{seq}}}]{tail}}}"#
        )
    }

    /// A server whose event stream sends chunk 0 (after a heartbeat and
    /// again, as a resumed stream would), then breaks off; polling from 1
    /// has chunk 1, the last.
    async fn fake_server(push: bool) -> String {
        let events = move || async move {
            let body = format!(
                ": heartbeat\n\nid: 0\ndata: {}\n\nid: 0\ndata: {}\n\n",
                chunk(0, false),
                chunk(0, false)
            );
            if push {
                ([("content-type", "text/event-stream")], body).into_response()
            } else {
                axum::http::StatusCode::NOT_FOUND.into_response()
            }
        };
        let chunks = |Query(q): Query<std::collections::HashMap<String, String>>| async move {
            let from: u64 = q["from"].parse().unwrap();
            let chunks: Vec<String> = (from..2).map(|s| chunk(s, s == 1)).collect();
            format!(r#"{{"chunks":[{}],"next":2}}"#, chunks.join(","))
        };
        let app = Router::new()
            .route("/v1/jobs/j/events", get(events))
            .route("/v1/jobs/j/chunks", get(chunks));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    async fn followed(push: bool) -> Vec<(u64, Transport)> {
        let server = fake_server(push).await;
        let api = Api::new(&ServerArgs {
            server,
            key: "k".into(),
        })
        .unwrap();
        let mut seen = Vec::new();
        let last = follow(&api, "j", |c, t| {
            seen.push((c.chunk_seq, t));
            Ok(())
        })
        .await
        .unwrap();
        assert!(last.is_last);
        seen
    }

    #[tokio::test]
    async fn a_stream_that_breaks_off_is_resumed_without_repeats_or_gaps() {
        // The stream is tried again (up to its bound) before polling.
        assert_eq!(
            followed(true).await,
            [(0, Transport::Push), (1, Transport::Polling)]
        );
    }

    #[tokio::test]
    async fn without_the_events_route_chunks_are_polled() {
        assert_eq!(
            followed(false).await,
            [(0, Transport::Polling), (1, Transport::Polling)]
        );
    }
}
