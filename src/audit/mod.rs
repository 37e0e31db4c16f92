//! The audit trail: one row per accepted submission, written before the 202
//! (fail closed) and updated as the job moves. `sqlite` is the embedded
//! implementation, `postgres` the shared one for multi-instance deployments;
//! `retention` prunes rows past their keeping time; `outbox` keeps the
//! updates that failed until they land. Submissions turned away never
//! become jobs: `rejections` counts them in memory and writes the counts
//! per minute, user and reason.

pub mod outbox;
pub mod postgres;
pub mod rejections;
pub mod retention;
pub mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::model::{JobId, JobRecord, JobStatus};

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
/// one fingerprint, one status and a window of submission times; newest
/// first, starting after `after` when paging.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub tenant: String,
    pub user: Option<String>,
    pub fingerprint: Option<String>,
    pub status: Option<JobStatus>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Only rows after this one in the newest-first order.
    pub after: Option<AuditCursor>,
    pub limit: u32,
}

/// Where a page of the trail ended: the last row's submission time and id,
/// the order's key. Rows are found by value, not by position, so rows
/// written while ops page through never shift or repeat a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCursor {
    pub submitted_at: DateTime<Utc>,
    pub submission_id: uuid::Uuid,
}

impl AuditCursor {
    /// The cursor after `entry`; `None` for a row whose times or id the
    /// store did not write (it never happens to a row read back).
    pub fn after(entry: &AuditEntry) -> Option<AuditCursor> {
        Some(AuditCursor {
            submitted_at: DateTime::parse_from_rfc3339(&entry.submitted_at)
                .ok()?
                .with_timezone(&Utc),
            submission_id: entry.submission_id.parse().ok()?,
        })
    }
}

/// The text form clients pass back: `{submitted_at in µs}.{submission_id}`,
/// URL-safe as it is.
impl std::fmt::Display for AuditCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}",
            self.submitted_at.timestamp_micros(),
            self.submission_id.hyphenated()
        )
    }
}

impl std::str::FromStr for AuditCursor {
    type Err = ();
    fn from_str(s: &str) -> Result<AuditCursor, ()> {
        let (micros, id) = s.split_once('.').ok_or(())?;
        Ok(AuditCursor {
            submitted_at: DateTime::from_timestamp_micros(micros.parse().map_err(|_| ())?)
                .ok_or(())?,
            submission_id: uuid::Uuid::try_parse(id).map_err(|_| ())?,
        })
    }
}

/// Submissions of one user of one tenant turned away for one reason within
/// one UTC minute (`minute` is its start), with the filter text of one of
/// them. `reason` is a `pseudostream_rejections_total` reason
/// (`rate_limited`, `pool_exhausted`, ...); `user_id` is `(other)` for
/// users counted together (see [`rejections`]). `sample_filter` holds no
/// NUL (Postgres text cannot).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RejectionCount {
    pub minute: DateTime<Utc>,
    pub tenant: String,
    pub user_id: String,
    pub reason: String,
    pub count: i64,
    pub sample_filter: String,
}

#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Writes the submission's row; the job is not accepted unless this succeeds.
    async fn record_submission(&self, entry: &AuditEntry) -> Result<(), AuditError>;
    /// Copies the job's status, counters and times onto its rows; a time
    /// the record does not have (one rebuilt after its store lost it)
    /// leaves the row's as it was.
    async fn record_progress(&self, job: &JobRecord) -> Result<(), AuditError>;
    async fn record_expired(&self, job: JobId, at: DateTime<Utc>) -> Result<(), AuditError>;
    /// Marks jobs that were queued or running when the process last stopped:
    /// the embedded coordinator forgets them on restart.
    async fn record_interrupted(&self, at: DateTime<Utc>) -> Result<u64, AuditError>;
    async fn search(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, AuditError>;
    /// Adds each count to the row of its minute, tenant, user and reason,
    /// creating the row (with the count's sample filter) when there is none;
    /// all of them or none. At most one count per row in one call.
    async fn record_rejections(&self, counts: &[RejectionCount]) -> Result<(), AuditError>;
    /// The tenant's rejection rows whose minute starts at or after `since`,
    /// by minute, user and reason.
    async fn rejections(
        &self,
        tenant: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<RejectionCount>, AuditError>;
    /// Deletes up to `batch` of the oldest rows from before `before` and
    /// says how many went: submissions (by submission time), then rejection
    /// counts (by minute). `retention` calls it until fewer than `batch`
    /// go, so no single statement holds a table for long.
    async fn prune(&self, before: DateTime<Utc>, batch: u32) -> Result<u64, AuditError>;
    /// Answers when the store does (readiness): a trivial query.
    async fn ready(&self) -> Result<(), AuditError>;
    /// Closes connections at shutdown, after the last write.
    async fn close(&self) {}
}

/// What a prune of `batch` rows may still delete after `deleted`.
pub(crate) fn room_left(batch: u32, deleted: u64) -> u32 {
    batch.saturating_sub(u32::try_from(deleted).unwrap_or(u32::MAX))
}

pub(crate) fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_written_and_nothing_else_reads() {
        let cursor = AuditCursor {
            submitted_at: DateTime::parse_from_rfc3339("2026-11-01T12:00:00.123456Z")
                .unwrap()
                .with_timezone(&Utc),
            submission_id: uuid::Uuid::now_v7(),
        };
        let text = cursor.to_string();
        assert_eq!(text.parse::<AuditCursor>(), Ok(cursor));
        for bad in ["", "1", "x.y", "1.not-a-uuid", "99999999999999999999.0"] {
            assert!(bad.parse::<AuditCursor>().is_err(), "{bad:?}");
        }
    }
}
