//! The audit log on Postgres, for deployments that run more than one
//! instance (the SQLite file is per process) or want ops to query the trail
//! with SQL. Same semantics as [`super::sqlite::SqliteAuditLog`]; the schema
//! lives in `migrations/postgres` and uses real types (uuid, timestamptz),
//! while the API keeps handing out RFC 3339 strings in the same format the
//! SQLite log stores ([`super::rfc3339`]).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{AuditEntry, AuditError, AuditLog, AuditQuery, RejectionCount, rfc3339, room_left};
use crate::model::{JobId, JobRecord, JobStatus};

/// How long a caller waits for a pooled connection before the audit counts
/// as unavailable (and submissions fail closed) rather than hanging, when
/// the caller does not say (`PSEUDOSTREAM_BACKEND_TIMEOUT` does for the
/// service); sqlx's own default is 30 s.
const ACQUIRE_TIMEOUT: Duration = crate::config::DEFAULT_BACKEND_TIMEOUT;
const MAX_CONNECTIONS: u32 = 8;

/// The columns of [`AuditEntry`], converted back to the API's text forms:
/// uuids as hyphenated lowercase text (like `Uuid`'s `Display`), times stay
/// `timestamptz` and are formatted in Rust so the format matches SQLite's exactly.
const SELECT_COLUMNS: &str =
    "submission_id::text AS submission_id, job_id::text AS job_id, fingerprint,
    user_id, tenant, result_offset, filter_text, canonical_filter, time_from, time_to,
    deduplicated_from::text AS deduplicated_from, status, row_count, chunk_count, truncated, error,
    submitted_at, started_at, first_chunk_at, finished_at, expired_at";

pub struct PostgresAuditLog {
    pool: PgPool,
}

/// A row as Postgres types it; converted into [`AuditEntry`].
#[derive(sqlx::FromRow)]
struct PgEntry {
    submission_id: String,
    job_id: String,
    fingerprint: String,
    user_id: String,
    tenant: String,
    result_offset: i64,
    filter_text: String,
    canonical_filter: String,
    time_from: DateTime<Utc>,
    time_to: DateTime<Utc>,
    deduplicated_from: Option<String>,
    status: String,
    row_count: i64,
    chunk_count: i64,
    truncated: bool,
    error: Option<String>,
    submitted_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    first_chunk_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    expired_at: Option<DateTime<Utc>>,
}

impl From<PgEntry> for AuditEntry {
    fn from(e: PgEntry) -> AuditEntry {
        AuditEntry {
            submission_id: e.submission_id,
            job_id: e.job_id,
            fingerprint: e.fingerprint,
            user_id: e.user_id,
            tenant: e.tenant,
            result_offset: e.result_offset,
            filter_text: e.filter_text,
            canonical_filter: e.canonical_filter,
            time_from: rfc3339(e.time_from),
            time_to: rfc3339(e.time_to),
            deduplicated_from: e.deduplicated_from,
            status: e.status,
            row_count: e.row_count,
            chunk_count: e.chunk_count,
            truncated: e.truncated,
            error: e.error,
            submitted_at: rfc3339(e.submitted_at),
            started_at: e.started_at.map(rfc3339),
            first_chunk_at: e.first_chunk_at.map(rfc3339),
            finished_at: e.finished_at.map(rfc3339),
            expired_at: e.expired_at.map(rfc3339),
        }
    }
}

/// Parses one of the entry's RFC 3339 fields; a malformed value is the
/// caller's bug, reported instead of stored as something else.
fn time(field: &str, text: &str) -> Result<DateTime<Utc>, AuditError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| AuditError::Invalid(format!("{field} {text:?} is not RFC 3339: {e}")))
}

fn opt_time(field: &str, text: &Option<String>) -> Result<Option<DateTime<Utc>>, AuditError> {
    text.as_deref().map(|t| time(field, t)).transpose()
}

/// A schema name we are willing to create and put on the search path: plain
/// lowercase identifiers only, so it never needs quoting rules beyond `"..."`.
fn check_schema(schema: &str) -> Result<(), AuditError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(AuditError::Invalid(format!(
            "schema name {schema:?} must be 1-63 characters of a-z, 0-9 and _, not starting with a digit"
        )))
    }
}

fn options(url: &str) -> Result<PgConnectOptions, AuditError> {
    PgConnectOptions::from_str(url)
        .map(|o| o.application_name("pseudostream-audit"))
        .map_err(AuditError::from)
}

