//! The coordinator contract: every implementation must pass these cases.
//! `coordinator_suite!` stamps out one test per case for an implementation;
//! the distributed one joins with its own fixture.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use pseudostream::coord::memory::MemoryCoordinator;
use pseudostream::coord::redis::RedisCoordinator;
use pseudostream::coord::{Claim, Coordinator, IdempotencyKey, KeyClaim, RequestHash};
use pseudostream::filter::{Fingerprint, Order};
use pseudostream::model::{JobId, JobRecord, JobSpec, JobStatus, JobUpdate, Offset};

/// The Redis the distributed contract runs against.
pub fn redis_url() -> String {
    std::env::var("PSEUDOSTREAM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test (or earlier run) uses.
pub fn redis_prefix() -> String {
    format!("pseudostream-test:{}", uuid::Uuid::new_v4())
}

/// A fresh coordinator on its own prefix; fails loudly without Redis.
async fn redis_coordinator(pool_size: u32) -> RedisCoordinator {
    let url = redis_url();
    RedisCoordinator::connect(&url, &redis_prefix(), pool_size)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to Redis at {url} (set PSEUDOSTREAM_TEST_REDIS_URL): {e}")
        })
}

fn spec(job_id: JobId, offset: Offset, fp: u8, tenant: &str, user: &str) -> JobSpec {
    JobSpec {
        job_id,
        offset,
        fingerprint: Fingerprint([fp; 32]),
        tenant: tenant.into(),
        user: user.into(),
        filter: "status = 500".into(),
        from_us: 0,
        to_us: 1,
        fields: vec![],
        order: Order::Desc,
        max_rows: 100,
    }
}

/// Claims, leases and inserts a job the way submission does.
async fn admit<C: Coordinator>(c: &C, fp: u8, user: &str) -> JobRecord {
    let id = JobId::new();
    assert_eq!(
        c.claim_fingerprint(Fingerprint([fp; 32]), id)
            .await
            .unwrap(),
        Claim::Won
    );
    let offset = c.lease_offset(id).await.unwrap().expect("a free offset");
    let record = JobRecord::new(spec(id, offset, fp, "acme", user), Utc::now());
    c.insert_job(record.clone()).await.unwrap();
    record
}

fn finished(at_offset_secs: i64) -> JobUpdate {
    let at = Utc::now();
    JobUpdate::Finished {
        status: JobStatus::Completed,
        rows: 3,
        chunks: 1,
        truncated: false,
        error: None,
        at,
        expires_at: at + TimeDelta::seconds(at_offset_secs),
    }
}

pub async fn case_dedup_while_live<C: Coordinator>(c: C) {
    let job = admit(&c, 1, "ann").await;
    match c
        .claim_fingerprint(Fingerprint([1; 32]), JobId::new())
        .await
        .unwrap()
    {
        Claim::Existing(existing) => assert_eq!(existing.id(), job.id()),
        other => panic!("expected the live job, got {other:?}"),
    }
}

pub async fn case_concurrent_claim_is_pending_then_abandonable<C: Coordinator>(c: C) {
    let (a, b) = (JobId::new(), JobId::new());
    let fp = Fingerprint([2; 32]);
    assert_eq!(c.claim_fingerprint(fp, a).await.unwrap(), Claim::Won);
    assert_eq!(c.claim_fingerprint(fp, b).await.unwrap(), Claim::Pending);
    c.abandon_fingerprint(fp, b).await.unwrap(); // not the holder: no effect
    assert_eq!(c.claim_fingerprint(fp, b).await.unwrap(), Claim::Pending);
    c.abandon_fingerprint(fp, a).await.unwrap();
    assert_eq!(c.claim_fingerprint(fp, b).await.unwrap(), Claim::Won);
}

pub async fn case_offsets_round_robin_and_never_double_leased<C: Coordinator>(c: C) {
    // The fixture's pool has 3 offsets.
    let ids: Vec<JobId> = (0..4).map(|_| JobId::new()).collect();
    let mut got = Vec::new();
    for id in &ids[..3] {
        got.push(c.lease_offset(*id).await.unwrap().unwrap().0);
    }
    assert_eq!(got, [0, 1, 2]);
    assert_eq!(
        c.lease_offset(ids[3]).await.unwrap(),
        None,
        "pool exhausted"
    );
    c.release_offset(Offset(1), ids[3]).await.unwrap(); // not the holder
    assert_eq!(c.lease_offset(ids[3]).await.unwrap(), None);
    c.release_offset(Offset(1), ids[1]).await.unwrap();
    assert_eq!(c.lease_offset(ids[3]).await.unwrap(), Some(Offset(1)));
    let usage = c.pool_usage().await.unwrap();
    assert_eq!((usage.leased, usage.size), (3, 3));
}

