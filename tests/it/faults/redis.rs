//! Redis faults: a restart that loses every key (scenario 7) and a freeze
//! (scenario 8).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pseudostream::jobs::Hooks;
use tokio::sync::Semaphore;

use super::harness::*;
use crate::support::{ALICE, Server, wait_until};

/// Chunks a held job publishes before the gate stops it.
const HELD_AFTER: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: needs redis-server, initdb and pg_ctl, runuser, and Kafka"]
async fn a_redis_restart_costs_fast_503s_and_heals_without_a_restart() {
    let mut redis = PrivateRedis::start().await;
    let postgres = PrivatePostgres::start().await;
    let gate = Arc::new(Semaphore::new(HELD_AFTER));
    let hooks = Hooks {
        chunk_gate: Some(gate.clone()),
        ..Hooks::default()
    };
    let config = distributed_config(&redis, &postgres);
    let server = Server::start_with(config.clone(), hooks).await;

    // A job streaming when Redis goes: held after its first chunks.
    let held = timed_submit(&server, "").await.job_id();
    wait_until(
        "the held job published",
        Duration::from_secs(30),
        || async {
            let (_, job) = server.get(ALICE, &format!("/v1/jobs/{held}")).await;
            job["chunks"].as_u64() == Some(HELD_AFTER as u64)
        },
    )
    .await;

    redis.kill().await;
    for n in 0..5 {
        timed_submit(&server, &format!("status = {}", 500 + n))
            .await
            .assert_fast_503(Duration::from_secs(2));
    }
    let started = Instant::now();
    let (status, _) = server.get(ALICE, &format!("/v1/jobs/{held}")).await;
    assert_eq!(status, 503, "a read during the outage");
    assert!(started.elapsed() <= Duration::from_secs(2));

    // Back, empty: the held job finds its record gone and stops; new
    // offsets wait for that (the pool's quarantine), then jobs run again.
    redis.restart().await;
    let restarted = Instant::now();
    gate.add_permits(1_000_000);
    let (fresh, after) =
        admitted_within(&server, "status >= 500", restarted, Duration::from_secs(5)).await;
    eprintln!("Redis restarted: first job admitted {after:?} after the restart");
    check_job(&server, &postgres, &fresh).await;

    // The held job ended failed, and said so in its audit row before its
    // offset could be leased again.
    let admin = postgres.admin().await;
    let row = |job: String| {
        let admin = admin.clone();
        async move {
            sqlx::query_as::<_, (String, Option<String>, Option<chrono::DateTime<chrono::Utc>>, chrono::DateTime<chrono::Utc>)>(
                "SELECT status, error, finished_at, submitted_at FROM audit_submissions WHERE job_id = $1::uuid",
            )
            .bind(job)
            .fetch_one(&admin)
            .await
            .unwrap()
        }
    };
    let (status, error, finished, _) = row(held.clone()).await;
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("lost"), "the error says why");
    let (_, _, _, fresh_submitted) = row(fresh.clone()).await;
    assert!(
        finished.unwrap() <= fresh_submitted,
        "the held job had stopped before a new job was admitted"
    );
    admin.close().await;

    // Its attempt did not start again lower after the restart: its record
    // was lost, so nothing ran it again, and what it wrote says attempt 1.
    let copies = copies_in_topic(&config, &held).await;
    assert!(copies.len() >= HELD_AFTER, "{copies:?}");
    assert!(
        copies.values().flatten().all(|(attempt, _)| *attempt == 1),
        "{copies:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: needs redis-server, initdb and pg_ctl, runuser, and Kafka"]
async fn a_frozen_redis_gets_answers_within_3_s_then_the_service_heals() {
    let redis = PrivateRedis::start().await;
    let postgres = PrivatePostgres::start().await;
    let server = Server::start_with(distributed_config(&redis, &postgres), Hooks::default()).await;
    let before = timed_submit(&server, "status = 404").await.job_id();
    server.read_all(ALICE, &before).await;

    redis.freeze().await;
    let frozen = Instant::now();
    let mut answers = Vec::new();
    while frozen.elapsed() < Duration::from_secs(5) {
        let answer = timed_submit(&server, "status = 503").await;
        answer.assert_fast_503(Duration::from_secs(3));
        answers.push(answer.took);
        let started = Instant::now();
        server.get(ALICE, &format!("/v1/jobs/{before}")).await;
        let read = started.elapsed();
        assert!(read <= Duration::from_secs(3), "a read took {read:?}");
    }
    redis.thaw().await;
    let thawed = Instant::now();
    eprintln!(
        "frozen Redis: {} submissions, slowest 503 after {:?}",
        answers.len(),
        answers.iter().max().unwrap()
    );
    let (fresh, after) =
        admitted_within(&server, "status = 503", thawed, Duration::from_secs(5)).await;
    eprintln!("frozen Redis: first job admitted {after:?} after the thaw");
    check_job(&server, &postgres, &fresh).await;
    check_job(&server, &postgres, &before).await;
    server.stop().await;
}
