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
use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::{AuditEntry, AuditError, AuditLog, AuditQuery, rfc3339};
use crate::jobs::model::{JobId, JobRecord};

/// Writes queued at most; a full queue makes callers wait (nothing is dropped).
const WRITE_QUEUE: usize = 8192;
/// Writes committed together at most.
const WRITE_BATCH: usize = 512;

/// A job's audited progress, copied out of its record when queued.
struct Progress {
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

enum Write {
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
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| AuditError::Migration(e.to_string()))?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let writer = tokio::spawn(write_loop(pool.clone(), rx));
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

    /// Waits until every write queued so far is committed (or has failed).
    async fn flush(&self) -> Result<(), AuditError> {
        let (done, flushed) = oneshot::channel();
        self.queue(Write::Flush(done)).await?;
        flushed.await.map_err(|_| closed())
    }
}

/// The writer task: takes what has queued (up to `WRITE_BATCH`), commits it
/// as one transaction, answers the waiting submissions, repeats. Ends when
/// every sender is gone, after the last write.
async fn write_loop(pool: SqlitePool, mut rx: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        match commit(&pool, &batch).await {
            Ok(()) => batch.drain(..).for_each(|w| answer(w, Ok(()))),
            Err(e) => {
                // One bad write must not sink the others: apply them one by one.
                warn!(error = %e, writes = batch.len(), "audit batch failed; writing one by one");
                for write in batch.drain(..) {
                    let outcome = commit(&pool, std::slice::from_ref(&write)).await;
                    answer(write, outcome);
                }
            }
        }
    }
}

/// Tells whoever waits on `write` how it went; a failed progress or expiry
/// update has nobody waiting, so it is logged (the job itself is unaffected).
fn answer(write: Write, outcome: Result<(), AuditError>) {
    match write {
        Write::Submission(_, done) => {
            // The submitter may have given up (client gone); nothing to tell.
            let _ = done.send(outcome);
        }
        Write::Flush(done) => {
            let _ = done.send(());
        }
        Write::Progress(Progress { job_id, .. }) | Write::Expired { job_id, .. } => {
            if let Err(e) = outcome {
                warn!(job_id, error = %e, "could not update the audit row");
            }
        }
    }
}

async fn commit(pool: &SqlitePool, writes: &[Write]) -> Result<(), AuditError> {
    let mut tx = pool.begin().await?;
    for write in writes {
        apply(&mut tx, write).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn apply(conn: &mut SqliteConnection, write: &Write) -> Result<(), AuditError> {
    match write {
        Write::Submission(e, _) => {
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
            .execute(&mut *conn)
            .await?;
        }
        Write::Progress(p) => {
            sqlx::query(
                "UPDATE audit_submissions SET status = ?, row_count = ?, chunk_count = ?, truncated = ?, error = ?,
                    started_at = ?, first_chunk_at = ?, finished_at = ?
                 WHERE job_id = ? AND expired_at IS NULL",
            )
            .bind(p.status)
            .bind(p.rows)
            .bind(p.chunks)
            .bind(p.truncated)
            .bind(&p.error)
            .bind(&p.started_at)
            .bind(&p.first_chunk_at)
            .bind(&p.finished_at)
            .bind(&p.job_id)
            .execute(&mut *conn)
            .await?;
        }
        Write::Expired { job_id, at } => {
            sqlx::query(
                "UPDATE audit_submissions SET status = 'expired', expired_at = ? WHERE job_id = ?",
            )
            .bind(at)
            .bind(job_id)
            .execute(&mut *conn)
            .await?;
        }
        Write::Flush(_) => {}
    }
    Ok(())
}

#[async_trait]
impl AuditLog for SqliteAuditLog {
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
