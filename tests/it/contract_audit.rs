//! The audit-log contract: the embedded SQLite log and the Postgres log must
//! behave the same. `audit_suite!` stamps out one test per case for an
//! implementation; each test gets a fresh store (a temp dir, or a fresh
//! Postgres schema that is dropped when the case passes).

use chrono::{DateTime, TimeDelta, Utc};
use pseudostream::audit::postgres::PostgresAuditLog;
use pseudostream::audit::sqlite::SqliteAuditLog;
use pseudostream::audit::{AuditEntry, AuditLog, AuditQuery};
use pseudostream::filter::{Fingerprint, Order};
use pseudostream::model::{JobId, JobRecord, JobSpec, JobStatus, Offset};

use crate::support::{drop_schema, fresh_schema_name, pg_url};

pub(crate) mod rejections;
mod search;
use rejections::{
    case_prune_deletes_rejections_past_the_cutoff,
    case_rejection_counts_add_up_per_minute_user_and_reason,
};
use search::{case_search_by_fingerprint_status_and_cursor, case_search_by_user_time_and_tenant};

/// A store under test and what has to be cleaned up after it.
enum Fixture {
    Sqlite(SqliteAuditLog, tempfile::TempDir),
    Postgres(PostgresAuditLog, String),
}

impl Fixture {
    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = SqliteAuditLog::open(&dir.path().join("audit.db"))
            .await
            .expect("open sqlite audit");
        Fixture::Sqlite(log, dir)
    }

    async fn postgres() -> Fixture {
        let (url, schema) = (pg_url(), fresh_schema_name());
        let log = PostgresAuditLog::connect_in_schema(&url, &schema)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot open the Postgres audit log at {url} (schema {schema}): {e}")
            });
        Fixture::Postgres(log, schema)
    }

    fn log(&self) -> &dyn AuditLog {
        match self {
            Fixture::Sqlite(log, _) => log,
            Fixture::Postgres(log, _) => log,
        }
    }

    async fn finish(self) {
        match self {
            Fixture::Sqlite(log, _dir) => log.close().await,
            Fixture::Postgres(log, schema) => {
                log.close().await;
                drop_schema(&schema).await;
            }
        }
    }
}

fn text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A fixed instant with a fractional part, so microseconds must survive.
pub(crate) fn base() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-01T12:00:00.123456Z")
        .unwrap()
        .with_timezone(&Utc)
}

pub fn entry(job: JobId, tenant: &str, user: &str, at: DateTime<Utc>) -> AuditEntry {
    AuditEntry {
        submission_id: uuid::Uuid::now_v7().to_string(),
        job_id: job.to_string(),
        fingerprint: Fingerprint([7; 32]).to_string(),
        user_id: user.into(),
        tenant: tenant.into(),
        result_offset: 3,
        filter_text: "status >= 500 and message contains \"it's\"".into(),
        canonical_filter: "status >= 500".into(),
        time_from: text(at - TimeDelta::days(7)),
        time_to: text(at),
        deduplicated_from: None,
        status: "queued".into(),
        row_count: 0,
        chunk_count: 0,
        truncated: false,
        error: None,
        submitted_at: text(at),
        started_at: None,
        first_chunk_at: None,
        finished_at: None,
        expired_at: None,
    }
}

pub fn record(job: JobId, at: DateTime<Utc>) -> JobRecord {
    JobRecord::new(
        JobSpec {
            job_id: job,
            offset: Offset(3),
            fingerprint: Fingerprint([7; 32]),
            tenant: "acme".into(),
            user: "ann".into(),
            filter: "status >= 500".into(),
            from_us: 0,
            to_us: 1,
            fields: vec![],
            order: Order::Desc,
            max_rows: 100,
        },
        at,
    )
}

pub(crate) fn query(tenant: &str, user: Option<&str>) -> AuditQuery {
    AuditQuery {
        tenant: tenant.into(),
        user: user.map(str::to_owned),
        limit: 100,
        ..AuditQuery::default()
    }
}

