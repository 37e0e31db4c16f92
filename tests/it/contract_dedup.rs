//! The `Dedup` contract: one job per fingerprint while it lives, and of
//! concurrent claims exactly one wins.

use std::sync::Arc;

use async_trait::async_trait;
use pseudostream::coord::policy::TimeoutAndRetry;
use pseudostream::coord::{Claim, CoordError, Coordination, Dedup, memory};
use pseudostream::filter::Fingerprint;
use pseudostream::model::JobId;

use crate::contract_coord::{
    Flaky, FlakyScript, admit, assert_retried, coord_suite, on_both, redis_coordination,
    redis_pair, test_policy,
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

    async fn abandon_fingerprint(
        &self,
        fingerprint: Fingerprint,
        job: JobId,
    ) -> Result<(), CoordError> {
        self.script.gate().await?;
        self.inner.abandon_fingerprint(fingerprint, job).await
    }
}

/// Both operations are idempotent (a job's repeated claim finds its own).
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
    assert_retried(&make, async |d| d.abandon_fingerprint(fp, job).await).await;
}

coord_suite!(embedded, memory::coordination(3);
    case_dedup_while_live,
    case_concurrent_claim_is_pending_then_abandonable,
    case_policy_retries_within_its_budget);
coord_suite!(
    redis,
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"],
    redis_coordination(3).await;
    case_dedup_while_live,
    case_concurrent_claim_is_pending_then_abandonable,
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
}
