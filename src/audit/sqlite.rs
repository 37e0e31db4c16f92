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
use sqlx::{
    ConnectOptions, Connection, Executor, QueryBuilder, Sqlite, SqliteConnection, SqlitePool,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

use super::{AuditEntry, AuditError, AuditLog, AuditQuery, rfc3339};
use crate::model::{JobId, JobRecord};

/// Writes queued at most; a full queue makes callers wait (nothing is dropped).
const WRITE_QUEUE: usize = 8192;
/// Writes committed together at most (512 rows of 21 columns stay well
/// under SQLite's 32,766 bound parameters per statement).
const WRITE_BATCH: usize = 512;
/// How long the checkpointer lets commits gather before copying them from
/// the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// WAL pages (4 KiB each, so about 40 MB) at which the writer checkpoints by
/// itself, on its commit path: the backstop that bounds the WAL when the
/// checkpointer falls behind or has stopped. SQLite's default is 1,000.
const WAL_BACKSTOP_PAGES: u32 = 10_000;

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

    /// Waits until every write queued so far is committed (or has failed).
    async fn flush(&self) -> Result<(), AuditError> {
        let (done, flushed) = oneshot::channel();
        self.queue(Write::Flush(done)).await?;
        flushed.await.map_err(|_| closed())
    }
}