async fn run_migrations(pool: &PgPool) -> Result<(), AuditError> {
    sqlx::migrate!("migrations/postgres")
        .run(pool)
        .await
        .map_err(|e| AuditError::Migration(e.to_string()))
}

impl PostgresAuditLog {
    /// Connects to `url` and applies pending migrations; a call that waits
    /// longer than `acquire_timeout` for a connection fails as unavailable.
    pub async fn connect(
        url: &str,
        acquire_timeout: Duration,
    ) -> Result<PostgresAuditLog, AuditError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(acquire_timeout)
            .connect_with(options(url)?)
            .await?;
        run_migrations(&pool).await?;
        Ok(PostgresAuditLog { pool })
    }

    /// Like [`connect`](Self::connect), but everything (tables, views, the
    /// migrations' bookkeeping) lives in `schema`, created if missing: every
    /// pooled connection gets `search_path` set to it. Tests use a fresh
    /// schema each; deployments may use it to share a database.
    pub async fn connect_in_schema(
        url: &str,
        schema: &str,
    ) -> Result<PostgresAuditLog, AuditError> {
        check_schema(schema)?;
        let opts = options(url)?;
        // One plain connection to create the schema, so the pool's
        // connections can rely on it from their first query.
        {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect_with(&opts).await?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .execute(&mut conn)
                .await?;
            conn.close().await?;
        }
        let set_path = format!("SET search_path TO \"{schema}\"");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _meta| {
                let set_path = set_path.clone();
                Box::pin(async move {
                    sqlx::query(&set_path).execute(conn).await?;
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        run_migrations(&pool).await?;
        Ok(PostgresAuditLog { pool })
    }

    /// Deletes up to `limit` rows of `table` whose `time` is before
    /// `before`, oldest first; `key` lists the columns of the table's
    /// primary key.
    async fn delete_oldest(
        &self,
        table: &str,
        key: &str,
        time: &str,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, AuditError> {
        let done = sqlx::query(&format!(
            "DELETE FROM {table} WHERE ({key}) IN (
                 SELECT {key} FROM {table} WHERE {time} < $1 ORDER BY {time} LIMIT $2)"
        ))
        .bind(before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Applies pending migrations and disconnects: `pseudostream migrate`,
    /// for deployments that run schema changes before rolling out.
    pub async fn migrate(url: &str) -> Result<(), AuditError> {
        let log = PostgresAuditLog::connect(url, ACQUIRE_TIMEOUT).await?;
        log.close().await;
        Ok(())
    }
}

#[async_trait]
impl AuditLog for PostgresAuditLog {
    async fn ready(&self) -> Result<(), AuditError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn record_submission(&self, e: &AuditEntry) -> Result<(), AuditError> {
        sqlx::query(
            "INSERT INTO audit_submissions (submission_id, job_id, fingerprint, user_id, tenant, result_offset,
                filter_text, canonical_filter, time_from, time_to, deduplicated_from, status, row_count,
                chunk_count, truncated, error, submitted_at, started_at, first_chunk_at, finished_at, expired_at)
             VALUES ($1::uuid, $2::uuid, $3, $4, $5, $6, $7, $8, $9, $10, $11::uuid, $12, $13, $14, $15, $16,
                $17, $18, $19, $20, $21)",
        )
        .bind(&e.submission_id)
        .bind(&e.job_id)
        .bind(&e.fingerprint)
        .bind(&e.user_id)
        .bind(&e.tenant)
        .bind(e.result_offset)
        .bind(&e.filter_text)
        .bind(&e.canonical_filter)
        .bind(time("time_from", &e.time_from)?)
        .bind(time("time_to", &e.time_to)?)
        .bind(&e.deduplicated_from)
        .bind(&e.status)
        .bind(e.row_count)
        .bind(e.chunk_count)
        .bind(e.truncated)
        .bind(&e.error)
        .bind(time("submitted_at", &e.submitted_at)?)
        .bind(opt_time("started_at", &e.started_at)?)
        .bind(opt_time("first_chunk_at", &e.first_chunk_at)?)
        .bind(opt_time("finished_at", &e.finished_at)?)
        .bind(opt_time("expired_at", &e.expired_at)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_progress(&self, job: &JobRecord) -> Result<(), AuditError> {
        sqlx::query(
            "UPDATE audit_submissions SET status = $1, row_count = $2, chunk_count = $3, truncated = $4,
                error = $5, started_at = COALESCE($6, started_at),
                first_chunk_at = COALESCE($7, first_chunk_at), finished_at = $8
             WHERE job_id = $9::uuid AND expired_at IS NULL",
        )
        .bind(job.status.as_str())
        .bind(i64::try_from(job.rows).unwrap_or(i64::MAX))
        .bind(i64::try_from(job.chunks).unwrap_or(i64::MAX))
        .bind(job.truncated)
        .bind(&job.error)
        .bind(job.started_at)
        .bind(job.first_chunk_at)
        .bind(job.finished_at)
        .bind(job.id().to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_expired(&self, job: JobId, at: DateTime<Utc>) -> Result<(), AuditError> {
        sqlx::query(
            "UPDATE audit_submissions SET status = 'expired', expired_at = $1 WHERE job_id = $2::uuid",
        )
        .bind(at)
        .bind(job.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_interrupted(&self, at: DateTime<Utc>) -> Result<u64, AuditError> {
        let done = sqlx::query(
            "UPDATE audit_submissions SET status = 'failed', error = 'interrupted: the service restarted',
                finished_at = $1 WHERE status IN ('queued', 'running')",
        )
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn search(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, AuditError> {
        let after = q.after.as_ref();
        let rows = sqlx::query_as::<_, PgEntry>(&format!(
            "SELECT {SELECT_COLUMNS} FROM audit_submissions
             WHERE tenant = $1 AND ($2::text IS NULL OR user_id = $2)
               AND ($3::text IS NULL OR fingerprint = $3)
               AND ($4::text IS NULL OR status = $4)
               AND ($5::timestamptz IS NULL OR submitted_at >= $5)
               AND ($6::timestamptz IS NULL OR submitted_at < $6)
               AND ($7::timestamptz IS NULL OR submitted_at < $7
                    OR (submitted_at = $7 AND submission_id < $8::uuid))
             ORDER BY submitted_at DESC, submission_id DESC LIMIT $9"
        ))
        .bind(&q.tenant)
        .bind(&q.user)
        .bind(&q.fingerprint)
        .bind(q.status.map(JobStatus::as_str))
        .bind(q.from)
        .bind(q.to)
        .bind(after.map(|c| c.submitted_at))
        .bind(after.map(|c| c.submission_id.hyphenated().to_string()))
        .bind(i64::from(q.limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(AuditEntry::from).collect())
    }

    /// One statement whatever the number of counts: the columns go as
    /// arrays and `UNNEST` turns them back into rows.
    async fn record_rejections(&self, counts: &[RejectionCount]) -> Result<(), AuditError> {
        if counts.is_empty() {
            return Ok(());
        }
        let column =
            |f: fn(&RejectionCount) -> &str| -> Vec<&str> { counts.iter().map(f).collect() };
        sqlx::query(
            "INSERT INTO audit_rejections (minute, tenant, user_id, reason, count, sample_filter)
             SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[],
                 $5::int8[], $6::text[])
             ON CONFLICT (minute, tenant, user_id, reason)
             DO UPDATE SET count = audit_rejections.count + excluded.count",
        )
        .bind(counts.iter().map(|c| c.minute).collect::<Vec<_>>())
        .bind(column(|c| &c.tenant))
        .bind(column(|c| &c.user_id))
        .bind(column(|c| &c.reason))
        .bind(counts.iter().map(|c| c.count).collect::<Vec<_>>())
        .bind(column(|c| &c.sample_filter))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn rejections(
        &self,
        tenant: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<RejectionCount>, AuditError> {
        let rows = sqlx::query_as::<_, RejectionCount>(
            "SELECT minute, tenant, user_id, reason, count, sample_filter FROM audit_rejections
             WHERE tenant = $1 AND minute >= $2 ORDER BY minute, user_id, reason",
        )
        .bind(tenant)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    async fn prune(&self, before: DateTime<Utc>, batch: u32) -> Result<u64, AuditError> {
        // `audit_by_time` finds the oldest rows; the primary key deletes them.
        let submissions = self
            .delete_oldest(
                "audit_submissions",
                "submission_id",
                "submitted_at",
                before,
                batch,
            )
            .await?;
        let room = room_left(batch, submissions);
        if room == 0 {
            return Ok(submissions);
        }
        // The primary key leads with the minute: it finds and deletes them.
        let key = "minute, tenant, user_id, reason";
        let rejections = self
            .delete_oldest("audit_rejections", key, "minute", before, room)
            .await?;
        Ok(submissions + rejections)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema("ps_test_0a1b").is_ok());
        for bad in ["", "1abc", "Ps", "a\"b", "a;drop", &"x".repeat(64)] {
            assert!(check_schema(bad).is_err(), "{bad:?}");
        }
    }
}