pub(crate) async fn all(log: &dyn AuditLog, tenant: &str) -> Vec<AuditEntry> {
    log.search(&query(tenant, None)).await.unwrap()
}

pub(crate) fn ids(entries: &[AuditEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.submission_id.as_str()).collect()
}

pub async fn case_progress_updates_every_live_row_of_the_job(log: &dyn AuditLog) {
    let t = base();
    let (job, other) = (JobId::new(), JobId::new());
    let first = entry(job, "acme", "ann", t);
    let mut joined = entry(job, "acme", "ben", t + TimeDelta::seconds(1));
    joined.deduplicated_from = Some(job.to_string());
    let unrelated = entry(other, "acme", "ann", t);
    for e in [&first, &joined, &unrelated] {
        log.record_submission(e).await.unwrap();
    }

    let mut rec = record(job, t);
    rec.status = JobStatus::Running;
    rec.rows = 25;
    rec.chunks = 3;
    rec.started_at = Some(t + TimeDelta::milliseconds(5));
    rec.first_chunk_at = Some(t + TimeDelta::milliseconds(250));
    log.record_progress(&rec).await.unwrap();
    let rows = all(log, "acme").await;
    for e in rows.iter().filter(|e| e.job_id == job.to_string()) {
        assert_eq!(e.status, "running");
        assert_eq!((e.row_count, e.chunk_count), (25, 3));
        assert_eq!(e.started_at.as_deref(), Some("2026-11-01T12:00:00.128456Z"));
        assert_eq!(
            e.first_chunk_at.as_deref(),
            Some("2026-11-01T12:00:00.373456Z")
        );
        assert_eq!(e.finished_at, None);
    }
    assert_eq!(
        rows.iter().filter(|e| e.job_id == job.to_string()).count(),
        2
    );
    let untouched = rows
        .iter()
        .find(|e| e.submission_id == unrelated.submission_id);
    assert_eq!(untouched, Some(&unrelated));

    rec.status = JobStatus::Failed;
    rec.truncated = true;
    rec.error = Some("source failed: it's gone".into());
    rec.finished_at = Some(t + TimeDelta::seconds(3));
    log.record_progress(&rec).await.unwrap();
    let joined_now = all(log, "acme")
        .await
        .into_iter()
        .find(|e| e.submission_id == joined.submission_id)
        .unwrap();
    assert_eq!(joined_now.status, "failed");
    assert!(joined_now.truncated);
    assert_eq!(
        joined_now.error.as_deref(),
        Some("source failed: it's gone")
    );
    assert_eq!(
        joined_now.finished_at.as_deref(),
        Some("2026-11-01T12:00:03.123456Z")
    );
    // What the submission said stays as written.
    assert_eq!(joined_now.deduplicated_from, joined.deduplicated_from);
    assert_eq!(joined_now.submitted_at, joined.submitted_at);

    // Once expired, late progress no longer rewrites the rows.
    log.record_expired(job, t + TimeDelta::hours(1))
        .await
        .unwrap();
    rec.status = JobStatus::Completed;
    rec.rows = 99;
    log.record_progress(&rec).await.unwrap();
    for e in all(log, "acme")
        .await
        .iter()
        .filter(|e| e.job_id == job.to_string())
    {
        assert_eq!(e.status, "expired");
        assert_eq!(e.row_count, 25);
    }
}

