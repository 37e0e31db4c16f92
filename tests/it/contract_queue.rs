//! The job queue contract: FIFO delivery, prompt shutdown and acked jobs
//! staying gone, for the embedded and the Redis queue; takeover of a silent
//! worker's job (and not of a heartbeating one) for Redis, the only queue
//! that takes over.

use std::sync::Arc;
use std::time::Duration;

use pseudostream::coord::queue::LocalJobQueue;
use pseudostream::coord::redis::RedisJobQueue;
use pseudostream::coord::{JobQueue, QueuedJob};
use pseudostream::filter::{Fingerprint, Order};
use pseudostream::model::{JobId, JobSpec, Offset};
use tokio_util::sync::CancellationToken;

use crate::contract_coord::{redis_prefix, redis_url};

fn spec(offset: u32) -> JobSpec {
    JobSpec {
        job_id: JobId::new(),
        offset: Offset(offset),
        fingerprint: Fingerprint([offset as u8; 32]),
        tenant: "acme".into(),
        user: "ann".into(),
        filter: "status = 500".into(),
        from_us: 0,
        to_us: 1,
        fields: vec![],
        order: Order::Desc,
        max_rows: 100,
    }
}

/// `next` with a deadline: `None` when nothing came in time.
async fn next_within<Q: JobQueue + ?Sized>(queue: &Q, deadline: Duration) -> Option<QueuedJob> {
    let shutdown = CancellationToken::new();
    tokio::time::timeout(deadline, queue.next(&shutdown))
        .await
        .ok()
        .and_then(|next| next.expect("the queue answers"))
}

pub async fn case_fifo<Q: JobQueue>(queue: Q) {
    let specs: Vec<JobSpec> = (0..3).map(spec).collect();
    for s in &specs {
        queue.enqueue(s.clone()).await.unwrap();
    }
    for s in &specs {
        let job = next_within(&queue, Duration::from_secs(5))
            .await
            .expect("a queued job");
        assert_eq!(&job.spec, s);
        queue.ack(&job).await.unwrap();
    }
}

pub async fn case_next_returns_none_on_shutdown<Q: JobQueue>(queue: Q) {
    let shutdown = CancellationToken::new();
    let next = queue.next(&shutdown);
    tokio::pin!(next);
    // An empty queue makes `next` wait...
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut next)
            .await
            .is_err()
    );
    // ...until shutdown, which ends the wait promptly.
    shutdown.cancel();
    let after = tokio::time::timeout(Duration::from_secs(1), &mut next)
        .await
        .expect("next returns promptly on shutdown");
    assert_eq!(after.unwrap(), None);
    // And an already cancelled token returns at once.
    assert_eq!(queue.next(&shutdown).await.unwrap(), None);
}

/// `other` is a second worker on the same queue (the same queue in-process).
pub async fn case_acked_jobs_never_come_back<Q: JobQueue>(queue: Arc<Q>, other: Arc<Q>) {
    queue.enqueue(spec(1)).await.unwrap();
    let job = next_within(queue.as_ref(), Duration::from_secs(5))
        .await
        .expect("a queued job");
    queue.ack(&job).await.unwrap();
    // Long enough for a Redis lease (300 ms) to pass and a takeover to run.
    assert_eq!(
        next_within(other.as_ref(), Duration::from_secs(2)).await,
        None
    );
    assert_eq!(
        next_within(queue.as_ref(), Duration::from_millis(200)).await,
        None
    );
}

mod embedded {
    use super::*;

    #[tokio::test]
    async fn fifo() {
        case_fifo(LocalJobQueue::new(8)).await;
    }

    #[tokio::test]
    async fn next_returns_none_on_shutdown() {
        case_next_returns_none_on_shutdown(LocalJobQueue::new(8)).await;
    }

    #[tokio::test]
    async fn acked_jobs_never_come_back() {
        let queue = Arc::new(LocalJobQueue::new(8));
        case_acked_jobs_never_come_back(queue.clone(), queue).await;
    }
}

mod redis {
    use super::*;

    const LEASE: Duration = Duration::from_millis(300);

