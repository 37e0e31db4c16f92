use super::writer::Plan;
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
