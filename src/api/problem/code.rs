//! The closed table of error codes: for each, the problem `type` slug, the
//! title, the HTTP status and whether `Retry-After` is sent (with the
//! default used when the error does not say when to retry).

use std::time::Duration;

use axum::http::StatusCode;

use crate::filter::FilterErrorKind;

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
    /// The filter language's own kinds, whose slugs the filter module owns.
    Filter(FilterErrorKind),
    TimeRangeTooLong,
    IdempotencyKeyReused,
    Unauthorized,
    Forbidden,
    JobNotFound,
    OffsetNotFound,
    NotFound,
    MethodNotAllowed,
    UpgradeRequired,
    RateLimited,
    PoolExhausted,
    Overloaded,
    StreamTooSlow,
    ShuttingDown,
    AuditUnavailable,
    BackendUnavailable,
    Internal,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Described {
    pub slug: &'static str,
    pub title: &'static str,
    pub status: StatusCode,
    /// `Some`: `Retry-After` is always sent, this long unless the error
    /// says otherwise. `None`: never sent.
    pub retry_after: Option<Duration>,
}

const fn row(slug: &'static str, title: &'static str, status: StatusCode) -> Described {
    Described {
        slug,
        title,
        status,
        retry_after: None,
    }
}

const fn retry(
    slug: &'static str,
    title: &'static str,
    status: StatusCode,
    secs: u64,
) -> Described {
    Described {
        slug,
        title,
        status,
        retry_after: Some(Duration::from_secs(secs)),
    }
}

impl ErrorCode {
    pub fn describe(self) -> Described {
        use ErrorCode::*;
        use StatusCode as S;
        match self {
            MalformedRequest => row(
                "malformed-request",
                "The request is not valid HTTP",
                S::BAD_REQUEST,
            ),
            UriTooLong => row(
                "uri-too-long",
                "The request target is too long",
                S::URI_TOO_LONG,
            ),
            HeadersTooLarge => row(
                "headers-too-large",
                "The request headers are too large",
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
            RequestTimeout => row(
                "request-timeout",
                "The request did not arrive in time",
                S::REQUEST_TIMEOUT,
            ),
            InvalidJson => row(
                "invalid-json",
                "The request body is not valid JSON for this operation",
                S::BAD_REQUEST,
            ),
            UnsupportedMediaType => row(
                "unsupported-media-type",
                "The request body must be application/json",
                S::UNSUPPORTED_MEDIA_TYPE,
            ),
            BodyTooLarge => row(
                "body-too-large",
                "The request body is too large",
                S::PAYLOAD_TOO_LARGE,
            ),
            InvalidRequest => row(
                "invalid-request",
                "The request has an invalid value",
                S::BAD_REQUEST,
            ),
            InvalidParameter => row(
                "invalid-parameter",
                "A query, path or header parameter is invalid",
                S::BAD_REQUEST,
            ),
            Filter(kind) => row(kind.slug(), filter_title(kind), S::BAD_REQUEST),
            TimeRangeTooLong => row(
                "time-range-too-long",
                "The time range is too long",
                S::BAD_REQUEST,
            ),
            IdempotencyKeyReused => row(
                "idempotency-key-reused",
                "The Idempotency-Key was used with a different request",
                S::UNPROCESSABLE_ENTITY,
            ),
            Unauthorized => row(
                "unauthorized",
                "A valid API key is required",
                S::UNAUTHORIZED,
            ),
            Forbidden => row("forbidden", "Your role may not do this", S::FORBIDDEN),
            JobNotFound => row("job-not-found", "No such job", S::NOT_FOUND),
            OffsetNotFound => row("offset-not-found", "No job holds this offset", S::NOT_FOUND),
            NotFound => row("not-found", "No such resource", S::NOT_FOUND),
            MethodNotAllowed => row(
                "method-not-allowed",
                "This method is not allowed here",
                S::METHOD_NOT_ALLOWED,
            ),
            UpgradeRequired => row(
                "upgrade-required",
                "This route speaks WebSocket",
                S::UPGRADE_REQUIRED,
            ),
            RateLimited => retry("rate-limited", "Too many new jobs", S::TOO_MANY_REQUESTS, 5),
            PoolExhausted => retry(
                "pool-exhausted",
                "Every result offset is in use",
                S::SERVICE_UNAVAILABLE,
                5,
            ),
            Overloaded => retry(
                "overloaded",
                "The service is at capacity",
                S::SERVICE_UNAVAILABLE,
                5,
            ),
            StreamTooSlow => retry(
                "stream-too-slow",
                "The client did not keep up with the stream",
                S::SERVICE_UNAVAILABLE,
                1,
            ),
            ShuttingDown => retry(
                "shutting-down",
                "The service is shutting down",
                S::SERVICE_UNAVAILABLE,
                1,
            ),
            AuditUnavailable => retry(
                "audit-unavailable",
                "The audit log is unavailable",
                S::SERVICE_UNAVAILABLE,
                5,
            ),
            BackendUnavailable => retry(
                "backend-unavailable",
                "A backend is unavailable",
                S::SERVICE_UNAVAILABLE,
                5,
            ),
            Internal => row("internal", "Internal error", S::INTERNAL_SERVER_ERROR),
        }
    }

    pub fn slug(self) -> &'static str {
        self.describe().slug
    }

    pub fn status(self) -> StatusCode {
        self.describe().status
    }
}

fn filter_title(kind: FilterErrorKind) -> &'static str {
    use FilterErrorKind as K;
    match kind {
        K::Syntax => "The filter has a syntax error",
        K::UnknownField => "The filter names a field the source does not have",
        K::TypeMismatch => "An operator or value does not fit the field's type",
        K::InvalidLiteral => "A value in the filter is malformed",
        K::InvalidRegex => "A regular expression in the filter is invalid",
        K::TooLong => "The filter is too long",
        K::TooDeep => "The filter is nested too deeply",
        K::TooManyNodes => "The filter has too many terms",
        K::InListTooLarge => "An `in` list is too long",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_429_and_503_sends_retry_after_and_nothing_else_does() {
        use FilterErrorKind as K;
        let codes = [
            ErrorCode::MalformedRequest,
            ErrorCode::UriTooLong,
            ErrorCode::HeadersTooLarge,
            ErrorCode::RequestTimeout,
            ErrorCode::InvalidJson,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::BodyTooLarge,
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidParameter,
            ErrorCode::Filter(K::Syntax),
            ErrorCode::Filter(K::InListTooLarge),
            ErrorCode::TimeRangeTooLong,
            ErrorCode::IdempotencyKeyReused,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::JobNotFound,
            ErrorCode::OffsetNotFound,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::UpgradeRequired,
            ErrorCode::RateLimited,
            ErrorCode::PoolExhausted,
            ErrorCode::Overloaded,
            ErrorCode::StreamTooSlow,
            ErrorCode::ShuttingDown,
            ErrorCode::AuditUnavailable,
            ErrorCode::BackendUnavailable,
            ErrorCode::Internal,
        ];
        let mut slugs = Vec::new();
        for code in codes {
            let row = code.describe();
            let retryable = matches!(row.status.as_u16(), 429 | 503);
            assert_eq!(row.retry_after.is_some(), retryable, "{code:?}");
            slugs.push(row.slug);
        }
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), codes.len(), "slugs are distinct");
    }
}
