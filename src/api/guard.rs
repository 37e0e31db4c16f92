//! Checks every request passes before its route runs, for what no single
//! handler should have to remember:
//! - a body declared larger than the limit is refused (413) before a byte
//!   of it is read, so `Expect: 100-continue` gets 413 rather than
//!   `100 Continue`, and a huge `Content-Length` holds no connection open;
//! - a body must arrive whole within the body timeout (408 otherwise, see
//!   `DeadlineBody`), so a client cannot trickle one byte at a time;
//! - paths are taken as the API writes them: a percent-encoded path names
//!   nothing (ids and offsets have one form, e.g. `/v1/offsets/1`, never
//!   `/v1/offsets/%31`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};

use super::problem::{ApiError, ErrorCode};

/// Limits on a request's body, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
}

impl BodyLimits {
    pub fn of(config: &crate::config::Config) -> BodyLimits {
        BodyLimits {
            max_bytes: config.max_body_bytes,
            timeout: config.body_timeout,
        }
    }
}

pub async fn guard(
    State(limits): State<Arc<BodyLimits>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path().contains('%') {
        return ApiError::new(
            ErrorCode::NotFound,
            "no such route; write paths as the API gives them, without percent-encoding (e.g. /v1/offsets/1)",
        )
        .into_response();
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes as u64) {
        return ApiError::new(
            ErrorCode::BodyTooLarge,
            format!(
                "the body may hold at most {} bytes; this one declares more",
                limits.max_bytes
            ),
        )
        .into_response();
    }
    let request = request.map(|body| Body::new(DeadlineBody::new(body, limits.timeout)));
    next.run(request).await
}

/// The error a body gives once its deadline passed; `extract` turns it into 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body timeout")]
pub struct BodyTimedOut;

/// A request body that must arrive whole by a deadline, counted from when
/// the request's head was read.
struct DeadlineBody {
    body: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    fn new(body: Body, timeout: Duration) -> DeadlineBody {
        DeadlineBody {
            body,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
