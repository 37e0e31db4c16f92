//! The `OffsetPool` contract: round-robin leases, never one offset twice.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use pseudostream::coord::policy::TimeoutAndRetry;
use pseudostream::coord::{CoordError, Coordination, OffsetPool, PoolUsage, memory};
use pseudostream::model::{JobId, JobRecord, Offset};

use crate::contract_coord::{
    Flaky, FlakyScript, admit, assert_not_retried, assert_retried, coord_suite, finished, on_both,
    progress, redis_coordination, redis_pair, test_policy,
};

pub async fn case_offsets_round_robin_and_never_double_leased(c: Coordination) {
    // The fixture's pool has 3 offsets.
    let ids: Vec<JobId> = (0..4).map(|_| JobId::new()).collect();
    let mut got = Vec::new();
    for id in &ids[..3] {
        got.push(c.offsets.lease_offset(*id).await.unwrap().unwrap().0);
    }
    assert_eq!(got, [0, 1, 2]);
    assert_eq!(
        c.offsets.lease_offset(ids[3]).await.unwrap(),
        None,
        "pool exhausted"
    );
    c.offsets.release_offset(Offset(1), ids[3]).await.unwrap(); // not the holder
    assert_eq!(c.offsets.lease_offset(ids[3]).await.unwrap(), None);
    c.offsets.release_offset(Offset(1), ids[1]).await.unwrap();
    assert_eq!(
        c.offsets.lease_offset(ids[3]).await.unwrap(),
        Some(Offset(1))
    );
    let usage = c.offsets.pool_usage().await.unwrap();
    assert_eq!((usage.leased, usage.size), (3, 3));
}

pub async fn case_round_robin_continues_after_the_last_lease(c: Coordination) {
    let a = c.offsets.lease_offset(JobId::new()).await.unwrap().unwrap();
    let id = JobId::new();
    let b = c.offsets.lease_offset(id).await.unwrap().unwrap();
    c.offsets.release_offset(a, JobId::new()).await.unwrap();
    c.offsets.release_offset(b, id).await.unwrap();
    // Offset 1 is free again, but the next lease moves on to 2.
    assert_eq!(
        c.offsets.lease_offset(JobId::new()).await.unwrap(),
        Some(Offset(2))
    );
}

/// `leases` lists each leased offset once, in order, with its job's record
/// once the job is stored, and forgets an offset its job's expiry freed.
pub async fn case_leases_name_their_jobs_in_offset_order(c: Coordination) {
    assert!(c.offsets.leases().await.unwrap().is_empty());
    let first = admit(&c, 1, "ann").await;
    let admitting = JobId::new();
    let second = c.offsets.lease_offset(admitting).await.unwrap().unwrap();
    let third = admit(&c, 3, "bob").await;
    c.job_store
        .update_job(third.id(), progress(20, 2))
        .await
        .unwrap();
    let leases = c.offsets.leases().await.unwrap();
    let seen: Vec<(u32, Option<JobId>)> = leases
        .iter()
        .map(|(offset, record)| (offset.0, record.as_ref().map(JobRecord::id)))
        .collect();
    assert_eq!(
        seen,
        [
            (first.spec.offset.0, Some(first.id())),
            (second.0, None),
            (third.spec.offset.0, Some(third.id())),
        ]
    );
    let (_, stored) = &leases[2];
    assert_eq!(
        stored.as_ref().map(|r| r.rows),
        Some(20),
        "the record as it is now"
    );

    c.job_store
        .update_job(first.id(), finished(-1))
        .await
        .unwrap();
    for expired in c.job_store.begin_expiry(Utc::now()).await.unwrap() {
        c.job_store.finish_expiry(&expired).await.unwrap();
    }
    let offsets: Vec<u32> = c
        .offsets
        .leases()
        .await
        .unwrap()
        .iter()
        .map(|(o, _)| o.0)
        .collect();
    assert_eq!(offsets, [second.0, third.spec.offset.0]);
}

#[async_trait]
impl OffsetPool for Flaky<Arc<dyn OffsetPool>> {
    async fn lease_offset(&self, job: JobId) -> Result<Option<Offset>, CoordError> {
        self.script.gate().await?;
        self.inner.lease_offset(job).await
    }

    async fn release_offset(&self, offset: Offset, job: JobId) -> Result<(), CoordError> {
        self.script.gate().await?;
        self.inner.release_offset(offset, job).await
    }

