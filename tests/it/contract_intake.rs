//! The job intake contract, for the embedded store and queue taken one
//! after the other and for Redis's one script: a job taken in is both
//! stored and queued, and taking it in again (a retry after a lost answer)
//! queues it no second time.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use pseudostream::coord::policy::Policy;
use pseudostream::coord::queue::{LocalJobQueue, StoreThenQueue};
use pseudostream::coord::redis::RedisJobQueue;
use pseudostream::coord::{JobIntake, JobQueue, JobStore, memory};
use pseudostream::model::{JobId, JobRecord, JobStatus, Offset};
use tokio_util::sync::CancellationToken;

use crate::contract_coord::{redis_backends, redis_prefix, redis_url, spec};

/// An intake and the store and queue it writes to.
struct Intake {
    intake: Arc<dyn JobIntake>,
    store: Arc<dyn JobStore>,
    queue: Arc<dyn JobQueue>,
}

fn embedded() -> Intake {
    let coordination = memory::coordination(3);
    let queue: Arc<dyn JobQueue> = Arc::new(LocalJobQueue::new(8));
    let intake = Arc::new(StoreThenQueue {
        store: coordination.job_store.clone(),
        queue: queue.clone(),
    });
    Intake {
        intake,
        store: coordination.job_store,
        queue,
    }
}

async fn redis() -> Intake {
    let prefix = redis_prefix();
    let coordination = redis_backends(&prefix, 3)
        .await
        .into_coordination(Policy::default());
    let queue = RedisJobQueue::connect(&redis_url(), &prefix, "a", Duration::from_secs(30))
        .await
        .expect("the Redis queue connects");
    Intake {
        intake: coordination
            .intake
            .expect("Redis takes a job in in one step"),
        store: coordination.job_store,
        queue: Arc::new(queue),
    }
}

fn new_job() -> JobRecord {
    JobRecord::new(spec(JobId::new(), Offset(1), 7, "acme", "ann"), Utc::now())
}

/// The next queued job's record id, or `None` when nothing comes in `wait`.
async fn next_queued(queue: &dyn JobQueue, wait: Duration) -> Option<JobId> {
    let shutdown = CancellationToken::new();
    let next = tokio::time::timeout(wait, queue.next(&shutdown))
        .await
        .ok()?;
    next.expect("the queue answers").map(|job| job.spec.job_id)
}

async fn case_a_job_taken_in_is_stored_and_queued(i: Intake) {
    let record = new_job();
    i.intake.store_and_queue(record.clone()).await.unwrap();
    let stored = i.store.job(record.id()).await.unwrap().expect("stored");
    assert_eq!(stored.status, JobStatus::Queued);
    assert_eq!(stored.spec, record.spec);
    let queued = next_queued(i.queue.as_ref(), Duration::from_secs(5)).await;
    assert_eq!(queued, Some(record.id()));
}

async fn case_taking_a_job_in_again_queues_it_once(i: Intake) {
    let record = new_job();
    i.intake.store_and_queue(record.clone()).await.unwrap();
    i.intake.store_and_queue(record.clone()).await.unwrap();
    let first = next_queued(i.queue.as_ref(), Duration::from_secs(5)).await;
    assert_eq!(first, Some(record.id()));
    let second = next_queued(i.queue.as_ref(), Duration::from_millis(300)).await;
    assert_eq!(second, None, "a job taken in twice was queued twice");
}

mod embedded {
    use super::*;

    #[tokio::test]
    async fn a_job_taken_in_is_stored_and_queued() {
        case_a_job_taken_in_is_stored_and_queued(embedded()).await;
    }

    #[tokio::test]
    async fn taking_a_job_in_again_queues_it_once() {
        case_taking_a_job_in_again_queues_it_once(embedded()).await;
    }
}

mod redis {
    use super::*;

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn a_job_taken_in_is_stored_and_queued() {
        case_a_job_taken_in_is_stored_and_queued(redis().await).await;
    }

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn taking_a_job_in_again_queues_it_once() {
        case_taking_a_job_in_again_queues_it_once(redis().await).await;
    }
}