pub async fn case_round_robin_continues_after_the_last_lease<C: Coordinator>(c: C) {
    let a = c.lease_offset(JobId::new()).await.unwrap().unwrap();
    let id = JobId::new();
    let b = c.lease_offset(id).await.unwrap().unwrap();
    c.release_offset(a, JobId::new()).await.unwrap();
    c.release_offset(b, id).await.unwrap();
    // Offset 1 is free again, but the next lease moves on to 2.
    assert_eq!(c.lease_offset(JobId::new()).await.unwrap(), Some(Offset(2)));
}

pub async fn case_updates_and_offset_lookup<C: Coordinator>(c: C) {
    let job = admit(&c, 3, "ann").await;
    assert_eq!(
        c.job_at_offset(job.spec.offset)
            .await
            .unwrap()
            .unwrap()
            .id(),
        job.id()
    );
    let started = c
        .update_job(job.id(), JobUpdate::Started { at: Utc::now() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(started.status, JobStatus::Running);
    assert!(started.version > job.version);
    let progressed = c
        .update_job(
            job.id(),
            JobUpdate::Progress {
                rows: 10,
                chunks: 1,
                at: Utc::now(),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((progressed.rows, progressed.chunks), (10, 1));
    assert!(progressed.first_chunk_at.is_some());
    assert!(
        c.update_job(JobId::new(), JobUpdate::CancelRequested)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn case_wait_for_change_wakes_on_update<C: Coordinator + 'static>(c: C) {
    let c = std::sync::Arc::new(c);
    let job = admit(c.as_ref(), 4, "ann").await;
    let waiter = {
        let c = c.clone();
        let (id, version) = (job.id(), job.version);
        tokio::spawn(async move {
            c.wait_for_change(id, version, Duration::from_secs(20))
                .await
        })
    };
    tokio::task::yield_now().await;
    c.update_job(
        job.id(),
        JobUpdate::Progress {
            rows: 1,
            chunks: 1,
            at: Utc::now(),
        },
    )
    .await
    .unwrap();
    let seen = waiter.await.unwrap().unwrap().unwrap();
    assert!(seen.version > job.version);
    // Nothing new: returns at the timeout with the same version.
    let same = c
        .wait_for_change(job.id(), seen.version, Duration::from_millis(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(same.version, seen.version);
}

pub async fn case_expiry_happens_once_and_frees_everything<C: Coordinator>(c: C) {
    let running = admit(&c, 5, "ann").await;
    let done = admit(&c, 6, "ann").await;
    c.update_job(done.id(), finished(-1)).await.unwrap();
    let later = admit(&c, 7, "ann").await;
    c.update_job(later.id(), finished(3600)).await.unwrap();

    let due = c.begin_expiry(Utc::now()).await.unwrap();
    assert_eq!(
        due.iter().map(|j| j.id()).collect::<Vec<_>>(),
        [done.id()],
        "only the due, finished job"
    );
    assert!(
        c.begin_expiry(Utc::now()).await.unwrap().is_empty(),
        "exactly once"
    );
    c.finish_expiry(&due[0]).await.unwrap();
    assert!(c.job(done.id()).await.unwrap().is_none());
    assert!(c.job_at_offset(done.spec.offset).await.unwrap().is_none());
    assert_eq!(
        c.claim_fingerprint(Fingerprint([6; 32]), JobId::new())
            .await
            .unwrap(),
        Claim::Won
    );
    assert_eq!(
        c.job(running.id()).await.unwrap().unwrap().status,
        JobStatus::Queued,
        "running jobs never expire"
    );
    assert_eq!(c.pool_usage().await.unwrap().leased, 2);
}

pub async fn case_jobs_of_a_user_newest_first<C: Coordinator>(c: C) {
    let first = admit(&c, 8, "ann").await;
    let _other = admit(&c, 9, "bob").await;
    let second = admit(&c, 10, "ann").await;
    let ids: Vec<JobId> = c
        .jobs_of("acme", "ann", None, 10)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id())
        .collect();
    assert_eq!(ids, [second.id(), first.id()]);
    assert!(
        c.jobs_of("globex", "ann", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        c.jobs_of("acme", "ann", Some(JobStatus::Running), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(c.jobs_of("acme", "ann", None, 1).await.unwrap().len(), 1);
}

const DAY: Duration = Duration::from_secs(86_400);

pub async fn case_idempotency_key_replays_only_its_own_request<C: Coordinator>(c: C) {
    let key = IdempotencyKey::new("acme", "ann", "retry-1");
    let (same, other) = (RequestHash::of(b"one"), RequestHash::of(b"two"));
    assert_eq!(
        c.claim_idempotency_key(key, same).await.unwrap(),
        KeyClaim::Won
    );
    assert_eq!(
        c.claim_idempotency_key(key, same).await.unwrap(),
        KeyClaim::Pending,
        "a retry while the first is admitted waits"
    );
    assert_eq!(
        c.claim_idempotency_key(key, other).await.unwrap(),
        KeyClaim::Mismatch
    );
    let job = admit(&c, 20, "ann").await;
    c.complete_idempotency_key(key, same, job.id(), true, DAY)
        .await
        .unwrap();
    assert_eq!(
        c.claim_idempotency_key(key, same).await.unwrap(),
        KeyClaim::Replay {
            job: job.id(),
            deduplicated: true
        }
    );
    assert_eq!(
        c.claim_idempotency_key(key, other).await.unwrap(),
        KeyClaim::Mismatch
    );
    // Keys are scoped: the same key of another user or tenant is another key.
    for (tenant, user) in [("acme", "bob"), ("globex", "ann")] {
        let theirs = IdempotencyKey::new(tenant, user, "retry-1");
        assert_eq!(
            c.claim_idempotency_key(theirs, other).await.unwrap(),
            KeyClaim::Won
        );
    }
}

pub async fn case_abandoned_idempotency_key_is_free<C: Coordinator>(c: C) {
    let key = IdempotencyKey::new("acme", "ann", "retry-2");
    let (one, two) = (RequestHash::of(b"one"), RequestHash::of(b"two"));
    assert_eq!(
        c.claim_idempotency_key(key, one).await.unwrap(),
        KeyClaim::Won
    );
    c.abandon_idempotency_key(key, two).await.unwrap(); // not the holder: no effect
    assert_eq!(
        c.claim_idempotency_key(key, two).await.unwrap(),
        KeyClaim::Mismatch
    );
    c.abandon_idempotency_key(key, one).await.unwrap();
    assert_eq!(
        c.claim_idempotency_key(key, two).await.unwrap(),
        KeyClaim::Won
    );
}

pub async fn case_idempotency_key_ends_with_its_job<C: Coordinator>(c: C) {
    let key = IdempotencyKey::new("acme", "ann", "retry-3");
    let (one, two) = (RequestHash::of(b"one"), RequestHash::of(b"two"));
    assert_eq!(
        c.claim_idempotency_key(key, one).await.unwrap(),
        KeyClaim::Won
    );
    let job = admit(&c, 21, "ann").await;
    c.complete_idempotency_key(key, one, job.id(), false, DAY)
        .await
        .unwrap();
    c.update_job(job.id(), finished(-1)).await.unwrap();
    let due = c.begin_expiry(Utc::now()).await.unwrap();
    assert_eq!(due.len(), 1);
    // Expiring: the key already lets a new request through.
    assert_eq!(
        c.claim_idempotency_key(key, two).await.unwrap(),
        KeyClaim::Won
    );
    c.abandon_idempotency_key(key, two).await.unwrap();
    c.finish_expiry(&due[0]).await.unwrap();
    c.begin_expiry(Utc::now()).await.unwrap();
    assert_eq!(
        c.claim_idempotency_key(key, one).await.unwrap(),
        KeyClaim::Won
    );
}

pub async fn case_idempotency_key_lapses_after_its_ttl<C: Coordinator>(c: C) {
    let key = IdempotencyKey::new("acme", "ann", "retry-4");
    let (one, two) = (RequestHash::of(b"one"), RequestHash::of(b"two"));
    assert_eq!(
        c.claim_idempotency_key(key, one).await.unwrap(),
        KeyClaim::Won
    );
    let job = admit(&c, 22, "ann").await;
    let ttl = Duration::from_millis(50);
    c.complete_idempotency_key(key, one, job.id(), false, ttl)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    // Poll: the key is replayed until its TTL passes, then free.
    loop {
        c.begin_expiry(Utc::now()).await.unwrap();
        match c.claim_idempotency_key(key, two).await.unwrap() {
            KeyClaim::Won => break,
            KeyClaim::Mismatch => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

macro_rules! coordinator_suite {
    // The attribute goes on every test, e.g. `#[ignore = "needs Redis"]`.
    // This arm comes first: `#` could also start an expression.
    ($module:ident, #[$attr:meta], $make:expr) => {
        coordinator_suite!(@suite $module, [#[$attr]], $make);
    };
    ($module:ident, $make:expr) => {
        coordinator_suite!(@suite $module, [], $make);
    };
    (@suite $module:ident, $attrs:tt, $make:expr) => {
        mod $module {
            use super::*;
            coordinator_suite!(@cases $attrs $make;
                case_dedup_while_live,
                case_concurrent_claim_is_pending_then_abandonable,
                case_offsets_round_robin_and_never_double_leased,
                case_round_robin_continues_after_the_last_lease,
                case_updates_and_offset_lookup,
                case_wait_for_change_wakes_on_update,
                case_expiry_happens_once_and_frees_everything,
                case_jobs_of_a_user_newest_first,
                case_idempotency_key_replays_only_its_own_request,
                case_abandoned_idempotency_key_is_free,
                case_idempotency_key_ends_with_its_job,
                case_idempotency_key_lapses_after_its_ttl);
        }
    };
    (@cases $attrs:tt $make:expr; $($case:ident),*) => {
        $( coordinator_suite!(@case $attrs $make; $case); )*
    };
    (@case [$(#[$attr:meta])*] $make:expr; $case:ident) => {
        #[tokio::test]
        $(#[$attr])*
        async fn $case() {
            super::$case($make).await;
        }
    };
}

coordinator_suite!(embedded, MemoryCoordinator::new(3));
coordinator_suite!(
    redis,
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"],
    redis_coordinator(3).await
);

/// Two coordinators sharing one Redis prefix behave as one: the Lua scripts
/// are what keep concurrent callers on different instances apart.
mod redis_across_instances {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;

    async fn pair(pool_size: u32) -> (Arc<RedisCoordinator>, Arc<RedisCoordinator>) {
        let prefix = redis_prefix();
        let url = redis_url();
        let connect = |prefix: String| {
            let url = url.clone();
            async move {
                RedisCoordinator::connect(&url, &prefix, pool_size)
                    .await
                    .unwrap_or_else(|e| panic!("cannot connect to Redis at {url}: {e}"))
            }
        };
        (
            Arc::new(connect(prefix.clone()).await),
            Arc::new(connect(prefix).await),
        )
    }

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn concurrent_leases_never_share_an_offset() {
        let (a, b) = pair(20).await;
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..50 {
            let c = if n % 2 == 0 { a.clone() } else { b.clone() };
            calls.spawn(async move { c.lease_offset(JobId::new()).await.unwrap() });
        }
        let results = calls.join_all().await;
        let leased: Vec<u32> = results.iter().flatten().map(|o| o.0).collect();
        let distinct: HashSet<u32> = leased.iter().copied().collect();
        assert_eq!(leased.len(), 20, "{results:?}");
        assert_eq!(distinct.len(), 20, "an offset was leased twice: {leased:?}");
        assert_eq!(results.iter().filter(|r| r.is_none()).count(), 30);
        assert_eq!(a.pool_usage().await.unwrap().leased, 20);
    }

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn concurrent_idempotency_key_claims_have_one_winner() {
        let (a, b) = pair(3).await;
        let key = IdempotencyKey::new("acme", "ann", "k");
        let request = RequestHash::of(b"body");
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..20 {
            let c = if n % 2 == 0 { a.clone() } else { b.clone() };
            calls.spawn(async move { c.claim_idempotency_key(key, request).await.unwrap() });
        }
        let results = calls.join_all().await;
        let won = results.iter().filter(|c| **c == KeyClaim::Won).count();
        assert_eq!(won, 1, "{results:?}");
        assert!(
            results
                .iter()
                .all(|c| matches!(c, KeyClaim::Won | KeyClaim::Pending))
        );
    }

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn concurrent_claims_have_one_winner() {
        let (a, b) = pair(3).await;
        let fp = Fingerprint([42; 32]);
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..20 {
            let c = if n % 2 == 0 { a.clone() } else { b.clone() };
            calls.spawn(async move { c.claim_fingerprint(fp, JobId::new()).await.unwrap() });
        }
        let results = calls.join_all().await;
        let won = results.iter().filter(|c| **c == Claim::Won).count();
        assert_eq!(won, 1, "{results:?}");
        assert!(
            results
                .iter()
                .all(|c| matches!(c, Claim::Won | Claim::Pending))
        );
    }

    /// Each instance remembers the record it last wrote and updates against
    /// it; an update made meanwhile by the other instance must not be lost.
    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn updates_from_two_instances_build_on_each_other() {
        let (a, b) = pair(3).await;
        let job = admit(a.as_ref(), 12, "ann").await;
        let id = job.id();
        let started = a
            .update_job(id, JobUpdate::Started { at: Utc::now() })
            .await
            .unwrap()
            .unwrap();
        // `a` now remembers `started`; `b` changes the record under it.
        b.update_job(id, JobUpdate::CancelRequested)
            .await
            .unwrap()
            .unwrap();
        let progress = JobUpdate::Progress {
            rows: 10,
            chunks: 1,
            at: Utc::now(),
        };
        let seen = a.update_job(id, progress).await.unwrap().unwrap();
        assert!(seen.cancel_requested, "b's update was lost: {seen:?}");
        assert_eq!((seen.rows, seen.version), (10, started.version + 2));

        // Concurrent updates from both: every one is applied exactly once.
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..40 {
            let c = if n % 2 == 0 { a.clone() } else { b.clone() };
            calls.spawn(async move {
                let progress = JobUpdate::Progress {
                    rows: 10,
                    chunks: 1,
                    at: Utc::now(),
                };
                c.update_job(id, progress).await.unwrap().unwrap()
            });
        }
        calls.join_all().await;
        let after = b.job(id).await.unwrap().unwrap();
        assert_eq!(after.version, seen.version + 40);
        assert_eq!(a.job(id).await.unwrap(), Some(after));
    }

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn a_change_on_one_instance_wakes_a_waiter_on_the_other() {
        let (a, b) = pair(3).await;
        let job = admit(a.as_ref(), 11, "ann").await;
        let waiter = {
            let b = b.clone();
            let (id, version) = (job.id(), job.version);
            tokio::spawn(async move {
                b.wait_for_change(id, version, Duration::from_secs(20))
                    .await
            })
        };
        a.update_job(job.id(), JobUpdate::CancelRequested)
            .await
            .unwrap();
        let seen = waiter.await.unwrap().unwrap().unwrap();
        assert!(seen.cancel_requested);
    }

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn dropping_the_coordinator_ends_its_change_subscriber() {
        let prefix = redis_prefix();
        let channel = format!("{prefix}:changes");
        let client = ::redis::Client::open(redis_url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut subscribers = async || -> u64 {
            let reply: (String, u64) = ::redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut conn)
                .await
                .unwrap();
            reply.1
        };
        let coordinator = RedisCoordinator::connect(&redis_url(), &prefix, 3)
            .await
            .unwrap();
        assert_eq!(subscribers().await, 1);
        drop(coordinator);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while subscribers().await != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the subscriber outlived its coordinator"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn a_due_job_expires_on_exactly_one_instance() {
        let (a, b) = pair(3).await;
        let job = admit(a.as_ref(), 12, "ann").await;
        a.update_job(job.id(), finished(-1)).await.unwrap();
        let now = Utc::now();
        let (from_a, from_b) = tokio::join!(a.begin_expiry(now), b.begin_expiry(now));
        let total = from_a.unwrap().len() + from_b.unwrap().len();
        assert_eq!(total, 1);
        let record = a.job(job.id()).await.unwrap().unwrap();
        assert_eq!(record.status, JobStatus::Expired);
        // The record survives re-encoding intact (no Lua JSON round trip).
        assert_eq!(record.spec, job.spec);
    }
}
