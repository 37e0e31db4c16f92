//! Postgres faults: the audit database down for 10 s (scenario 9) and its
//! connections killed (scenario 10).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DurationRound, TimeDelta, Utc};
use pseudostream::jobs::Hooks;
use tokio::sync::Semaphore;

use super::harness::*;
use crate::support::{ALICE, Server, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: needs redis-server, initdb and pg_ctl, runuser, and Kafka"]
async fn postgres_down_refuses_fast_and_running_jobs_are_audited_after() {
    let redis = PrivateRedis::start().await;
    let postgres = PrivatePostgres::start().await;
    let gate = Arc::new(Semaphore::new(2));
    let hooks = Hooks {
        chunk_gate: Some(gate.clone()),
        ..Hooks::default()
    };
    let mut config = distributed_config(&redis, &postgres);
    config.rejection_flush = Duration::from_millis(200);
    let server = Server::start_with(config, hooks).await;
    let started = Utc::now().duration_trunc(TimeDelta::minutes(1)).unwrap();
    let running = timed_submit(&server, "").await.job_id();
    wait_until("the job is streaming", Duration::from_secs(30), || async {
        let (_, job) = server.get(ALICE, &format!("/v1/jobs/{running}")).await;
        job["chunks"].as_u64() == Some(2)
    })
    .await;

    postgres.stop().await;
    // The job streams on through the outage, to its end.
    gate.add_permits(1_000_000);
    let mut took = Vec::new();
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(10) {
        let answer = timed_submit(&server, &format!("status = {}", 400 + took.len())).await;
        answer.assert_fast_503(Duration::from_secs(2));
        took.push(answer.took);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, job) = server.get(ALICE, &format!("/v1/jobs/{running}")).await;
    assert_eq!(
        job["status"], "completed",
        "the job finished during the outage"
    );
    took.sort();
    eprintln!(
        "Postgres down: {} submissions refused, median {:?}, slowest {:?}",
        took.len(),
        took[took.len() / 2],
        took.last().unwrap()
    );

    postgres.start_again().await;
    let (fresh, after) = admitted_within(
        &server,
        "status = 200",
        Instant::now(),
        Duration::from_secs(10),
    )
    .await;
    eprintln!("Postgres back: first job admitted after {after:?}");
    // The outbox lands the running job's progress and end.
    check_job(&server, &postgres, &running).await;
    check_job(&server, &postgres, &fresh).await;
    // The refusals were counted while the audit was down, and land now
    // (with any refused while it came back).
    let audit = server.app.jobs.backends.audit.clone();
    wait_until(
        "the refusals are audited",
        Duration::from_secs(10),
        || async {
            let rows = audit.rejections("acme", started).await.unwrap_or_default();
            rows.iter().all(|r| r.reason == "audit_unavailable")
                && rows.iter().map(|r| r.count).sum::<i64>() >= took.len() as i64
        },
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: needs redis-server, initdb and pg_ctl, runuser, and Kafka"]
async fn killed_postgres_connections_fail_at_most_the_request_in_flight() {
    let redis = PrivateRedis::start().await;
    let postgres = PrivatePostgres::start().await;
    let server = Server::start_with(distributed_config(&redis, &postgres), Hooks::default()).await;
    let first = timed_submit(&server, "status = 200").await.job_id();

    let admin = postgres.admin().await;
    let killed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'pseudostream-audit'",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(!killed.is_empty(), "the service had connections to kill");
    admin.close().await;

    let mut accepted = Vec::new();
    let mut refused = 0;
    for n in 0..10 {
        let answer = timed_submit(&server, &format!("status = {}", 300 + n)).await;
        match answer.status {
            202 => accepted.push(answer.job_id()),
            _ => {
                answer.assert_fast_503(Duration::from_secs(2));
                refused += 1;
            }
        }
    }
    assert!(refused <= 1, "{refused} submissions failed after the kill");
    for job in [first].iter().chain(&accepted) {
        check_job(&server, &postgres, job).await;
    }
    server.stop().await;
}