    /// A worker process's view of the queue under `prefix`; fails loudly
    /// without Redis.
    async fn redis_queue(prefix: &str, consumer: &str) -> RedisJobQueue {
        let url = redis_url();
        RedisJobQueue::connect(&url, prefix, consumer, LEASE)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot connect to Redis at {url} (set PSEUDOSTREAM_TEST_REDIS_URL): {e}")
            })
    }

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn fifo() {
        case_fifo(redis_queue(&redis_prefix(), "a").await).await;
    }

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn next_returns_none_on_shutdown() {
        case_next_returns_none_on_shutdown(redis_queue(&redis_prefix(), "a").await).await;
    }

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn acked_jobs_never_come_back() {
        let prefix = redis_prefix();
        case_acked_jobs_never_come_back(
            Arc::new(redis_queue(&prefix, "a").await),
            Arc::new(redis_queue(&prefix, "b").await),
        )
        .await;
    }

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn a_silent_workers_job_is_taken_over_after_the_lease() {
        let prefix = redis_prefix();
        let (a, b) = (
            redis_queue(&prefix, "a").await,
            redis_queue(&prefix, "b").await,
        );
        a.enqueue(spec(1)).await.unwrap();
        let held = next_within(&a, Duration::from_secs(5))
            .await
            .expect("a queued job");
        // `a` neither heartbeats nor acks: it went silent.
        let taken = next_within(&b, Duration::from_secs(5))
            .await
            .expect("the silent worker's job is delivered again");
        assert_eq!(taken, held, "same job, same delivery");
        b.ack(&taken).await.unwrap();
        assert_eq!(next_within(&a, LEASE * 3).await, None);
    }

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn a_heartbeating_workers_job_is_not_taken_over() {
        let prefix = redis_prefix();
        let a = Arc::new(redis_queue(&prefix, "a").await);
        let b = redis_queue(&prefix, "b").await;
        a.enqueue(spec(1)).await.unwrap();
        let held = next_within(a.as_ref(), Duration::from_secs(5))
            .await
            .expect("a queued job");
        let every = a.heartbeat_interval().expect("Redis asks for heartbeats");
        let heartbeat = {
            let (a, held) = (a.clone(), held.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    a.heartbeat(&held).await.unwrap();
                }
            })
        };
        // Several leases pass while `a` keeps heartbeating.
        assert_eq!(next_within(&b, LEASE * 4).await, None);
        heartbeat.abort();
        a.ack(&held).await.unwrap();
    }

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn a_malformed_entry_is_skipped() {
        let prefix = redis_prefix();
        let queue = redis_queue(&prefix, "a").await;
        let client = ::redis::Client::open(redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: String = ::redis::cmd("XADD")
            .arg(format!("{prefix}:queue"))
            .arg("*")
            .arg("spec")
            .arg("not json")
            .query_async(&mut conn)
            .await
            .unwrap();
        let good = spec(2);
        queue.enqueue(good.clone()).await.unwrap();
        let job = next_within(&queue, Duration::from_secs(5))
            .await
            .expect("the well-formed job");
        assert_eq!(job.spec, good);
        queue.ack(&job).await.unwrap();
        let left: u64 = ::redis::cmd("XLEN")
            .arg(format!("{prefix}:queue"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(left, 0, "the malformed entry was acked and deleted");
    }

    /// Redis restarted without persistence: the stream and its consumer
    /// group are gone, new jobs recreate the stream, and the queue must
    /// recreate the group instead of failing every read with NOGROUP.
    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn a_lost_consumer_group_is_created_again() {
        let prefix = redis_prefix();
        let queue = redis_queue(&prefix, "a").await;
        let client = ::redis::Client::open(redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: u64 = ::redis::cmd("DEL")
            .arg(format!("{prefix}:queue"))
            .query_async(&mut conn)
            .await
            .unwrap();
        let queued = spec(3);
        queue.enqueue(queued.clone()).await.unwrap();
        let job = next_within(&queue, Duration::from_secs(10))
            .await
            .expect("the job queued after the loss");
        assert_eq!(job.spec, queued);
        queue.ack(&job).await.unwrap();
    }
}
