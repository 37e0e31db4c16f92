//! Everything that can go wrong in a job's life, as the API reports it.

use std::time::Duration;

use crate::audit::AuditError;
use crate::coord::CoordError;
use crate::filter::{FilterError, TimeRangeError};
use crate::results::ResultError;
use crate::source::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Filter(#[from] FilterError),
    #[error("`maxRows` is {requested}; it must be between 1 and {cap}")]
    MaxRowsOutOfRange { requested: u64, cap: u64 },
    #[error("unknown field `{name}` in `fields`; known fields: {known}")]
    UnknownField { name: String, known: String },
    #[error("{0}")]
    TimeRange(#[from] TimeRangeError),
    #[error(
        "`maxStaleness` = {text:?} is not a duration ({reason}); write e.g. \"60s\" or \"2m\", or \"0s\" for a fresh job"
    )]
    NotAStaleness { text: String, reason: String },
    #[error(
        "this Idempotency-Key was used with a different request; use a new key for a new request"
    )]
    IdempotencyKeyReused,
    #[error("job {0} does not exist, belongs to another tenant, or its result has expired")]
    JobNotFound(String),
    #[error("offset {0} holds no job of yours right now")]
    OffsetNotFound(String),
    #[error("new jobs are limited per user; retry after {} s (identical queries that are still live are free)", .retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    #[error("every result offset is in use; retry after {} s, when results expire", .retry_after.as_secs().max(1))]
    PoolExhausted { retry_after: Duration },
    #[error("the result store is full; retry after {} s, when results expire", .retry_after.as_secs().max(1))]
    Overloaded { retry_after: Duration },
    #[error("the service is shutting down and accepts no new jobs; retry on another instance")]
    ShuttingDown,
    #[error("the audit log could not record the submission, so it was not accepted: {0}")]
    Audit(#[from] AuditError),
    #[error("{0}")]
    Coord(#[from] CoordError),
    #[error("{0}")]
    Results(#[from] ResultError),
    #[error("{0}")]
    Source(#[from] SourceError),
}
