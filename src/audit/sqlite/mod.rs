//! The embedded audit log: a SQLite file in the data directory, via sqlx,
//! with the migrations under `migrations/sqlite`.
//!
//! SQLite takes one writer at a time, so every write goes through one writer
//! task that commits whatever has queued up as one transaction (group
//! commit). Under load, hundreds of submissions share one commit instead of
//! queueing for the write lock one by one. A submission still returns only
//! after its row is committed (the job is not accepted otherwise); progress
//! and expiry updates return once queued, behind every earlier write, so a
//! worker never waits for the disk before running its query. `search` first
//! waits for the writes queued before it, so ops read their own writes.

use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, QueryBuilder, Sqlite, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::{AuditEntry, AuditError, AuditLog, AuditQuery, RejectionCount, rfc3339, room_left};
use crate::model::{JobId, JobRecord, JobStatus};

/// Rejection counts one statement upserts at most (6 bound parameters each,
/// well under SQLite's 32,766 per statement).
const REJECTION_BATCH: usize = 1000;

/// Writes queued at most; a full queue makes callers wait (nothing is dropped).
const WRITE_QUEUE: usize = 8192;
/// WAL pages (4 KiB each, so about 40 MB) at which the writer checkpoints by
/// itself, on its commit path: the backstop that bounds the WAL when the
/// checkpointer falls behind or has stopped. SQLite's default is 1,000.
const WAL_BACKSTOP_PAGES: u32 = 10_000;

/// A job's audited progress, copied out of its record when queued.
pub(super) struct Progress {
    job_id: String,
    status: &'static str,
    rows: i64,
    chunks: i64,
    truncated: bool,
    error: Option<String>,
    started_at: Option<String>,
    first_chunk_at: Option<String>,
    finished_at: Option<String>,
}

pub(super) enum Write {
    Submission(Box<AuditEntry>, oneshot::Sender<Result<(), AuditError>>),
    Progress(Progress),
    Expired {
        job_id: String,
        at: String,
    },
    /// Answered once every write queued before it is committed (or failed).
    Flush(oneshot::Sender<()>),
}

pub struct SqliteAuditLog {
    pool: SqlitePool,
    /// `None` once closed.
    writes: Mutex<Option<mpsc::Sender<Write>>>,
    writer: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn closed() -> AuditError {
    AuditError::Unavailable("the audit log is closed".into())
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
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| AuditError::Migration(e.to_string()))?;
        // The writer keeps a connection of its own: taking one from the pool
        // for every commit cost a health check, one more round trip to the
        // SQLite thread, while submissions waited for that commit.
        let writer_conn = options
            .clone()
            .pragma("wal_autocheckpoint", WAL_BACKSTOP_PAGES.to_string())
            // A batch's multi-row statements keep statement journals; past
            // 64 KiB SQLite spills them to temporary files, and creating,
            // writing and deleting those cost every large commit a few
            // syscalls. A batch is bounded (WRITE_BATCH), so memory is too.
            .pragma("temp_store", "MEMORY")
            .connect()
            .await?;
        let checkpointer = Checkpointer::start(options.connect().await?);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let writer = tokio::spawn(write_loop(writer_conn, rx, checkpointer));
        Ok(SqliteAuditLog {
            pool,
            writes: Mutex::new(Some(tx)),
            writer: tokio::sync::Mutex::new(Some(writer)),
        })
    }

    async fn queue(&self, write: Write) -> Result<(), AuditError> {
        let tx = self
            .writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(closed)?;
        tx.send(write).await.map_err(|_| closed())
    }

    /// Deletes up to `limit` rows of `table` whose `time` is before
    /// `before`, oldest first. Times are RFC 3339 UTC with microseconds:
    /// as text they sort as times.
    async fn delete_oldest(
        &self,
        table: &str,
        time: &str,
        before: &str,
        limit: u32,
    ) -> Result<u64, AuditError> {
        let done = sqlx::query(&format!(
            "DELETE FROM {table} WHERE rowid IN (
                 SELECT rowid FROM {table} WHERE {time} < ?1 ORDER BY {time} LIMIT ?2)"
        ))
        .bind(before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Waits until every write queued so far is committed (or has failed).
    async fn flush(&self) -> Result<(), AuditError> {
        let (done, flushed) = oneshot::channel();
        self.queue(Write::Flush(done)).await?;
        flushed.await.map_err(|_| closed())
    }
}

mod checkpoint;
mod writer;

use checkpoint::Checkpointer;
use writer::write_loop;