/// Updates queued back to back (the embedded log commits them together)
/// end in the state the last one carries; an expiry between two still
/// freezes the row at the update before it.
pub async fn case_back_to_back_progress_ends_in_the_last_state(log: &dyn AuditLog) {
    let t = base();
    let (short, expiring) = (JobId::new(), JobId::new());
    for job in [short, expiring] {
        log.record_submission(&entry(job, "acme", "ann", t))
            .await
            .unwrap();
    }
    let mut started = record(short, t);
    started.status = JobStatus::Running;
    started.started_at = Some(t + TimeDelta::milliseconds(5));
    let mut finished = started.clone();
    finished.status = JobStatus::Completed;
    finished.rows = 7;
    finished.chunks = 1;
    finished.finished_at = Some(t + TimeDelta::milliseconds(9));
    let mut running = record(expiring, t);
    running.status = JobStatus::Running;
    running.rows = 5;
    let mut late = running.clone();
    late.status = JobStatus::Completed;
    late.rows = 9;

    log.record_progress(&started).await.unwrap();
    log.record_progress(&running).await.unwrap();
    log.record_progress(&finished).await.unwrap();
    log.record_expired(expiring, t + TimeDelta::hours(1))
        .await
        .unwrap();
    log.record_progress(&late).await.unwrap();

    let rows = all(log, "acme").await;
    let short_row = rows.iter().find(|e| e.job_id == short.to_string()).unwrap();
    assert_eq!(short_row.status, "completed");
    assert_eq!((short_row.row_count, short_row.chunk_count), (7, 1));
    assert_eq!(
        short_row.started_at.as_deref(),
        Some("2026-11-01T12:00:00.128456Z")
    );
    assert_eq!(
        short_row.finished_at.as_deref(),
        Some("2026-11-01T12:00:00.132456Z")
    );
    let expired_row = rows
        .iter()
        .find(|e| e.job_id == expiring.to_string())
        .unwrap();
    assert_eq!(expired_row.status, "expired");
    assert_eq!(expired_row.row_count, 5);
}

pub async fn case_record_expired_marks_only_that_job(log: &dyn AuditLog) {
    let t = base();
    let (job, other) = (JobId::new(), JobId::new());
    let a = entry(job, "acme", "ann", t);
    let mut a2 = entry(job, "globex", "zed", t);
    a2.deduplicated_from = Some(job.to_string());
    let b = entry(other, "acme", "ann", t);
    for e in [&a, &a2, &b] {
        log.record_submission(e).await.unwrap();
    }
    let at = t + TimeDelta::microseconds(1);
    log.record_expired(job, at).await.unwrap();
    let mut rows = all(log, "acme").await;
    rows.extend(all(log, "globex").await);
    for e in &rows {
        if e.job_id == job.to_string() {
            assert_eq!(e.status, "expired");
            assert_eq!(e.expired_at.as_deref(), Some("2026-11-01T12:00:00.123457Z"));
        } else {
            assert_eq!(e, &b);
        }
    }
    assert_eq!(rows.len(), 3);
}

pub async fn case_record_interrupted_fails_jobs_in_flight(log: &dyn AuditLog) {
    let t = base();
    let mut entries = Vec::new();
    for status in ["queued", "running", "completed", "cancelled"] {
        let mut e = entry(JobId::new(), "acme", "ann", t);
        e.status = status.into();
        log.record_submission(&e).await.unwrap();
        entries.push(e);
    }
    let at = t + TimeDelta::minutes(5);
    assert_eq!(log.record_interrupted(at).await.unwrap(), 2);
    let rows = all(log, "acme").await;
    for before in &entries {
        let after = rows
            .iter()
            .find(|e| e.submission_id == before.submission_id)
            .unwrap();
        if matches!(before.status.as_str(), "queued" | "running") {
            assert_eq!(after.status, "failed");
            assert_eq!(
                after.error.as_deref(),
                Some("interrupted: the service restarted")
            );
            assert_eq!(
                after.finished_at.as_deref(),
                Some("2026-11-01T12:05:00.123456Z")
            );
        } else {
            assert_eq!(after, before);
        }
    }
    // Nothing is left in flight.
    assert_eq!(log.record_interrupted(at).await.unwrap(), 0);
}

