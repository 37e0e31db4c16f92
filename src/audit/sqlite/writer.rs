//! The writer task: group commits of everything queued, as one transaction.

use sqlx::{Connection, Executor, QueryBuilder, Sqlite, SqliteConnection};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::checkpoint::Checkpointer;
use super::{AuditEntry, AuditError, Progress, Write};

/// Writes committed together at most (512 rows of 21 columns stay well
/// under SQLite's 32,766 bound parameters per statement).
const WRITE_BATCH: usize = 512;

/// The writer task: takes what has queued (up to `WRITE_BATCH`), commits it
/// as one transaction, answers the waiting submissions, repeats. Ends when
/// every sender is gone, after the last write.
pub(super) async fn write_loop(
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
pub(super) struct Plan<'a> {
    pub(super) submissions: Vec<&'a AuditEntry>,
    pub(super) progress: Vec<&'a Progress>,
    pub(super) expiries: Vec<(&'a str, &'a str)>,
}

impl<'a> Plan<'a> {
    pub(super) fn of(writes: &'a [Write]) -> Plan<'a> {
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
            truncated = p.column5, error = p.column6,
            started_at = COALESCE(p.column7, started_at),
            first_chunk_at = COALESCE(p.column8, first_chunk_at), finished_at = p.column9
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
