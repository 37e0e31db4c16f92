//! docs/AUDIT.md's queries run as written against a Postgres audit log with
//! rows in it, and the SQLite log has the same views.

use chrono::{DurationRound, TimeDelta, Utc};
use pseudostream::audit::AuditLog;
use pseudostream::audit::postgres::PostgresAuditLog;
use pseudostream::audit::sqlite::SqliteAuditLog;
use pseudostream::model::{JobId, JobUpdate};
use sqlx::{Connection, Row};

use crate::contract_audit::rejections::rejection;
use crate::contract_audit::{entry, record};
use crate::support::{drop_schema, fresh_schema_name, pg_url};

/// The ```sql blocks of docs/AUDIT.md.
fn documented_queries() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/AUDIT.md"))
        .expect("docs/AUDIT.md");
    let mut queries = Vec::new();
    let mut rest = doc.as_str();
    while let Some(at) = rest.find("```sql\n") {
        rest = &rest[at + "```sql\n".len()..];
        let end = rest.find("```").expect("a closed block");
        queries.push(rest[..end].trim().to_owned());
        rest = &rest[end + 3..];
    }
    queries
}

/// A finished job of `user` that started, with its first chunk after 0.4 s,
/// and a second submission that joined it; and submissions of `carl`
/// turned away yesterday, in two minutes, for two reasons.
async fn fill(log: &dyn AuditLog) {
    let now = Utc::now();
    // Noon: both minutes are on yesterday's date whenever this runs.
    let yesterday = (now - TimeDelta::days(1))
        .duration_trunc(TimeDelta::days(1))
        .unwrap()
        + TimeDelta::hours(12);
    let next_minute = yesterday + TimeDelta::minutes(1);
    log.record_rejections(&[
        rejection(
            yesterday,
            "acme",
            "carl",
            "rate_limited",
            40,
            "status = 500",
        ),
        rejection(
            next_minute,
            "acme",
            "carl",
            "rate_limited",
            2,
            "status = 501",
        ),
        rejection(
            yesterday,
            "acme",
            "carl",
            "pool_exhausted",
            1,
            "status = 502",
        ),
    ])
    .await
    .unwrap();
    let job = JobId::new();
    let mut record = record(job, now);
    let mut entry = entry(job, "acme", "ann", now);
    log.record_submission(&entry).await.unwrap();
    entry.submission_id = uuid::Uuid::now_v7().to_string();
    entry.user_id = "bob".into();
    entry.deduplicated_from = Some(job.to_string());
    log.record_submission(&entry).await.unwrap();
    let later = |ms| now + TimeDelta::milliseconds(ms);
    for update in [
        JobUpdate::Started { at: later(100) },
        JobUpdate::Progress {
            rows: 10,
            chunks: 1,
            at: later(400),
            attempt: 1,
        },
    ] {
        record.apply(&update);
    }
    log.record_progress(&record).await.unwrap();
}

#[tokio::test]
#[ignore = "needs Postgres (PSEUDOSTREAM_TEST_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test)"]
async fn every_documented_query_runs_on_postgres() {
    let (url, schema) = (pg_url(), fresh_schema_name());
    let log = PostgresAuditLog::connect_in_schema(&url, &schema)
        .await
        .expect("the Postgres audit log");
    fill(&log).await;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(&format!("SET search_path TO \"{schema}\""))
        .execute(&mut conn)
        .await
        .unwrap();
    let queries = documented_queries();
    assert!(queries.len() >= 8, "{queries:?}");
    for query in &queries {
        let rows = sqlx::query(query)
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{query}\n{e}"));
        assert!(
            !rows.is_empty() || query.contains("'failed'"),
            "no rows: {query}"
        );
    }
    let slowest =
        sqlx::query("SELECT first_chunk_seconds::float8 AS s FROM audit_first_chunk_latency")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let seconds: f64 = slowest.get("s");
    assert!((seconds - 0.4).abs() < 0.01, "{seconds}");
    let turned_away = sqlx::query(
        "SELECT reason, count, minutes FROM audit_rejections_by_day
         WHERE tenant = 'acme' AND user_id = 'carl' ORDER BY count DESC",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let by_reason: Vec<(String, i64, i64)> = turned_away
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        by_reason,
        [
            ("rate_limited".to_owned(), 42, 2),
            ("pool_exhausted".to_owned(), 1, 1)
        ]
    );
    conn.close().await.unwrap();
    log.close().await;
    drop_schema(&schema).await;
}

#[tokio::test]
async fn the_sqlite_log_has_the_same_views() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let log = SqliteAuditLog::open(&path).await.unwrap();
    fill(&log).await;
    log.close().await;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let top = sqlx::query("SELECT submissions, users, jobs_started FROM audit_top_fingerprints")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        (
            top.get::<i64, _>(0),
            top.get::<i64, _>(1),
            top.get::<i64, _>(2)
        ),
        (2, 2, 1)
    );
    let daily = sqlx::query("SELECT sum(submissions), sum(deduplicated) FROM audit_daily_by_user")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!((daily.get::<i64, _>(0), daily.get::<i64, _>(1)), (2, 1));
    let latency = sqlx::query("SELECT first_chunk_seconds FROM audit_first_chunk_latency")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let seconds: f64 = latency.get(0);
    assert!((seconds - 0.4).abs() < 0.01, "{seconds}");
    let turned_away = sqlx::query(
        "SELECT reason, count, minutes, sample_filter FROM audit_rejections_by_day
         WHERE tenant = 'acme' AND user_id = 'carl' AND day = date('now', '-1 day')
         ORDER BY count DESC",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let by_reason: Vec<(String, i64, i64, String)> = turned_away
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        by_reason,
        [
            ("rate_limited".to_owned(), 42, 2, "status = 500".to_owned()),
            ("pool_exhausted".to_owned(), 1, 1, "status = 502".to_owned())
        ]
    );
    conn.close().await.unwrap();
}