/// Many submissions at once (the embedded log commits them in groups), one
/// of them a duplicate the store must refuse: the others all land, each
/// with the progress queued right after it, and only the duplicate fails.
pub async fn case_concurrent_writes_land_and_a_bad_one_fails_alone(log: &dyn AuditLog) {
    const JOBS: usize = 200;
    let t = base();
    let entries: Vec<AuditEntry> = (0..JOBS)
        .map(|_| entry(JobId::new(), "acme", "ann", t))
        .collect();
    let duplicate = entries[JOBS / 2].clone();
    let writes = entries.iter().map(|e| async move {
        log.record_submission(e).await?;
        let job: JobId = e.job_id.parse().expect("a job id");
        let mut rec = record(job, t);
        rec.status = JobStatus::Running;
        rec.started_at = Some(t);
        log.record_progress(&rec).await
    });
    let (results, again) = tokio::join!(
        futures::future::join_all(writes),
        log.record_submission(&duplicate)
    );
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    // Whichever of the two copies came second is the one refused.
    assert!(
        failed.len() + usize::from(again.is_err()) == 1,
        "exactly one of the duplicate pair fails: {failed:?}, {again:?}"
    );
    let mut q = query("acme", None);
    q.limit = 1000;
    let rows = log.search(&q).await.unwrap();
    assert_eq!(rows.len(), JOBS);
    for e in &entries {
        let row = rows
            .iter()
            .find(|r| r.submission_id == e.submission_id)
            .unwrap();
        if row.submission_id == duplicate.submission_id && failed.len() == 1 {
            continue; // its own progress never ran
        }
        assert_eq!(row.status, "running", "{}", row.submission_id);
        assert_eq!(
            row.started_at.as_deref(),
            Some("2026-11-01T12:00:00.123456Z")
        );
    }
}

pub async fn case_prune_deletes_only_rows_past_the_cutoff(log: &dyn AuditLog) {
    let t = base();
    let old: Vec<AuditEntry> = (0..5)
        .map(|n| entry(JobId::new(), "acme", "ann", t - TimeDelta::days(500 + n)))
        .collect();
    let kept = entry(JobId::new(), "acme", "ann", t - TimeDelta::days(10));
    let at_cutoff = entry(JobId::new(), "acme", "bob", t - TimeDelta::days(400));
    for e in old.iter().chain([&kept, &at_cutoff]) {
        log.record_submission(e).await.unwrap();
    }
    let cutoff = t - TimeDelta::days(400);
    // In batches of two: 2, 2, 1, then nothing left before the cutoff.
    let mut batches = Vec::new();
    loop {
        let n = log.prune(cutoff, 2).await.unwrap();
        batches.push(n);
        if n < 2 {
            break;
        }
    }
    assert_eq!(batches, [2, 2, 1]);
    let mut left = ids(&all(log, "acme").await)
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    left.sort();
    let mut expected = vec![kept.submission_id.clone(), at_cutoff.submission_id.clone()];
    expected.sort();
    assert_eq!(left, expected, "rows at or after the cutoff stay");
}

macro_rules! audit_suite {
    ($module:ident, $make:expr $(, #[$attr:meta])*) => {
        mod $module {
            use super::*;
            audit_suite!(@cases $make; [$(#[$attr])*];
                case_search_by_user_time_and_tenant,
                case_search_by_fingerprint_status_and_cursor,
                case_progress_updates_every_live_row_of_the_job,
                case_back_to_back_progress_ends_in_the_last_state,
                case_record_expired_marks_only_that_job,
                case_record_interrupted_fails_jobs_in_flight,
                case_concurrent_writes_land_and_a_bad_one_fails_alone,
                case_prune_deletes_only_rows_past_the_cutoff,
                case_rejection_counts_add_up_per_minute_user_and_reason,
                case_prune_deletes_rejections_past_the_cutoff);
        }
    };
    (@cases $make:expr; $attrs:tt; $($case:ident),*) => {
        $( audit_suite!(@case $make; $attrs; $case); )*
    };
    (@case $make:expr; [$(#[$attr:meta])*]; $case:ident) => {
        #[tokio::test]
        $(#[$attr])*
        async fn $case() {
            let fixture = $make.await;
            super::$case(fixture.log()).await;
            fixture.finish().await;
        }
    };
}

audit_suite!(embedded, Fixture::sqlite());
audit_suite!(
    postgres,
    Fixture::postgres(),
    #[ignore = "needs Postgres (PSEUDOSTREAM_TEST_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test)"]
);
