//! One closed table of error codes, and `ApiError`: the only way a handler
//! fails. Every layer's error maps to an `ErrorCode`; the code decides the
//! problem `type`, title, HTTP status and whether `Retry-After` is sent, so
//! type URIs never drift.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::audit::AuditError;
use crate::filter::{FilterError, TimeRangeError};
use crate::jobs::JobError;

/// Prefix of every problem `type`: a stable identifier, documented in the
/// README and the OpenAPI document.
pub const PROBLEM_BASE: &str = "https://pseudostream.dev/problems/";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    MalformedRequest,
    UriTooLong,
    HeadersTooLarge,
    RequestTimeout,
    InvalidJson,
    UnsupportedMediaType,
    BodyTooLarge,
    InvalidRequest,
    InvalidParameter,
    FilterSyntax,
    UnknownField,
    TypeMismatch,
    InvalidLiteral,
    InvalidRegex,
    FilterTooLong,
    FilterTooDeep,
    FilterTooManyNodes,
    InListTooLarge,
    TimeRangeTooLong,
    IdempotencyKeyReused,
    Unauthorized,
    Forbidden,
    JobNotFound,
    OffsetNotFound,
    NotFound,
    MethodNotAllowed,
    RateLimited,
    PoolExhausted,
    Overloaded,
    ShuttingDown,
    AuditUnavailable,
    BackendUnavailable,
    Internal,
}

