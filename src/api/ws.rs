//! `GET /v1/jobs/{id}/ws` and `GET /v1/offsets/{n}/ws`: the same stream as
//! `events.rs`, over WebSocket. Every message is a JSON text frame with a
//! `type`: `chunk` (`id`, and `chunk` exactly as polling gives it), `job`
//! (an offset stream's next job), `end`, or `error` (a problem document),
//! followed by a close frame whose code says why the stream ended.
//!
//! The key comes in the `Authorization` header, as everywhere, or, for
//! browsers (whose WebSocket cannot set headers), in a first text message
//! `{"type":"auth","key":"..."}` sent within `AUTH_PATIENCE`. Without a
//! header the stream's slot is taken before the upgrade, so the cap still
//! answers 503 over HTTP; the job (and its tenancy) is looked up after the
//! key arrives, and a refusal then is a close frame.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use super::AppState;
use super::auth::{Caller, caller_of_key, presented_caller};
use super::extract::Query;
use super::problem::{ApiError, ErrorCode};
use super::stream::{
    Slot, StreamParams, Target, end_problem, event_id, is_final, job_summary, open, resume,
};
use crate::jobs::push::{Follower, PushEvent, Resume, StreamEnd};
use crate::metrics::Transport;

/// How long a connection without an `Authorization` header has to send
/// its auth message.
const AUTH_PATIENCE: Duration = Duration::from_secs(5);

/// Close codes (4000–4999 are the application's, RFC 6455 §7.4.2): the
/// HTTP status they stand for, plus 4000.
mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const BAD_REQUEST: u16 = 4400;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const NOT_FOUND: u16 = 4404;
    pub const AUTH_TIMEOUT: u16 = 4408;
}

/// Both routes: the job's stream or the offset's.
pub async fn stream(
    State(state): State<Arc<AppState>>,
    target: Target,
    Query(params): Query<StreamParams>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let resume = resume(&headers, &params)?;
    let caller = presented_caller(&headers, &state)?;
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            ErrorCode::UpgradeRequired,
            format!(
                "{}; open this route as a WebSocket, or read the same stream as Server-Sent Events at `.../events`",
                rejection.body_text()
            ),
        )
    })?;
    let slot = state
        .streams
        .admit(&state.jobs.metrics, Transport::WebSocket)?;
    // With a header, refusals are still HTTP answers.
    let follower = match &caller {
        Some(Caller(who)) => Some(open(&state, who, target, resume).await?),
        None => None,
    };
    Ok(upgrade.on_upgrade(move |socket| async move {
        serve(state, socket, target, resume, follower, slot).await;
    }))
}

/// The message a browser sends first when it cannot set headers.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Hello {
    Auth { key: String },
}

async fn serve(
    state: Arc<AppState>,
    mut socket: WebSocket,
    target: Target,
    resume: Resume,
    follower: Option<Follower>,
    _slot: Slot,
) {
    let follower = match follower {
        Some(follower) => follower,
        None => match authenticate(&state, &mut socket, target, resume).await {
            Ok(follower) => follower,
            Err((code, problem)) => {
                let _ = socket.send(error_message(&problem)).await;
                let _ = socket.send(close_frame(code, &problem.detail)).await;
                return;
            }
        },
    };
    send_events(&state, socket, follower, target.is_offset()).await;
}

/// Reads the auth message, then opens the stream as that caller.
async fn authenticate(
    state: &AppState,
    socket: &mut WebSocket,
    target: Target,
    resume: Resume,
) -> Result<Follower, (u16, ApiError)> {
    let unauthorized = |detail: &str| ApiError::new(ErrorCode::Unauthorized, detail);
    let first = match tokio::time::timeout(AUTH_PATIENCE, socket.recv()).await {
        Err(_) => {
            let detail = format!(
                "no auth message within {} s: send {{\"type\":\"auth\",\"key\":\"...\"}} first, or the `Authorization` header",
                AUTH_PATIENCE.as_secs()
            );
            return Err((close::AUTH_TIMEOUT, unauthorized(&detail)));
        }
        Ok(Some(Ok(Message::Text(text)))) => text,
        Ok(_) => {
            let detail = "the first message must be the text {\"type\":\"auth\",\"key\":\"...\"}";
            return Err((close::BAD_REQUEST, unauthorized(detail)));
        }
    };
    let Ok(Hello::Auth { key }) = serde_json::from_str::<Hello>(&first) else {
        let detail = "the first message must be {\"type\":\"auth\",\"key\":\"...\"}";
        return Err((close::BAD_REQUEST, unauthorized(detail)));
    };
    let Caller(who) = caller_of_key(&key, state).map_err(|e| (close::UNAUTHORIZED, e))?;
    open(state, &who, target, resume)
        .await
        .map_err(|e| (close_code(&e), e))
}

