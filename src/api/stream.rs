//! What the two push transports (`events.rs`, Server-Sent Events; `ws.rs`,
//! WebSocket) share: the stream cap, where a stream resumes, opening a job's
//! or an offset's stream with polling's tenancy, and the JSON of the events
//! that are not chunks.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::AppState;
use super::extract::{JobIdPath, OffsetPath};
use super::problem::{ApiError, ErrorCode};
use crate::jobs::JobError;
use crate::jobs::push::{Follower, JobFollower, OffsetFollower, PushEvent, Resume, StreamEnd};
use crate::metrics::{Metrics, Transport};
use crate::model::{JobId, JobRecord, Offset, Principal};

/// The push streams of this instance: the cap and the heartbeat.
pub struct Streams {
    permits: Arc<Semaphore>,
    max: usize,
    pub heartbeat: Duration,
}

impl Streams {
    pub fn new(max: usize, heartbeat: Duration) -> Streams {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Streams {
            permits: Arc::new(Semaphore::new(max)),
            max,
            // A zero interval would spin.
            heartbeat: heartbeat.max(Duration::from_millis(10)),
        }
    }

    /// A place for one more stream, or 503 with `Retry-After` at the cap.
    pub fn admit(&self, metrics: &Arc<Metrics>, transport: Transport) -> Result<Slot, ApiError> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            metrics.streams.refused_total.inc();
            return Err(ApiError::new(
                ErrorCode::Overloaded,
                format!(
                    "this instance serves {} push streams, its limit; retry shortly (another instance may have room), or poll `/chunks?wait=`",
                    self.max
                ),
            ));
        };
        metrics.streams.opened(transport);
        Ok(Slot {
            _permit: permit,
            metrics: metrics.clone(),
            transport,
        })
    }
}

/// One open stream's place under the cap; counted in the open-streams
/// gauge until dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
    transport: Transport,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.streams.closed(self.transport);
    }
}

/// The query of the stream routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    /// The first `chunkSeq` to send, as polling's `from`.
    from: Option<u64>,
}

/// Where a stream starts: `Last-Event-ID` (what a reconnecting EventSource
/// sends), else `from`, else the first chunk.
pub fn resume(headers: &HeaderMap, params: &StreamParams) -> Result<Resume, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(Resume::At(super::jobs::cursor_param(params.from)?));
    };
    let invalid = || {
        ApiError::new(
            ErrorCode::InvalidParameter,
            "`Last-Event-ID` must be an event id this API sent: a chunkSeq, or `{jobId}:{chunkSeq}`",
        )
        .with("field", "Last-Event-ID")
    };
    let text = value.to_str().map_err(|_| invalid())?.trim();
    let seq = |s: &str| {
        s.parse::<u64>()
            .ok()
            .filter(|n| *n < super::jobs::MAX_CURSOR)
    };
    match text.split_once(':') {
        // An id names the chunk the client has: resume after it.
        None => seq(text).map(|n| Resume::At(n + 1)).ok_or_else(invalid),
        Some((job, n)) => {
            let job = job.parse::<JobId>().map_err(|_| invalid())?;
            seq(n).map(|n| Resume::After(job, n)).ok_or_else(invalid)
        }
    }
}

/// What a stream is of.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    Job(JobId),
    Offset(Offset),
}

impl Target {
    pub fn is_offset(self) -> bool {
        matches!(self, Target::Offset(_))
    }
}

/// From the route: `/v1/offsets/{offset}/...` or `/v1/jobs/{job_id}/...`,
/// so one handler per transport serves both.
impl<S: Send + Sync> FromRequestParts<S> for Target {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Target, ApiError> {
        if parts.uri.path().starts_with("/v1/offsets/") {
            let OffsetPath(offset) = OffsetPath::from_request_parts(parts, state).await?;
            Ok(Target::Offset(offset))
        } else {
            let JobIdPath(id) = JobIdPath::from_request_parts(parts, state).await?;
            Ok(Target::Job(id))
        }
    }
}

/// The stream of `target` as its caller may see it: 404 for another
/// tenant's job, or while no job of the caller's tenant holds the offset,
/// as for polling.
pub async fn open(
    state: &AppState,
    who: &Principal,
    target: Target,
    resume: Resume,
) -> Result<Follower, ApiError> {
    let jobs = state.jobs.clone();
    Ok(match target {
        Target::Job(id) => {
            let job = state.jobs.job(who, id).await?;
            Follower::Job(Box::new(JobFollower::new(jobs, job, resume.from_in(id))))
        }
        Target::Offset(offset) => {
            let job = state.jobs.job_at_offset(who, offset).await?;
            let who = who.clone();
            Follower::Offset(Box::new(OffsetFollower::new(
                jobs, who, offset, job, resume,
            )))
        }
    })
}

/// The id of a chunk's event: its `chunkSeq`, or on an offset stream
/// `{jobId}:{chunkSeq}`, so that a client resuming after the offset moved
/// to another job starts that job from its first chunk.
pub fn event_id(offset_stream: bool, job: JobId, seq: u64) -> String {
    if offset_stream {
        format!("{job}:{seq}")
    } else {
        seq.to_string()
    }
}

/// A job as the `job` and `end` events tell it.
pub fn job_summary(job: &JobRecord) -> Value {
    json!({
        "jobId": job.id(),
        "offset": job.spec.offset,
        "status": job.status,
        "rows": job.rows,
        "chunks": job.chunks,
        "truncated": job.truncated,
        "error": job.error,
    })
}

/// The problem a stream ends with: its code, and the JSON document.
pub fn end_problem(why: StreamEnd) -> ApiError {
    match why {
        StreamEnd::SlowConsumer => ApiError::new(
            ErrorCode::StreamTooSlow,
            "the client fell too far behind the job's chunks and was dropped; reconnect with `Last-Event-ID` (or `from`) to resume",
        ),
        StreamEnd::ShuttingDown => ApiError::new(
            ErrorCode::ShuttingDown,
            "this instance is shutting down; reconnect with `Last-Event-ID` (or `from`) to resume on another",
        ),
        StreamEnd::Expired(id) => JobError::JobNotFound(id.to_string()).into(),
        StreamEnd::Failed(e) => e.into(),
    }
}

/// Whether `event` is a stream's last.
pub fn is_final(event: &PushEvent, offset_stream: bool) -> bool {
    match event {
        PushEvent::Closed(_) => true,
        PushEvent::End(_) => !offset_stream,
        _ => false,
    }
}
