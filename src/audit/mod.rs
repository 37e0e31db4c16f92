//! The audit trail: one row per accepted submission, written before the 202
//! (fail closed) and updated as the job moves. `sqlite` is the embedded
//! implementation, `postgres` the shared one for multi-instance deployments;
//! `retention` prunes rows past their keeping time; `outbox` keeps the
//! updates that failed until they land.

pub mod outbox;
pub mod postgres;
pub mod retention;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{JobId, JobRecord};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    #[error("audit migration failed: {0}")]
    Migration(String),
    /// The entry or setting cannot be stored as given (a caller's bug, or a
    /// bad configuration value), as opposed to the store being unreachable.
    #[error("invalid audit data: {0}")]
    Invalid(String),
}

impl From<sqlx::Error> for AuditError {
    fn from(e: sqlx::Error) -> Self {
        AuditError::Unavailable(e.to_string())
    }
}

/// A submission as audited. Timestamps are RFC 3339 UTC.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub submission_id: String,
    pub job_id: String,
    pub fingerprint: String,
    #[serde(rename = "user")]
    pub user_id: String,
    pub tenant: String,
    #[serde(rename = "offset")]
    pub result_offset: i64,
    #[serde(rename = "filter")]
    pub filter_text: String,
    pub canonical_filter: String,
    pub time_from: String,
    pub time_to: String,
    pub deduplicated_from: Option<String>,
    pub status: String,
    #[serde(rename = "rows")]
    pub row_count: i64,
    #[serde(rename = "chunks")]
    pub chunk_count: i64,
    pub truncated: bool,
    pub error: Option<String>,
    pub submitted_at: String,
    pub started_at: Option<String>,
    pub first_chunk_at: Option<String>,
    pub finished_at: Option<String>,
    pub expired_at: Option<String>,
}

/// What ops ask of the trail, within their own tenant: optionally one user,
/// optionally a window of submission times; newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub tenant: String,
    pub user: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: u32,
}

#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Writes the submission's row; the job is not accepted unless this succeeds.
    async fn record_submission(&self, entry: &AuditEntry) -> Result<(), AuditError>;
    /// Copies the job's status, counters and times onto its rows.
    async fn record_progress(&self, job: &JobRecord) -> Result<(), AuditError>;
    async fn record_expired(&self, job: JobId, at: DateTime<Utc>) -> Result<(), AuditError>;
    /// Marks jobs that were queued or running when the process last stopped:
    /// the embedded coordinator forgets them on restart.
    async fn record_interrupted(&self, at: DateTime<Utc>) -> Result<u64, AuditError>;
    async fn search(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, AuditError>;
    /// Deletes up to `batch` of the oldest rows submitted before `before`
    /// and says how many went; `retention` calls it until fewer than
    /// `batch` go, so no single statement holds the table for long.
    async fn prune(&self, before: DateTime<Utc>, batch: u32) -> Result<u64, AuditError>;
    /// Answers when the store does (readiness): a trivial query.
    async fn ready(&self) -> Result<(), AuditError>;
    /// Closes connections at shutdown, after the last write.
    async fn close(&self) {}
}

pub(crate) fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
