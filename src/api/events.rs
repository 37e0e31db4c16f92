//! `GET /v1/jobs/{id}/events` and `GET /v1/offsets/{n}/events`: a job's
//! chunks pushed as Server-Sent Events. One event per chunk (`id:` its
//! `chunkSeq`, `data:` the chunk exactly as polling gives it), a comment
//! heartbeat while nothing happens (so gateways that close idle connections
//! leave it open), an `end` event after the last chunk, then the stream
//! closes. An offset stream announces each job the offset holds with a
//! `job` event and stays open across them. A stream that cannot go on ends
//! with an `error` event carrying a problem document.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;

use super::AppState;
use super::auth::Caller;
use super::extract::Query;
use super::problem::ApiError;
use super::stream::{
    Slot, StreamParams, Target, end_problem, event_id, is_final, job_summary, open, resume,
};
use crate::jobs::push::{Follower, PushEvent};
use crate::metrics::Transport;

/// Both routes: the job's stream or the offset's.
pub async fn stream(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    target: Target,
    Query(params): Query<StreamParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let resume = resume(&headers, &params)?;
    let slot = state.streams.admit(&state.jobs.metrics, Transport::Sse)?;
    let follower = open(&state, &who, target, resume).await?;
    Ok(respond(&state, follower, slot, target.is_offset()))
}

fn respond(state: &AppState, follower: Follower, slot: Slot, offset_stream: bool) -> Response {
    let events = futures::stream::unfold(Some((follower, slot)), move |open| async move {
        let (mut follower, slot) = open?;
        let event = follower.next_event().await?;
        let last = is_final(&event, offset_stream);
        let sse = to_sse(event, offset_stream);
        // After the last event the slot goes with the stream.
        Some((
            Ok::<_, Infallible>(sse),
            (!last).then_some((follower, slot)),
        ))
    });
    let mut response = sse(events, state.streams.heartbeat).into_response();
    // Proxies that buffer responses (nginx) would hold the events back.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn sse(
    events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
    heartbeat: std::time::Duration,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static> {
    Sse::new(events).keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat"))
}

fn to_sse(event: PushEvent, offset_stream: bool) -> Event {
    match event {
        PushEvent::Chunk { job, seq, chunk } => Event::default()
            .id(event_id(offset_stream, job, seq))
            .data(&*chunk),
        PushEvent::Job(job) => Event::default()
            .event("job")
            .data(job_summary(&job).to_string()),
        PushEvent::End(job) => Event::default()
            .event("end")
            .data(job_summary(&job).to_string()),
        PushEvent::Closed(why) => {
            let problem = end_problem(why);
            let event = Event::default().event("error").data(problem.body());
            // Tells EventSource how long to wait before reconnecting.
            match problem.retry_after_header() {
                Some(secs) => event.retry(std::time::Duration::from_secs(secs)),
                None => event,
            }
        }
    }
}
