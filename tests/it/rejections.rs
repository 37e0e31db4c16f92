//! Submissions turned away reach the audit as counts per minute, user and
//! reason, written by the periodic flush and by the last one at shutdown.

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use pseudostream::audit::RejectionCount;
use pseudostream::config::{Config, RateLimit};
use pseudostream::jobs::{Clock, Hooks, ManualClock};
use serde_json::json;
use sqlx::{Connection, Row};

use crate::support::*;

/// One new job per user per hour.
fn limited() -> Config {
    let mut config = config();
    config.rate_limit = RateLimit {
        count: 1,
        per: Duration::from_secs(3600),
    };
    config
}

async fn refused(server: &Server, key: &str, filter: &str) -> u16 {
    let body = json!({ "filter": filter, "timeRange": { "last": "7d" } });
    let (status, problem) = server.post(key, "/v1/jobs", body).await;
    assert!(matches!(status, 429 | 503), "{status} {problem}");
    status
}

/// (seconds after `start`, user, reason, count, sample filter) of each row.
type Summary = Vec<(i64, String, String, i64, String)>;

fn summary(rows: &[RejectionCount], start: DateTime<Utc>) -> Summary {
    rows.iter()
        .map(|r| {
            (
                (r.minute - start).num_seconds(),
                r.user_id.clone(),
                r.reason.clone(),
                r.count,
                r.sample_filter.clone(),
            )
        })
        .collect()
}

fn row(
    at: i64,
    user: &str,
    reason: &str,
    count: i64,
    filter: &str,
) -> (i64, String, String, i64, String) {
    (at, user.into(), reason.into(), count, filter.into())
}

#[tokio::test]
async fn rejected_submissions_become_one_audit_row_per_minute_user_and_reason() {
    let mut config = limited();
    config.offset_pool_size = 2;
    config.rejection_flush = Duration::from_millis(50);
    let start = Utc::now().duration_trunc(TimeDelta::minutes(1)).unwrap();
    let clock = ManualClock::new(start + TimeDelta::seconds(10));
    let hooks = Hooks {
        clock: Clock::Manual(clock.clone()),
        ..Hooks::default()
    };
    let server = Server::start_with(config, hooks).await;
    let audit = server.app.jobs.backends.audit.clone();
    let audited = |tenant: &'static str| {
        let audit = audit.clone();
        async move { summary(&audit.rejections(tenant, start).await.unwrap(), start) }
    };

    server.submit(ALICE, "status = 200").await;
    for filter in ["status = 403", "status = 404", "status = 405"] {
        assert_eq!(refused(&server, ALICE, filter).await, 429);
    }
    let first_minute = vec![row(0, "alice", "rate_limited", 3, "status = 403")];
    wait_until(
        "the first minute's count is written",
        Duration::from_secs(10),
        || async { audited("acme").await == first_minute },
    )
    .await;

    // The next minute has rows of its own; another user, another reason.
    clock.advance(Duration::from_secs(60));
    for filter in ["status = 406", "status = 407"] {
        assert_eq!(refused(&server, ALICE, filter).await, 429);
    }
    server.submit(ZED_OTHER_TENANT, "status = 200").await;
    assert_eq!(
        refused(&server, BOB, "status = 300").await,
        503,
        "the pool of 2 is full"
    );
    let expected = vec![
        row(0, "alice", "rate_limited", 3, "status = 403"),
        row(60, "alice", "rate_limited", 2, "status = 406"),
        row(60, "bob", "pool_exhausted", 1, "status = 300"),
    ];
    wait_until(
        "the second minute's counts are written",
        Duration::from_secs(10),
        || async { audited("acme").await == expected },
    )
    .await;
    assert!(
        audited("globex").await.is_empty(),
        "zed was never turned away"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("pseudostream_rejections_total{reason=\"rate_limited\"} 5"),
        "{metrics}"
    );
    assert!(metrics.contains("pseudostream_rejections_unattributed_total 0"));
    server.stop().await;
}

#[tokio::test]
async fn the_last_counts_are_written_at_shutdown() {
    let mut config = limited();
    // No periodic flush within the test: only the one at shutdown.
    config.rejection_flush = Duration::from_secs(3600);
    let db = config.data_dir.join("audit.db");
    let server = Server::start_with(config, Hooks::default()).await;
    server.submit(ALICE, "status = 200").await;
    for filter in ["status = 403", "status = 404"] {
        assert_eq!(refused(&server, ALICE, filter).await, 429);
    }
    server.stop().await;

    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let rows =
        sqlx::query("SELECT user_id, reason, sum(count) FROM audit_rejections GROUP BY 1, 2")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let rows: Vec<(String, String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(rows, [("alice".to_owned(), "rate_limited".to_owned(), 2)]);
    conn.close().await.unwrap();
}