#[async_trait]
impl AuditLog for SqliteAuditLog {
    async fn ready(&self) -> Result<(), AuditError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Stops taking writes, waits for the writer to commit what is queued,
    /// then closes the connections.
    async fn close(&self) {
        drop(self.writes.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(writer) = self.writer.lock().await.take()
            && let Err(e) = writer.await
        {
            warn!(error = %e, "the audit writer task failed");
        }
        self.pool.close().await;
    }

    async fn record_submission(&self, e: &AuditEntry) -> Result<(), AuditError> {
        let (done, committed) = oneshot::channel();
        self.queue(Write::Submission(Box::new(e.clone()), done))
            .await?;
        committed.await.map_err(|_| closed())?
    }

    async fn record_progress(&self, job: &JobRecord) -> Result<(), AuditError> {
        self.queue(Write::Progress(Progress {
            job_id: job.id().to_string(),
            status: job.status.as_str(),
            rows: job.rows as i64,
            chunks: job.chunks as i64,
            truncated: job.truncated,
            error: job.error.clone(),
            started_at: job.started_at.map(rfc3339),
            first_chunk_at: job.first_chunk_at.map(rfc3339),
            finished_at: job.finished_at.map(rfc3339),
        }))
        .await
    }

    async fn record_expired(&self, job: JobId, at: DateTime<Utc>) -> Result<(), AuditError> {
        self.queue(Write::Expired {
            job_id: job.to_string(),
            at: rfc3339(at),
        })
        .await
    }

    async fn record_interrupted(&self, at: DateTime<Utc>) -> Result<u64, AuditError> {
        self.flush().await?;
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
        self.flush().await?;
        // Times are RFC 3339 UTC with microseconds: as text they sort as
        // times, so the cursor compares as text too.
        let after = q.after.as_ref();
        let rows = sqlx::query_as::<_, AuditEntry>(
            "SELECT * FROM audit_submissions
             WHERE tenant = ?1 AND (?2 IS NULL OR user_id = ?2)
               AND (?3 IS NULL OR fingerprint = ?3) AND (?4 IS NULL OR status = ?4)
               AND (?5 IS NULL OR submitted_at >= ?5) AND (?6 IS NULL OR submitted_at < ?6)
               AND (?7 IS NULL OR submitted_at < ?7 OR (submitted_at = ?7 AND submission_id < ?8))
             ORDER BY submitted_at DESC, submission_id DESC LIMIT ?9",
        )
        .bind(&q.tenant)
        .bind(&q.user)
        .bind(&q.fingerprint)
        .bind(q.status.map(JobStatus::as_str))
        .bind(q.from.map(rfc3339))
        .bind(q.to.map(rfc3339))
        .bind(after.map(|c| rfc3339(c.submitted_at)))
        .bind(after.map(|c| c.submission_id.hyphenated().to_string()))
        .bind(i64::from(q.limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Not through the writer task: a few statements every flush interval,
    /// in one transaction of their own, waiting for the write lock like any
    /// other connection (the busy timeout bounds the wait).
    async fn record_rejections(&self, counts: &[RejectionCount]) -> Result<(), AuditError> {
        if counts.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for part in counts.chunks(REJECTION_BATCH) {
            let mut sql = QueryBuilder::<Sqlite>::new(
                "INSERT INTO audit_rejections (minute, tenant, user_id, reason, count, sample_filter) ",
            );
            sql.push_values(part, |mut row, c| {
                row.push_bind(rfc3339(c.minute))
                    .push_bind(c.tenant.as_str())
                    .push_bind(c.user_id.as_str())
                    .push_bind(c.reason.as_str())
                    .push_bind(c.count)
                    .push_bind(c.sample_filter.as_str());
            });
            sql.push(
                " ON CONFLICT (minute, tenant, user_id, reason)
                  DO UPDATE SET count = audit_rejections.count + excluded.count",
            );
            sql.build().persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn rejections(
        &self,
        tenant: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<RejectionCount>, AuditError> {
        // Minutes are RFC 3339 text, which sqlx reads back as times.
        let rows = sqlx::query_as::<_, RejectionCount>(
            "SELECT minute, tenant, user_id, reason, count, sample_filter FROM audit_rejections
             WHERE tenant = ?1 AND minute >= ?2 ORDER BY minute, user_id, reason",
        )
        .bind(tenant)
        .bind(rfc3339(since))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    async fn prune(&self, before: DateTime<Utc>, batch: u32) -> Result<u64, AuditError> {
        // Behind every queued write, so a row is never pruned before it lands.
        self.flush().await?;
        let before = rfc3339(before);
        let submissions = self
            .delete_oldest("audit_submissions", "submitted_at", &before, batch)
            .await?;
        let room = room_left(batch, submissions);
        if room == 0 {
            return Ok(submissions);
        }
        let rejections = self
            .delete_oldest("audit_rejections", "minute", &before, room)
            .await?;
        Ok(submissions + rejections)
    }
}

#[cfg(test)]
mod tests;