/// Copies committed pages from the WAL into the database file on a
/// connection of its own, off the writer's path.
///
/// With SQLite's default, the connection whose commit takes the WAL past
/// 1,000 pages checkpoints right there: it copies the pages and fsyncs the
/// database before its commit returns. Under a submission storm that was
/// about nine times a second, each 20-35 ms, and every submission of the
/// batch, and of the batches queued behind it, waited (docs/PERFORMANCE.md,
/// the audit checkpoints round).
/// A `PASSIVE` checkpoint here runs beside the writer instead. It cannot
/// restart the WAL while commits keep coming (that needs every frame copied
/// and none added meanwhile), so the writer's own checkpoint stays as a
/// backstop, at `WAL_BACKSTOP_PAGES`; by then this one has copied nearly
/// everything, and the writer's is short.
struct Checkpointer {
    /// Told of every commit; dropping it stops the task.
    committed: watch::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Checkpointer {
    fn start(mut conn: SqliteConnection) -> Checkpointer {
        let (committed, mut commits) = watch::channel(());
        let task = tokio::spawn(async move {
            // Ends when the writer is gone, or at the first failure: the
            // writer's own checkpoints still bound the WAL.
            while commits.changed().await.is_ok() {
                tokio::time::sleep(CHECKPOINT_EVERY).await;
                commits.mark_unchanged();
                let started = std::time::Instant::now();
                let outcome: Result<(i64, i64, i64), _> =
                    sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                        .fetch_one(&mut conn)
                        .await;
                match outcome {
                    Ok((busy, wal_pages, copied)) => debug!(
                        busy,
                        wal_pages,
                        copied,
                        micros = started.elapsed().as_micros() as u64,
                        "audit WAL checkpointed"
                    ),
                    Err(e) => {
                        warn!(error = %e, "audit checkpointer stopped; the writer checkpoints by itself from now on");
                        break;
                    }
                }
            }
            if let Err(e) = conn.close().await {
                warn!(error = %e, "could not close the audit checkpointer's connection");
            }
        });
        Checkpointer { committed, task }
    }

    fn committed(&self) {
        self.committed.send_replace(());
    }

    /// Stops the task once its current round is over: a round already
    /// waiting out `CHECKPOINT_EVERY` still checkpoints, so the last
    /// commits are copied too.
    async fn stop(self) {
        drop(self.committed);
        let _ = self.task.await;
    }
}

/// The writer task: takes what has queued (up to `WRITE_BATCH`), commits it
/// as one transaction, answers the waiting submissions, repeats. Ends when
/// every sender is gone, after the last write.
async fn write_loop(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Write>,
    checkpointer: Checkpointer,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        match commit(&mut conn, &batch).await {
            Ok(()) => batch.drain(..).for_each(|w| answer(w, Ok(()))),
            Err(e) => {
                // One bad write must not sink the others: apply them one by one.
                warn!(error = %e, writes = batch.len(), "audit batch failed; writing one by one");
                for write in batch.drain(..) {
                    let outcome = commit(&mut conn, std::slice::from_ref(&write)).await;
                    answer(write, outcome);
                }
            }
        }
        // After the one-by-one fallback too: its commits reach the WAL as well.
        checkpointer.committed();
    }
    checkpointer.stop().await;
    if let Err(e) = conn.close().await {
        warn!(error = %e, "could not close the audit writer's connection");
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

async fn commit(conn: &mut SqliteConnection, writes: &[Write]) -> Result<(), AuditError> {
    let started = std::time::Instant::now();
    let plan = Plan::of(writes);
    // The whole transaction goes to SQLite as one query: every statement
    // sent on its own is a round trip to sqlx's SQLite thread (a wake-up on
    // each side, which on a busy machine waits for a core), and while every
    // submission waits for its commit, those round trips, not SQLite's own
    // work, bounded admission.
    let mut sql = QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE;");
    push_submissions(&mut sql, &plan.submissions);
    push_progress(&mut sql, &plan.progress);
    push_expiries(&mut sql, &plan.expiries);
    sql.push(" COMMIT;");
    // Not kept in sqlx's statement cache: batches come in many shapes, and
    // each would push out a statement worth keeping.
    if let Err(e) = sql.build().persistent(false).execute(&mut *conn).await {
        // Undo what ran before the failing statement. If BEGIN itself
        // failed there is nothing to undo and this fails too, harmlessly;
        // any other failure here would leave the transaction open, and
        // every later batch would fail on its BEGIN, so it is logged.
        if let Err(rollback) = conn.execute("ROLLBACK").await {
            warn!(error = %rollback, "could not roll back a failed audit batch");
        }
        return Err(e.into());
    }
    debug!(
        writes = writes.len(),
        submissions = plan.submissions.len(),
        progress = plan.progress.len(),
        expiries = plan.expiries.len(),
        micros = started.elapsed().as_micros() as u64,
        "audit batch committed"
    );
    Ok(())
}

/// A batch's writes as one statement per kind, applied in this order:
/// submissions, then progress, then expiries. That leaves the rows as
/// applying the writes one by one in queue order would:
///
/// - a job's progress is always queued after its submission;
/// - each progress update carries the job's whole audited state, copied
///   from its record, so a job's last update in the batch leaves the rows
///   as all of them would (a short job's started and finished updates cost
///   one row of one statement); `UPDATE ... FROM` then matches each row once;
/// - an update queued after the job's expiry would be ignored (expired rows
///   keep their state), so it is dropped, and the last one before the
///   expiry is applied before it.
///
/// One difference: a submission that joined a job whose expiry is queued
/// ahead of it in the same batch ends expired too, as its job is.
#[derive(Default)]
struct Plan<'a> {
    submissions: Vec<&'a AuditEntry>,
    progress: Vec<&'a Progress>,
    expiries: Vec<(&'a str, &'a str)>,
}

impl<'a> Plan<'a> {
    fn of(writes: &'a [Write]) -> Plan<'a> {
        let mut plan = Plan::default();
        // Per job: the index into `plan.progress` of its latest update.
        let mut latest = std::collections::HashMap::new();
        let mut expired = std::collections::HashSet::new();
        for write in writes {
            match write {
                Write::Submission(entry, _) => plan.submissions.push(entry),
                Write::Progress(p) if expired.contains(p.job_id.as_str()) => {}
                Write::Progress(p) => match latest.get(p.job_id.as_str()) {
                    Some(&n) => plan.progress[n] = p,
                    None => {
                        latest.insert(p.job_id.as_str(), plan.progress.len());
                        plan.progress.push(p);
                    }
                },
                Write::Expired { job_id, at } => {
                    expired.insert(job_id.as_str());
                    plan.expiries.push((job_id, at));
                }
                Write::Flush(_) => {}
            }
        }
        plan
    }
}

fn push_submissions<'a>(sql: &mut QueryBuilder<'a, Sqlite>, entries: &[&'a AuditEntry]) {
    if entries.is_empty() {
        return;
    }
    sql.push(
        " INSERT INTO audit_submissions (submission_id, job_id, fingerprint, user_id, tenant, result_offset,
            filter_text, canonical_filter, time_from, time_to, deduplicated_from, status, row_count,
            chunk_count, truncated, error, submitted_at, started_at, first_chunk_at, finished_at, expired_at) ",
    );
    sql.push_values(entries, |mut row, e| {
        row.push_bind(e.submission_id.as_str())
            .push_bind(e.job_id.as_str())
            .push_bind(e.fingerprint.as_str())
            .push_bind(e.user_id.as_str())
            .push_bind(e.tenant.as_str())
            .push_bind(e.result_offset)
            .push_bind(e.filter_text.as_str())
            .push_bind(e.canonical_filter.as_str())
            .push_bind(e.time_from.as_str())
            .push_bind(e.time_to.as_str())
            .push_bind(e.deduplicated_from.as_deref())
            .push_bind(e.status.as_str())
            .push_bind(e.row_count)
            .push_bind(e.chunk_count)
            .push_bind(e.truncated)
            .push_bind(e.error.as_deref())
            .push_bind(e.submitted_at.as_str())
            .push_bind(e.started_at.as_deref())
            .push_bind(e.first_chunk_at.as_deref())
            .push_bind(e.finished_at.as_deref())
            .push_bind(e.expired_at.as_deref());
    });
    sql.push(";");
}

fn push_progress<'a>(sql: &mut QueryBuilder<'a, Sqlite>, updates: &[&'a Progress]) {
    if updates.is_empty() {
        return;
    }
    sql.push(
        " UPDATE audit_submissions SET status = p.column2, row_count = p.column3, chunk_count = p.column4,
            truncated = p.column5, error = p.column6, started_at = p.column7,
            first_chunk_at = p.column8, finished_at = p.column9
         FROM (",
    );
    sql.push_values(updates, |mut row, p| {
        row.push_bind(p.job_id.as_str())
            .push_bind(p.status)
            .push_bind(p.rows)
            .push_bind(p.chunks)
            .push_bind(p.truncated)
            .push_bind(p.error.as_deref())
            .push_bind(p.started_at.as_deref())
            .push_bind(p.first_chunk_at.as_deref())
            .push_bind(p.finished_at.as_deref());
    });
    sql.push(
        ") AS p WHERE audit_submissions.job_id = p.column1 AND audit_submissions.expired_at IS NULL;",
    );
}

/// One statement per expiry: expiries come one job at a time, minutes
/// apart from the job's other writes.
fn push_expiries<'a>(sql: &mut QueryBuilder<'a, Sqlite>, expiries: &[(&'a str, &'a str)]) {
    for (job_id, at) in expiries {
        sql.push(" UPDATE audit_submissions SET status = 'expired', expired_at = ")
            .push_bind(*at)
            .push(" WHERE job_id = ")
            .push_bind(*job_id)
            .push(";");
    }
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

    /// A progress update of `job`; `rows` tells the updates apart.
    fn progress(job: &str, rows: i64) -> Write {
        Write::Progress(Progress {
            job_id: job.into(),
            status: "running",
            rows,
            chunks: 0,
            truncated: false,
            error: None,
            started_at: None,
            first_chunk_at: None,
            finished_at: None,
        })
    }

    #[test]
    fn a_jobs_last_progress_before_its_expiry_is_applied_once() {
        let (done, _) = oneshot::channel();
        let writes = [
            progress("a", 0),
            progress("b", 1),
            progress("a", 2),
            Write::Flush(done),
            progress("b", 4),
            Write::Expired {
                job_id: "b".into(),
                at: "t".into(),
            },
            progress("b", 6),
            progress("a", 7),
        ];
        let plan = Plan::of(&writes);
        let applied: Vec<(&str, i64)> = plan
            .progress
            .iter()
            .map(|p| (p.job_id.as_str(), p.rows))
            .collect();
        assert_eq!(applied, [("a", 7), ("b", 4)]);
        assert_eq!(plan.expiries, [("b", "t")]);
        assert!(plan.submissions.is_empty());
    }

    fn submission(n: u32) -> AuditEntry {
        let text = |s: &str| s.to_owned();
        AuditEntry {
            submission_id: format!("submission-{n}"),
            job_id: format!("job-{n}"),
            fingerprint: format!("{n:064x}"),
            user_id: text("u"),
            tenant: text("t"),
            result_offset: 0,
            filter_text: text("status >= 500"),
            canonical_filter: text("status >= 500"),
            time_from: text("2026-11-01T00:00:00Z"),
            time_to: text("2026-11-02T00:00:00Z"),
            deduplicated_from: None,
            status: text("queued"),
            row_count: 0,
            chunk_count: 0,
            truncated: false,
            error: None,
            submitted_at: text("2026-11-02T00:00:00Z"),
            started_at: None,
            first_chunk_at: None,
            finished_at: None,
            expired_at: None,
        }
    }

    /// Far below the writer's backstop, committed pages still reach the
    /// database file: the checkpointer copied them.
    #[tokio::test]
    async fn the_checkpointer_copies_commits_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let log = SqliteAuditLog::open(&path).await.unwrap();
        let size = || std::fs::metadata(&path).map_or(0, |m| m.len());
        let before = size();
        for n in 0..50 {
            log.record_submission(&submission(n)).await.unwrap();
        }
        // A liveness wait, not a timing assert: the checkpoint follows the
        // commits by about `CHECKPOINT_EVERY`.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while size() <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {before} bytes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        log.close().await;
    }
}
