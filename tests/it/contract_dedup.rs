//! The `Dedup` contract: one job per fingerprint while it lives, of
//! concurrent claims exactly one wins, and of concurrent take-overs of a
//! stale job exactly one starts the fresh job, whose fingerprint the stale
//! job's expiry leaves alone.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use pseudostream::coord::policy::TimeoutAndRetry;
use pseudostream::coord::{Claim, CoordError, Coordination, Dedup, memory};
use pseudostream::filter::Fingerprint;
use pseudostream::model::JobId;

use crate::contract_coord::{
    Flaky, FlakyScript, admit, assert_retried, coord_suite, finished, insert_claimed, on_both,
    redis_coordination, redis_pair, test_policy,
};

pub async fn case_dedup_while_live(c: Coordination) {
    let job = admit(&c, 1, "ann").await;
    match c
        .dedup
        .claim_fingerprint(Fingerprint([1; 32]), JobId::new())
        .await
        .unwrap()
    {
        Claim::Existing(existing) => assert_eq!(existing.id(), job.id()),
        other => panic!("expected the live job, got {other:?}"),
    }
}

pub async fn case_concurrent_claim_is_pending_then_abandonable(c: Coordination) {
    let (a, b) = (JobId::new(), JobId::new());
    let fp = Fingerprint([2; 32]);
    assert_eq!(c.dedup.claim_fingerprint(fp, a).await.unwrap(), Claim::Won);
    assert_eq!(
        c.dedup.claim_fingerprint(fp, b).await.unwrap(),
        Claim::Pending
    );
    c.dedup.abandon_fingerprint(fp, b).await.unwrap(); // not the holder: no effect
    assert_eq!(
        c.dedup.claim_fingerprint(fp, b).await.unwrap(),
        Claim::Pending
    );
    c.dedup.abandon_fingerprint(fp, a).await.unwrap();
    assert_eq!(c.dedup.claim_fingerprint(fp, b).await.unwrap(), Claim::Won);
}

/// The fingerprint of the job `claim` finds live; panics on anything else.
async fn live_job(c: &Coordination, fp: Fingerprint) -> JobId {
    match c.dedup.claim_fingerprint(fp, JobId::new()).await.unwrap() {
        Claim::Existing(job) => job.id(),
        other => panic!("expected a live job, got {other:?}"),
    }
}

pub async fn case_a_stale_job_is_taken_over_by_one_fresh_claim(c: Coordination) {
    let stale = admit(&c, 5, "ann").await;
    let fp = stale.spec.fingerprint;
    let (fresh, late) = (JobId::new(), JobId::new());
    assert!(
        c.dedup
            .take_over_fingerprint(fp, stale.id(), fresh)
            .await
            .unwrap()
    );
    assert!(
        c.dedup
            .take_over_fingerprint(fp, stale.id(), fresh)
            .await
            .unwrap(),
        "a repeat finds its own claim"
    );
    assert!(
        !c.dedup
            .take_over_fingerprint(fp, stale.id(), late)
            .await
            .unwrap(),
        "the fingerprint no longer points at the stale job"
    );
    assert_eq!(
        c.dedup.claim_fingerprint(fp, late).await.unwrap(),
        Claim::Pending,
        "the fresh job is being admitted"
    );
    insert_claimed(&c, 5, fresh, "ann").await;
    assert_eq!(live_job(&c, fp).await, fresh);
    assert!(
        c.job_store.job(stale.id()).await.unwrap().is_some(),
        "the stale job lives on for its readers"
    );
    assert!(
        !c.dedup
            .take_over_fingerprint(fp, stale.id(), late)
            .await
            .unwrap(),
        "a live fresh job is not taken over in the stale job's name"
    );
}

pub async fn case_take_over_needs_the_stale_job_to_hold_the_fingerprint(c: Coordination) {
    let fp = Fingerprint([6; 32]);
    let (gone, claimant, job) = (JobId::new(), JobId::new(), JobId::new());
    assert!(!c.dedup.take_over_fingerprint(fp, gone, job).await.unwrap());
    assert_eq!(
        c.dedup.claim_fingerprint(fp, claimant).await.unwrap(),
        Claim::Won
    );
    assert!(
        !c.dedup.take_over_fingerprint(fp, gone, job).await.unwrap(),
        "an admitting claim is not the stale job's"
    );
    c.dedup.abandon_fingerprint(fp, job).await.unwrap(); // not the holder: no effect
    assert_eq!(
        c.dedup.claim_fingerprint(fp, job).await.unwrap(),
        Claim::Pending
    );
}

pub async fn case_concurrent_take_overs_start_one_fresh_job(c: Coordination) {
    let stale = admit(&c, 7, "ann").await;
    let (fp, stale) = (stale.spec.fingerprint, stale.id());
    let mut racing = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let c = c.clone();
        racing.spawn(async move {
            c.dedup
                .take_over_fingerprint(fp, stale, JobId::new())
                .await
                .unwrap()
        });
    }
    let taken = racing.join_all().await;
    assert_eq!(taken.iter().filter(|t| **t).count(), 1, "{taken:?}");
}

