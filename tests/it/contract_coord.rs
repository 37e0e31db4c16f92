//! The coordinator contract: every implementation must pass these cases.
//! `coordinator_suite!` stamps out one test per case for an implementation;
//! the distributed one joins with its own fixture.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use pseudostream::coord::memory::MemoryCoordinator;
use pseudostream::coord::{Claim, Coordinator};
use pseudostream::filter::{Fingerprint, Order};
use pseudostream::jobs::model::{JobId, JobRecord, JobSpec, JobStatus, JobUpdate, Offset};

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

macro_rules! coordinator_suite {
    ($module:ident, $make:expr) => {
        mod $module {
            use super::*;
            coordinator_suite!(@cases $make;
                case_dedup_while_live,
                case_concurrent_claim_is_pending_then_abandonable,
                case_offsets_round_robin_and_never_double_leased,
                case_round_robin_continues_after_the_last_lease,
                case_updates_and_offset_lookup,
                case_wait_for_change_wakes_on_update,
                case_expiry_happens_once_and_frees_everything,
                case_jobs_of_a_user_newest_first);
        }
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test]
            async fn $case() {
                super::$case($make).await;
            }
        )*
    };
}

coordinator_suite!(embedded, MemoryCoordinator::new(3));