/// Sends the stream's events until its last, the client leaves, or a send
/// stalls (a client that stops reading).
async fn send_events(
    state: &AppState,
    mut socket: WebSocket,
    mut follower: Follower,
    offset: bool,
) {
    let heartbeat = state.streams.heartbeat;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    loop {
        // `next_event` keeps its place when another branch wins.
        let event = tokio::select! {
            event = follower.next_event() => event,
            _ = ping.tick() => {
                if send(&mut socket, Message::Ping(Default::default()), heartbeat).await {
                    continue;
                }
                return;
            }
            incoming = socket.recv() => match incoming {
                // Pongs and anything else the client says are ignored.
                Some(Ok(message)) if !matches!(message, Message::Close(_)) => continue,
                _ => return,
            },
        };
        let Some(event) = event else {
            let _ = send(&mut socket, close_frame(close::NORMAL, "done"), heartbeat).await;
            return;
        };
        let last = is_final(&event, offset);
        let (message, close) = to_message(event, offset);
        if !send(&mut socket, message, heartbeat).await {
            return;
        }
        if last {
            let (code, reason) = close.unwrap_or((close::NORMAL, "the job ended".into()));
            let _ = send(&mut socket, close_frame(code, &reason), heartbeat).await;
            return;
        }
    }
}

/// Sends one message; false when the client is gone or took longer than
/// `patience` to take it.
async fn send(socket: &mut WebSocket, message: Message, patience: Duration) -> bool {
    matches!(
        tokio::time::timeout(patience, socket.send(message)).await,
        Ok(Ok(()))
    )
}

/// The event's message, and for an early end the close code and reason.
fn to_message(event: PushEvent, offset_stream: bool) -> (Message, Option<(u16, String)>) {
    let text = match event {
        PushEvent::Chunk { job, seq, chunk } => {
            let id = event_id(offset_stream, job, seq);
            // The chunk's JSON text goes in as it is, not decoded again.
            format!(r#"{{"type":"chunk","id":"{id}","chunk":{chunk}}}"#)
        }
        PushEvent::Job(job) => {
            serde_json::json!({ "type": "job", "job": job_summary(&job) }).to_string()
        }
        PushEvent::End(job) => {
            serde_json::json!({ "type": "end", "job": job_summary(&job) }).to_string()
        }
        PushEvent::Closed(why) => {
            let code = match &why {
                StreamEnd::ShuttingDown => close::GOING_AWAY,
                StreamEnd::Expired(_) => close::NOT_FOUND,
                StreamEnd::SlowConsumer | StreamEnd::Failed(_) => close::TRY_AGAIN_LATER,
            };
            let problem = end_problem(why);
            return (error_message(&problem), Some((code, problem.detail)));
        }
    };
    (Message::Text(text.into()), None)
}

fn error_message(problem: &ApiError) -> Message {
    let text = format!(r#"{{"type":"error","problem":{}}}"#, problem.body());
    Message::Text(text.into())
}

fn close_code(problem: &ApiError) -> u16 {
    match problem.code.status().as_u16() {
        404 => close::NOT_FOUND,
        401 => close::UNAUTHORIZED,
        _ => close::TRY_AGAIN_LATER,
    }
}

/// A close frame; its reason cut to the 123 bytes the protocol allows.
fn close_frame(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(&reason[..end]),
    }))
}