    async fn job_at_offset(&self, offset: Offset) -> Result<Option<JobRecord>, CoordError> {
        self.script.gate().await?;
        self.inner.job_at_offset(offset).await
    }

    async fn pool_usage(&self) -> Result<PoolUsage, CoordError> {
        self.script.gate().await?;
        self.inner.pool_usage().await
    }

    async fn leases(&self) -> Result<Vec<(Offset, Option<JobRecord>)>, CoordError> {
        self.script.gate().await?;
        self.inner.leases().await
    }

    async fn release_held_by(&self, job: JobId) -> Result<(), CoordError> {
        self.script.gate().await?;
        self.inner.release_held_by(job).await
    }
}

/// Releases and reads are retried; a lease is not (a second attempt after a
/// lost reply would hold a second offset).
pub async fn case_policy_retries_within_its_budget(c: Coordination) {
    let make = |script: &Arc<FlakyScript>| {
        TimeoutAndRetry::with_policy(Flaky::new(c.offsets.clone(), script), test_policy())
    };
    let job = JobId::new();
    assert_not_retried(&make, async |p| p.lease_offset(job).await).await;
    assert_eq!(c.offsets.pool_usage().await.unwrap().leased, 0);
    let offset = c.offsets.lease_offset(job).await.unwrap().unwrap();
    assert_retried(&make, async |p| p.job_at_offset(offset).await).await;
    assert_retried(&make, async |p| p.pool_usage().await).await;
    assert_retried(&make, async |p| p.leases().await).await;
    assert_retried(&make, async |p| p.release_offset(offset, job).await).await;
    assert_eq!(c.offsets.pool_usage().await.unwrap().leased, 0);
    c.offsets.lease_offset(job).await.unwrap().unwrap();
    assert_retried(&make, async |p| p.release_held_by(job).await).await;
    assert_eq!(c.offsets.pool_usage().await.unwrap().leased, 0);
}

/// A lease whose answer was lost is released by its job alone: other
/// jobs' leases stay, and releasing a job that holds nothing is a no-op.
pub async fn case_a_lease_is_released_by_its_job(c: Coordination) {
    let (lost, kept) = (JobId::new(), JobId::new());
    c.offsets.lease_offset(kept).await.unwrap().unwrap();
    let offset = c.offsets.lease_offset(lost).await.unwrap().unwrap();
    c.offsets.release_held_by(lost).await.unwrap();
    c.offsets.release_held_by(JobId::new()).await.unwrap();
    let usage = c.offsets.pool_usage().await.unwrap();
    assert_eq!(usage.leased, 1, "only the lost lease went");
    c.offsets.lease_offset(JobId::new()).await.unwrap().unwrap();
    assert_eq!(
        c.offsets.lease_offset(JobId::new()).await.unwrap(),
        Some(offset),
        "the released offset is leased again once the cursor comes round"
    );
}

coord_suite!(embedded, memory::coordination(3);
    case_offsets_round_robin_and_never_double_leased,
    case_round_robin_continues_after_the_last_lease,
    case_leases_name_their_jobs_in_offset_order,
    case_a_lease_is_released_by_its_job,
    case_policy_retries_within_its_budget);
coord_suite!(
    redis,
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"],
    redis_coordination(3).await;
    case_offsets_round_robin_and_never_double_leased,
    case_round_robin_continues_after_the_last_lease,
    case_leases_name_their_jobs_in_offset_order,
    case_a_lease_is_released_by_its_job,
    case_policy_retries_within_its_budget
);

/// Two instances sharing one Redis prefix behave as one: the Lua scripts
/// are what keep concurrent callers on different instances apart.
mod redis_across_instances {
    use super::*;

    use std::collections::HashSet;

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn concurrent_leases_never_share_an_offset() {
        let pair = redis_pair(20).await;
        let results = on_both(&pair, 50, |c| async move {
            c.offsets.lease_offset(JobId::new()).await.unwrap()
        })
        .await;
        let leased: Vec<u32> = results.iter().flatten().map(|o| o.0).collect();
        let distinct: HashSet<u32> = leased.iter().copied().collect();
        assert_eq!(leased.len(), 20, "{results:?}");
        assert_eq!(distinct.len(), 20, "an offset was leased twice: {leased:?}");
        assert_eq!(results.iter().filter(|r| r.is_none()).count(), 30);
        assert_eq!(pair.0.offsets.pool_usage().await.unwrap().leased, 20);
    }
}