impl ErrorCode {
    /// (slug, title, status)
    fn describe(self) -> (&'static str, &'static str, StatusCode) {
        use ErrorCode::*;
        match self {
            MalformedRequest => (
                "malformed-request",
                "The request is not valid HTTP",
                StatusCode::BAD_REQUEST,
            ),
            UriTooLong => (
                "uri-too-long",
                "The request target is too long",
                StatusCode::URI_TOO_LONG,
            ),
            HeadersTooLarge => (
                "headers-too-large",
                "The request headers are too large",
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
            RequestTimeout => (
                "request-timeout",
                "The request did not arrive in time",
                StatusCode::REQUEST_TIMEOUT,
            ),
            InvalidJson => (
                "invalid-json",
                "The request body is not valid JSON for this operation",
                StatusCode::BAD_REQUEST,
            ),
            UnsupportedMediaType => (
                "unsupported-media-type",
                "The request body must be application/json",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            BodyTooLarge => (
                "body-too-large",
                "The request body is too large",
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            InvalidRequest => (
                "invalid-request",
                "The request has an invalid value",
                StatusCode::BAD_REQUEST,
            ),
            InvalidParameter => (
                "invalid-parameter",
                "A query, path or header parameter is invalid",
                StatusCode::BAD_REQUEST,
            ),
            FilterSyntax => (
                "filter-syntax",
                "The filter has a syntax error",
                StatusCode::BAD_REQUEST,
            ),
            UnknownField => (
                "unknown-field",
                "The filter names a field the source does not have",
                StatusCode::BAD_REQUEST,
            ),
            TypeMismatch => (
                "type-mismatch",
                "An operator or value does not fit the field's type",
                StatusCode::BAD_REQUEST,
            ),
            InvalidLiteral => (
                "invalid-literal",
                "A value in the filter is malformed",
                StatusCode::BAD_REQUEST,
            ),
            InvalidRegex => (
                "invalid-regex",
                "A regular expression in the filter is invalid",
                StatusCode::BAD_REQUEST,
            ),
            FilterTooLong => (
                "filter-too-long",
                "The filter is too long",
                StatusCode::BAD_REQUEST,
            ),
            FilterTooDeep => (
                "filter-too-deep",
                "The filter is nested too deeply",
                StatusCode::BAD_REQUEST,
            ),
            FilterTooManyNodes => (
                "filter-too-many-nodes",
                "The filter has too many terms",
                StatusCode::BAD_REQUEST,
            ),
            InListTooLarge => (
                "in-list-too-large",
                "An `in` list is too long",
                StatusCode::BAD_REQUEST,
            ),
            TimeRangeTooLong => (
                "time-range-too-long",
                "The time range is too long",
                StatusCode::BAD_REQUEST,
            ),
            IdempotencyKeyReused => (
                "idempotency-key-reused",
                "The Idempotency-Key was used with a different request",
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            Unauthorized => (
                "unauthorized",
                "A valid API key is required",
                StatusCode::UNAUTHORIZED,
            ),
            Forbidden => (
                "forbidden",
                "Your role may not do this",
                StatusCode::FORBIDDEN,
            ),
            JobNotFound => ("job-not-found", "No such job", StatusCode::NOT_FOUND),
            OffsetNotFound => (
                "offset-not-found",
                "No job holds this offset",
                StatusCode::NOT_FOUND,
            ),
            NotFound => ("not-found", "No such resource", StatusCode::NOT_FOUND),
            MethodNotAllowed => (
                "method-not-allowed",
                "This method is not allowed here",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            RateLimited => (
                "rate-limited",
                "Too many new jobs",
                StatusCode::TOO_MANY_REQUESTS,
            ),
            PoolExhausted => (
                "pool-exhausted",
                "Every result offset is in use",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            Overloaded => (
                "overloaded",
                "The service is at capacity",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            ShuttingDown => (
                "shutting-down",
                "The service is shutting down",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            AuditUnavailable => (
                "audit-unavailable",
                "The audit log is unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            BackendUnavailable => (
                "backend-unavailable",
                "A backend is unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            Internal => (
                "internal",
                "Internal error",
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        }
    }

    pub fn slug(self) -> &'static str {
        self.describe().0
    }

    pub fn status(self) -> StatusCode {
        self.describe().2
    }
}

/// A problem+json response in the making.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: String,
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
    fn body(&self) -> String {
        let (slug, title, status) = self.code.describe();
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

    /// `Retry-After` in whole seconds, rounded up: a client retrying early
    /// only gets another 429/503.
    fn retry_after_header(&self) -> Option<u64> {
        self.retry_after
            .map(|after| (after.as_secs() + u64::from(after.subsec_nanos() > 0)).max(1))
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
        let (slug, _, status) = self.code.describe();
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

impl From<FilterError> for ApiError {
    fn from(e: FilterError) -> ApiError {
        use crate::filter::FilterErrorKind as K;
        let code = match e.kind {
            K::Syntax => ErrorCode::FilterSyntax,
            K::UnknownField => ErrorCode::UnknownField,
            K::TypeMismatch => ErrorCode::TypeMismatch,
            K::InvalidLiteral => ErrorCode::InvalidLiteral,
            K::InvalidRegex => ErrorCode::InvalidRegex,
            K::TooLong => ErrorCode::FilterTooLong,
            K::TooDeep => ErrorCode::FilterTooDeep,
            K::TooManyNodes => ErrorCode::FilterTooManyNodes,
            K::InListTooLarge => ErrorCode::InListTooLarge,
        };
        let mut error = ApiError::new(code, e.to_string())
            .with("line", e.line)
            .with("column", e.column);
        if let Some(expected) = &e.expected {
            error = error.with("expected", expected.as_str());
        }
        error
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> ApiError {
        let detail = e.to_string();
        match e {
            JobError::Filter(f) => f.into(),
            JobError::InvalidRequest { field, .. } => {
                ApiError::new(ErrorCode::InvalidRequest, detail).with("field", field)
            }
            JobError::UnknownField { .. } => {
                ApiError::new(ErrorCode::UnknownField, detail).with("field", "fields")
            }
            JobError::TimeRange(TimeRangeError::TooLong { .. }) => {
                ApiError::new(ErrorCode::TimeRangeTooLong, detail).with("field", "timeRange")
            }
            JobError::TimeRange(_) => {
                ApiError::new(ErrorCode::InvalidRequest, detail).with("field", "timeRange")
            }
            JobError::IdempotencyKeyReused => {
                ApiError::new(ErrorCode::IdempotencyKeyReused, detail)
                    .with("field", "Idempotency-Key")
            }
            JobError::JobNotFound(_) => ApiError::new(ErrorCode::JobNotFound, detail),
            JobError::OffsetNotFound(_) => ApiError::new(ErrorCode::OffsetNotFound, detail),
            JobError::RateLimited { retry_after } => {
                ApiError::new(ErrorCode::RateLimited, detail).retry_after(retry_after)
            }
            JobError::PoolExhausted { retry_after } => {
                ApiError::new(ErrorCode::PoolExhausted, detail).retry_after(retry_after)
            }
            JobError::Overloaded { retry_after } => {
                ApiError::new(ErrorCode::Overloaded, detail).retry_after(retry_after)
            }
            JobError::ShuttingDown => {
                ApiError::new(ErrorCode::ShuttingDown, detail).retry_after(Duration::from_secs(1))
            }
            JobError::Audit(_) => ApiError::new(ErrorCode::AuditUnavailable, detail)
                .retry_after(Duration::from_secs(5)),
            JobError::Coord(_) | JobError::Results(_) | JobError::Source(_) => {
                ApiError::new(ErrorCode::BackendUnavailable, detail)
                    .retry_after(Duration::from_secs(5))
            }
        }
    }
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> ApiError {
        ApiError::new(ErrorCode::AuditUnavailable, e.to_string())
            .retry_after(Duration::from_secs(5))
    }
}
