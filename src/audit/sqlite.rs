//! The embedded audit log: a SQLite file in the data directory, via sqlx,
//! with the migrations under `migrations/sqlite`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{AuditEntry, AuditError, AuditLog, AuditQuery, rfc3339};
use crate::jobs::model::{JobId, JobRecord};

pub struct SqliteAuditLog {
    pool: SqlitePool,
}

impl SqliteAuditLog {
    /// Opens (creating if needed) `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<SqliteAuditLog, AuditError> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(AuditError::from)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL survives a process crash; only an OS crash may lose
            // the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| AuditError::Migration(e.to_string()))?;
        Ok(SqliteAuditLog { pool })
    }
}

#[async_trait]
impl AuditLog for SqliteAuditLog {
    async fn close(&self) {
        self.pool.close().await;
    }

    async fn record_submission(&self, e: &AuditEntry) -> Result<(), AuditError> {
        sqlx::query(
            "INSERT INTO audit_submissions (submission_id, job_id, fingerprint, user_id, tenant, result_offset,
                filter_text, canonical_filter, time_from, time_to, deduplicated_from, status, row_count,
                chunk_count, truncated, error, submitted_at, started_at, first_chunk_at, finished_at, expired_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&e.submission_id)
        .bind(&e.job_id)
        .bind(&e.fingerprint)
        .bind(&e.user_id)
        .bind(&e.tenant)
        .bind(e.result_offset)
        .bind(&e.filter_text)
        .bind(&e.canonical_filter)
        .bind(&e.time_from)
        .bind(&e.time_to)
        .bind(&e.deduplicated_from)
        .bind(&e.status)
        .bind(e.row_count)
        .bind(e.chunk_count)
        .bind(e.truncated)
        .bind(&e.error)
        .bind(&e.submitted_at)
        .bind(&e.started_at)
        .bind(&e.first_chunk_at)
        .bind(&e.finished_at)
        .bind(&e.expired_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_progress(&self, job: &JobRecord) -> Result<(), AuditError> {
        sqlx::query(
            "UPDATE audit_submissions SET status = ?, row_count = ?, chunk_count = ?, truncated = ?, error = ?,
                started_at = ?, first_chunk_at = ?, finished_at = ?
             WHERE job_id = ? AND expired_at IS NULL",
        )
        .bind(job.status.as_str())
        .bind(job.rows as i64)
        .bind(job.chunks as i64)
        .bind(job.truncated)
        .bind(&job.error)
        .bind(job.started_at.map(rfc3339))
        .bind(job.first_chunk_at.map(rfc3339))
        .bind(job.finished_at.map(rfc3339))
        .bind(job.id().to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_expired(&self, job: JobId, at: DateTime<Utc>) -> Result<(), AuditError> {
        sqlx::query(
            "UPDATE audit_submissions SET status = 'expired', expired_at = ? WHERE job_id = ?",
        )
        .bind(rfc3339(at))
        .bind(job.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_interrupted(&self, at: DateTime<Utc>) -> Result<u64, AuditError> {
        let done = sqlx::query(
            "UPDATE audit_submissions SET status = 'failed', error = 'interrupted: the service restarted',
                finished_at = ? WHERE status IN ('queued', 'running')",
        )
        .bind(rfc3339(at))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn search(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, AuditError> {
        let rows = sqlx::query_as::<_, AuditEntry>(
            "SELECT * FROM audit_submissions
             WHERE tenant = ?5 AND (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR submitted_at >= ?2) AND (?3 IS NULL OR submitted_at < ?3)
             ORDER BY submitted_at DESC, submission_id DESC LIMIT ?4",
        )
        .bind(&q.user)
        .bind(q.from.map(rfc3339))
        .bind(q.to.map(rfc3339))
        .bind(q.limit as i64)
        .bind(&q.tenant)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }
}