pub async fn case_the_stale_jobs_expiry_leaves_the_fresh_fingerprint(c: Coordination) {
    let stale = admit(&c, 8, "ann").await;
    let fp = stale.spec.fingerprint;
    let fresh = JobId::new();
    assert!(
        c.dedup
            .take_over_fingerprint(fp, stale.id(), fresh)
            .await
            .unwrap()
    );
    insert_claimed(&c, 8, fresh, "ann").await;
    c.job_store
        .update_job(stale.id(), finished(-1))
        .await
        .unwrap();
    let due = c.job_store.begin_expiry(Utc::now()).await.unwrap();
    assert_eq!(due.iter().map(|j| j.id()).collect::<Vec<_>>(), [stale.id()]);
    c.job_store.finish_expiry(&due[0]).await.unwrap();
    assert!(c.job_store.job(stale.id()).await.unwrap().is_none());
    assert_eq!(
        live_job(&c, fp).await,
        fresh,
        "the fresh job keeps its fingerprint"
    );
}

#[async_trait]
impl Dedup for Flaky<Arc<dyn Dedup>> {
    async fn claim_fingerprint(
        &self,
        fingerprint: Fingerprint,
        job: JobId,
    ) -> Result<Claim, CoordError> {
        self.script.gate().await?;
        self.inner.claim_fingerprint(fingerprint, job).await
    }

    async fn take_over_fingerprint(
        &self,
        fingerprint: Fingerprint,
        stale: JobId,
        job: JobId,
    ) -> Result<bool, CoordError> {
        self.script.gate().await?;
        self.inner
            .take_over_fingerprint(fingerprint, stale, job)
            .await
    }

    async fn abandon_fingerprint(
        &self,
        fingerprint: Fingerprint,
        job: JobId,
    ) -> Result<(), CoordError> {
        self.script.gate().await?;
        self.inner.abandon_fingerprint(fingerprint, job).await
    }
}

/// Every operation is idempotent (a job's repeated claim or take-over finds
/// its own claim).
pub async fn case_policy_retries_within_its_budget(c: Coordination) {
    let make = |script: &Arc<FlakyScript>| {
        TimeoutAndRetry::with_policy(Flaky::new(c.dedup.clone(), script), test_policy())
    };
    let (fp, job) = (Fingerprint([30; 32]), JobId::new());
    assert_retried(&make, async |d| d.claim_fingerprint(fp, job).await).await;
    assert_eq!(
        c.dedup.claim_fingerprint(fp, JobId::new()).await.unwrap(),
        Claim::Pending,
        "the retried claim holds the fingerprint"
    );
    assert_retried(&make, async |d| {
        d.take_over_fingerprint(fp, JobId::new(), job).await
    })
    .await;
    assert_retried(&make, async |d| d.abandon_fingerprint(fp, job).await).await;
}

coord_suite!(embedded, memory::coordination(3);
    case_dedup_while_live,
    case_concurrent_claim_is_pending_then_abandonable,
    case_a_stale_job_is_taken_over_by_one_fresh_claim,
    case_take_over_needs_the_stale_job_to_hold_the_fingerprint,
    case_concurrent_take_overs_start_one_fresh_job,
    case_the_stale_jobs_expiry_leaves_the_fresh_fingerprint,
    case_policy_retries_within_its_budget);
coord_suite!(
    redis,
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"],
    redis_coordination(3).await;
    case_dedup_while_live,
    case_concurrent_claim_is_pending_then_abandonable,
    case_a_stale_job_is_taken_over_by_one_fresh_claim,
    case_take_over_needs_the_stale_job_to_hold_the_fingerprint,
    case_concurrent_take_overs_start_one_fresh_job,
    case_the_stale_jobs_expiry_leaves_the_fresh_fingerprint,
    case_policy_retries_within_its_budget
);

/// Two instances sharing one Redis prefix behave as one: the Lua scripts
/// are what keep concurrent callers on different instances apart.
mod redis_across_instances {
    use super::*;

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn concurrent_claims_have_one_winner() {
        let pair = redis_pair(3).await;
        let fp = Fingerprint([42; 32]);
        let results = on_both(&pair, 20, |c| async move {
            c.dedup.claim_fingerprint(fp, JobId::new()).await.unwrap()
        })
        .await;
        let won = results.iter().filter(|c| **c == Claim::Won).count();
        assert_eq!(won, 1, "{results:?}");
        assert!(
            results
                .iter()
                .all(|c| matches!(c, Claim::Won | Claim::Pending))
        );
    }

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn concurrent_take_overs_of_a_stale_job_have_one_winner() {
        let pair = redis_pair(3).await;
        let stale = admit(&pair.0, 43, "ann").await;
        let (fp, stale) = (stale.spec.fingerprint, stale.id());
        let taken = on_both(&pair, 20, |c| async move {
            c.dedup
                .take_over_fingerprint(fp, stale, JobId::new())
                .await
                .unwrap()
        })
        .await;
        assert_eq!(taken.iter().filter(|t| **t).count(), 1, "{taken:?}");
    }
}
