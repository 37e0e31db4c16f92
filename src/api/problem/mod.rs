//! One closed table of error codes, and `ApiError`: the only way a handler
//! fails. Every layer's error maps to an `ErrorCode`; the code decides the
//! problem `type`, title, HTTP status and whether `Retry-After` is sent, so
//! type URIs never drift.

use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

mod code;
mod from;

pub use code::{Described, ErrorCode};

/// Prefix of every problem `type`: a stable identifier, documented in the
/// README and the OpenAPI document.
pub const PROBLEM_BASE: &str = "https://pseudostream.dev/problems/";

/// A problem+json response in the making.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: String,
    /// When to retry, for the codes that send `Retry-After`; `None` takes
    /// the table's default.
    pub retry_after: Option<Duration>,
    /// Extension members, e.g. `line`, `column`, `expected` for filter errors.
    pub extensions: Map<String, Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            code,
            detail: detail.into(),
            retry_after: None,
            extensions: Map::new(),
        }
    }

    pub(crate) fn retry_after(mut self, after: Duration) -> ApiError {
        self.retry_after = Some(after);
        self
    }

    pub(crate) fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }
}

impl ApiError {
    /// The problem document.
    pub(crate) fn body(&self) -> String {
        let Described {
            slug,
            title,
            status,
            ..
        } = self.code.describe();
        let mut body = json!({
            "type": format!("{PROBLEM_BASE}{slug}"),
            "title": title,
            "status": status.as_u16(),
            "detail": self.detail,
        });
        if let Value::Object(map) = &mut body {
            map.extend(self.extensions.clone());
        }
        body.to_string()
    }

    /// `Retry-After` in whole seconds, rounded up (a client retrying early
    /// only gets another 429/503): sent for exactly the codes the table
    /// says, with the error's own delay when it has one.
    pub(crate) fn retry_after_header(&self) -> Option<u64> {
        let default = self.code.describe().retry_after?;
        let after = self.retry_after.unwrap_or(default);
        Some((after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1))
    }

    /// A whole HTTP/1.1 response that closes the connection, for answers
    /// written straight to a socket, outside hyper (see `api::server`).
    pub(crate) fn to_http1_bytes(&self) -> Vec<u8> {
        let status = self.code.status();
        let body = self.body();
        let mut head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        );
        if let Some(secs) = self.retry_after_header() {
            head.push_str(&format!("retry-after: {secs}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        bytes
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let Described { slug, status, .. } = self.code.describe();
        if status.is_server_error() {
            tracing::warn!(problem = slug, detail = %self.detail, "request failed");
        }
        let mut response = (status, self.body()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after_header() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.code == ErrorCode::Unauthorized {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
