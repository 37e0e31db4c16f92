//! The `Dedup` contract: one job per fingerprint while it lives, and of
//! concurrent claims exactly one wins.

use pseudostream::coord::{Claim, Coordination, memory};
use pseudostream::filter::Fingerprint;
use pseudostream::model::JobId;

use crate::contract_coord::{admit, coord_suite, redis_coordination, redis_pair};

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

coord_suite!(embedded, memory::coordination(3);
    case_dedup_while_live,
    case_concurrent_claim_is_pending_then_abandonable);
coord_suite!(
    redis,
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"],
    redis_coordination(3).await;
    case_dedup_while_live,
    case_concurrent_claim_is_pending_then_abandonable
);

/// Two instances sharing one Redis prefix behave as one: the Lua scripts
/// are what keep concurrent callers on different instances apart.
mod redis_across_instances {
    use super::*;

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn concurrent_claims_have_one_winner() {
        let (a, b) = redis_pair(3).await;
        let fp = Fingerprint([42; 32]);
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..20 {
            let c = if n % 2 == 0 { a.clone() } else { b.clone() };
            calls.spawn(async move { c.dedup.claim_fingerprint(fp, JobId::new()).await.unwrap() });
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
}
