//! Scenario 5: the broker loses its data (a memory broker killed and
//! started again empty) while a job streams into it. That job's chunks so
//! far are gone, so it must not complete: it ends `failed`, saying why.
//! A job submitted after the loss completes whole within 30 s of it.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::harness::*;
use crate::support::{ALICE, Server, wait_until};

/// How soon after the loss a new job must have completed.
const NEW_JOBS_WITHIN: Duration = Duration::from_secs(30);

/// The job's view once its status is final.
async fn finished(server: &Server, job: &str, within: Duration) -> Value {
    let end = Instant::now() + within;
    loop {
        let (_, view) = server.get(ALICE, &format!("/v1/jobs/{job}")).await;
        if !matches!(view["status"].as_str(), Some("queued" | "running")) {
            return view;
        }
        assert!(
            Instant::now() < end,
            "the job did not end within {within:?}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: needs redis-server, initdb and pg_ctl, runuser, and tansu"]
async fn a_broker_that_lost_its_data_fails_the_jobs_in_it_and_serves_new_ones() {
    let mut broker = PrivateBroker::start().await;
    let redis = PrivateRedis::start().await;
    let postgres = PrivatePostgres::start().await;
    let mut config = distributed_config(&redis, &postgres);
    config.kafka_brokers = Some(broker.address());
    let (server, gate) = gated_server(config).await;
    let streaming = submit_streaming(&server, "").await;

    broker.restart_empty().await;
    let lost_at = Instant::now();
    gate.add_permits(1_000_000);
    let fresh = timed_submit(&server, "status >= 500").await.job_id();

    let view = finished(&server, &fresh, NEW_JOBS_WITHIN).await;
    let took = lost_at.elapsed();
    assert_eq!(view["status"], "completed", "a job after the loss: {view}");
    assert!(
        took <= NEW_JOBS_WITHIN,
        "the first job after the loss completed {took:?} after it"
    );
    check_job(&server, &postgres, &fresh).await;

    let view = finished(&server, &streaming, Duration::from_secs(60)).await;
    assert_eq!(view["status"], "failed", "the job the broker lost: {view}");
    let error = view["error"].as_str().unwrap_or_default();
    assert!(error.contains("lost"), "it says why: {error}");
    let admin = postgres.admin().await;
    wait_until(
        "its audit row says failed",
        Duration::from_secs(30),
        || async {
            let audited: Option<(String,)> =
                sqlx::query_as("SELECT status FROM audit_submissions WHERE job_id = $1::uuid")
                    .bind(&streaming)
                    .fetch_optional(&admin)
                    .await
                    .unwrap();
            audited.is_some_and(|(status,)| status == "failed")
        },
    )
    .await;
    admin.close().await;
    server.stop().await;
    eprintln!(
        "broker lost its data: the job in it failed ({error}); the first job after it completed {took:?} after the loss"
    );
}
