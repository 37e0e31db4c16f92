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
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::{AuditEntry, AuditError, AuditLog, AuditQuery, rfc3339};
use crate::jobs::model::{JobId, JobRecord};

/// Writes queued at most; a full queue makes callers wait (nothing is dropped).
const WRITE_QUEUE: usize = 8192;
/// Writes committed together at most (512 rows of 21 columns stay well
/// under SQLite's 32,766 bound parameters per statement).
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
    let live: Vec<&Write> = writes
        .iter()
        .zip(superseded(writes))
        .filter_map(|(write, superseded)| (!superseded).then_some(write))
        .collect();
    let mut tx = pool.begin().await?;
    // Consecutive writes of one kind go as one statement: each statement is
    // a round trip to sqlx's SQLite thread, and under load those round
    // trips, not SQLite, limited how fast submissions were committed.
    for run in live.chunk_by(|a, b| std::mem::discriminant(*a) == std::mem::discriminant(*b)) {
        apply(&mut tx, run).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Which writes of a batch need not be applied: a job's progress update
/// followed in the same batch by another one for that job. Each carries the
/// job's whole audited state, copied from its record, so the later one
/// leaves the row as both would; a short job's started and finished updates
/// then cost one statement. An expiry in between keeps the earlier update,
/// since the later one is ignored once the row is expired.
fn superseded(writes: &[Write]) -> Vec<bool> {
    let mut updated_later = std::collections::HashSet::new();
    let mut superseded = vec![false; writes.len()];
    for (n, write) in writes.iter().enumerate().rev() {
        match write {
            Write::Progress(p) => superseded[n] = !updated_later.insert(p.job_id.as_str()),
            Write::Expired { job_id, .. } => {
                updated_later.remove(job_id.as_str());
            }
            Write::Submission(..) | Write::Flush(_) => {}
        }
    }
    superseded
}

/// Applies consecutive writes of one kind. A job has one progress update
/// in a run at most (see `superseded`), so `UPDATE ... FROM` matches each
/// row once.
async fn apply(conn: &mut SqliteConnection, run: &[&Write]) -> Result<(), AuditError> {
    let Some(first) = run.first() else {
        return Ok(());
    };
    match first {
        Write::Submission(..) => {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO audit_submissions (submission_id, job_id, fingerprint, user_id, tenant, result_offset,
                    filter_text, canonical_filter, time_from, time_to, deduplicated_from, status, row_count,
                    chunk_count, truncated, error, submitted_at, started_at, first_chunk_at, finished_at, expired_at) ",
            );
            let entries = run.iter().filter_map(|w| match w {
                Write::Submission(e, _) => Some(e),
                _ => None,
            });
            insert.push_values(entries, |mut row, e| {
                row.push_bind(&e.submission_id)
                    .push_bind(&e.job_id)
                    .push_bind(&e.fingerprint)
                    .push_bind(&e.user_id)
                    .push_bind(&e.tenant)
                    .push_bind(e.result_offset)
                    .push_bind(&e.filter_text)
                    .push_bind(&e.canonical_filter)
                    .push_bind(&e.time_from)
                    .push_bind(&e.time_to)
                    .push_bind(&e.deduplicated_from)
                    .push_bind(&e.status)
                    .push_bind(e.row_count)
                    .push_bind(e.chunk_count)
                    .push_bind(e.truncated)
                    .push_bind(&e.error)
                    .push_bind(&e.submitted_at)
                    .push_bind(&e.started_at)
                    .push_bind(&e.first_chunk_at)
                    .push_bind(&e.finished_at)
                    .push_bind(&e.expired_at);
            });
            insert.build().execute(&mut *conn).await?;
        }
        Write::Progress(_) => {
            let mut update = QueryBuilder::<Sqlite>::new(
                "UPDATE audit_submissions SET status = p.column2, row_count = p.column3, chunk_count = p.column4,
                    truncated = p.column5, error = p.column6, started_at = p.column7,
                    first_chunk_at = p.column8, finished_at = p.column9
                 FROM (",
            );
            let updates = run.iter().filter_map(|w| match w {
                Write::Progress(p) => Some(p),
                _ => None,
            });
            update.push_values(updates, |mut row, p| {
                row.push_bind(&p.job_id)
                    .push_bind(p.status)
                    .push_bind(p.rows)
                    .push_bind(p.chunks)
                    .push_bind(p.truncated)
                    .push_bind(&p.error)
                    .push_bind(&p.started_at)
                    .push_bind(&p.first_chunk_at)
                    .push_bind(&p.finished_at);
            });
            update.push(
                ") AS p WHERE audit_submissions.job_id = p.column1 AND audit_submissions.expired_at IS NULL",
            );
            update.build().execute(&mut *conn).await?;
        }
        Write::Expired { .. } => {
            for write in run {
                if let Write::Expired { job_id, at } = write {
                    sqlx::query(
                        "UPDATE audit_submissions SET status = 'expired', expired_at = ? WHERE job_id = ?",
                    )
                    .bind(at)
                    .bind(job_id)
                    .execute(&mut *conn)
                    .await?;
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(job: &str) -> Write {
        Write::Progress(Progress {
            job_id: job.into(),
            status: "running",
            rows: 0,
            chunks: 0,
            truncated: false,
            error: None,
            started_at: None,
            first_chunk_at: None,
            finished_at: None,
        })
    }

    #[test]
    fn only_a_jobs_last_progress_before_an_expiry_is_applied() {
        let (done, _) = oneshot::channel();
        let writes = [
            progress("a"),
            progress("b"),
            progress("a"),
            Write::Flush(done),
            progress("b"),
            Write::Expired {
                job_id: "b".into(),
                at: "t".into(),
            },
            progress("b"),
            progress("a"),
        ];
        assert_eq!(
            superseded(&writes),
            [true, true, true, false, false, false, false, false]
        );
    }
}
