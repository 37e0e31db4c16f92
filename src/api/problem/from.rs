//! Every layer's error, mapped to its code in the table.

use super::{ApiError, ErrorCode};
use crate::audit::AuditError;
use crate::filter::{FilterError, FilterErrorKind, TimeRangeError};
use crate::jobs::JobError;
use crate::source::SourceErrorKind;

impl From<FilterError> for ApiError {
    fn from(e: FilterError) -> ApiError {
        let mut error = ApiError::new(ErrorCode::Filter(e.kind), e.to_string())
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
            JobError::MaxRowsOutOfRange { .. } => {
                ApiError::new(ErrorCode::InvalidRequest, detail).with("field", "maxRows")
            }
            JobError::UnknownField { .. } => {
                ApiError::new(ErrorCode::Filter(FilterErrorKind::UnknownField), detail)
                    .with("field", "fields")
            }
            JobError::TimeRange(TimeRangeError::TooLong { .. }) => {
                ApiError::new(ErrorCode::TimeRangeTooLong, detail).with("field", "timeRange")
            }
            JobError::TimeRange(_) => {
                ApiError::new(ErrorCode::InvalidRequest, detail).with("field", "timeRange")
            }
            JobError::NotAStaleness { .. } => {
                ApiError::new(ErrorCode::InvalidRequest, detail).with("field", "maxStaleness")
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
            JobError::ShuttingDown => ApiError::new(ErrorCode::ShuttingDown, detail),
            JobError::Audit(_) => ApiError::new(ErrorCode::AuditUnavailable, detail),
            JobError::Source(e) => {
                let code = match e.kind() {
                    SourceErrorKind::Invalid => ErrorCode::InvalidRequest,
                    SourceErrorKind::Unavailable => ErrorCode::BackendUnavailable,
                    SourceErrorKind::Internal => ErrorCode::Internal,
                };
                ApiError::new(code, detail)
            }
            JobError::Coord(_) | JobError::Results(_) => {
                ApiError::new(ErrorCode::BackendUnavailable, detail)
            }
        }
    }
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> ApiError {
        ApiError::new(ErrorCode::AuditUnavailable, e.to_string())
    }
}
