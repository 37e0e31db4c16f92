//! The `IdempotencyKeys` contract: a key replays only its own request, lives
//! as long as its job and its TTL, and of concurrent claims one wins.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use chrono::Utc;
use pseudostream::coord::policy::TimeoutAndRetry;
use pseudostream::coord::{
    CoordError, Coordination, IdempotencyKey, IdempotencyKeys, KeyClaim, RequestHash, memory,
};
use pseudostream::model::JobId;

use crate::contract_coord::{
    Flaky, FlakyScript, admit, assert_not_retried, assert_retried, coord_suite, finished, on_both,
    redis_coordination, redis_pair, test_policy,
};

const DAY: Duration = Duration::from_secs(86_400);

pub async fn case_idempotency_key_replays_only_its_own_request(c: Coordination) {
    let key = IdempotencyKey::new("acme", "ann", "retry-1");
    let (same, other) = (RequestHash::of(b"one"), RequestHash::of(b"two"));
    assert_eq!(
        c.idempotency
            .claim_idempotency_key(key, same)
            .await
            .unwrap(),
        KeyClaim::Won
    );
    assert_eq!(
        c.idempotency
            .claim_idempotency_key(key, same)
            .await
            .unwrap(),
        KeyClaim::Pending,
        "a retry while the first is admitted waits"
    );
    assert_eq!(
        c.idempotency
            .claim_idempotency_key(key, other)
            .await
            .unwrap(),
        KeyClaim::Mismatch
    );
    let job = admit(&c, 20, "ann").await;
    c.idempotency
        .complete_idempotency_key(key, same, job.id(), true, DAY)
        .await
        .unwrap();
    assert_eq!(
        c.idempotency
            .claim_idempotency_key(key, same)
            .await
            .unwrap(),
        KeyClaim::Replay {
            job: job.id(),
            deduplicated: true
        }
    );
    assert_eq!(
        c.idempotency
            .claim_idempotency_key(key, other)
            .await
            .unwrap(),
        KeyClaim::Mismatch
    );
    // Keys are scoped: the same key of another user or tenant is another key.
    for (tenant, user) in [("acme", "bob"), ("globex", "ann")] {
        let theirs = IdempotencyKey::new(tenant, user, "retry-1");
        assert_eq!(
            c.idempotency
                .claim_idempotency_key(theirs, other)
                .await
                .unwrap(),
            KeyClaim::Won
        );
    }
}

pub async fn case_abandoned_idempotency_key_is_free(c: Coordination) {
    let key = IdempotencyKey::new("acme", "ann", "retry-2");
    let (one, two) = (RequestHash::of(b"one"), RequestHash::of(b"two"));
    assert_eq!(
        c.idempotency.claim_idempotency_key(key, one).await.unwrap(),
        KeyClaim::Won
    );
    c.idempotency
        .abandon_idempotency_key(key, two)
        .await
        .unwrap(); // not the holder: no effect
    assert_eq!(
        c.idempotency.claim_idempotency_key(key, two).await.unwrap(),
        KeyClaim::Mismatch
    );
    c.idempotency
        .abandon_idempotency_key(key, one)
        .await
        .unwrap();
    assert_eq!(
        c.idempotency.claim_idempotency_key(key, two).await.unwrap(),
        KeyClaim::Won
    );
}

pub async fn case_idempotency_key_ends_with_its_job(c: Coordination) {
    let key = IdempotencyKey::new("acme", "ann", "retry-3");
    let (one, two) = (RequestHash::of(b"one"), RequestHash::of(b"two"));
    assert_eq!(
        c.idempotency.claim_idempotency_key(key, one).await.unwrap(),
        KeyClaim::Won
    );
    let job = admit(&c, 21, "ann").await;
    c.idempotency
        .complete_idempotency_key(key, one, job.id(), false, DAY)
        .await
        .unwrap();
    c.job_store
        .update_job(job.id(), finished(-1))
        .await
        .unwrap();
    let due = c.job_store.begin_expiry(Utc::now()).await.unwrap();
    assert_eq!(due.len(), 1);
    // Expiring: the key already lets a new request through.
    assert_eq!(
        c.idempotency.claim_idempotency_key(key, two).await.unwrap(),
        KeyClaim::Won
    );
    c.idempotency
        .abandon_idempotency_key(key, two)
        .await
        .unwrap();
    c.job_store.finish_expiry(&due[0]).await.unwrap();
    c.job_store.begin_expiry(Utc::now()).await.unwrap();
    assert_eq!(
        c.idempotency.claim_idempotency_key(key, one).await.unwrap(),
        KeyClaim::Won
    );
}

pub async fn case_idempotency_key_lapses_after_its_ttl(c: Coordination) {
    let key = IdempotencyKey::new("acme", "ann", "retry-4");
    let (one, two) = (RequestHash::of(b"one"), RequestHash::of(b"two"));
    assert_eq!(
        c.idempotency.claim_idempotency_key(key, one).await.unwrap(),
        KeyClaim::Won
    );
    let job = admit(&c, 22, "ann").await;
    let ttl = Duration::from_millis(50);
    c.idempotency
        .complete_idempotency_key(key, one, job.id(), false, ttl)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    // Poll: the key is replayed until its TTL passes, then free.
    loop {
        c.job_store.begin_expiry(Utc::now()).await.unwrap();
        match c.idempotency.claim_idempotency_key(key, two).await.unwrap() {
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

#[async_trait]
impl IdempotencyKeys for Flaky<Arc<dyn IdempotencyKeys>> {
    async fn claim_idempotency_key(
        &self,
        key: IdempotencyKey,
        request: RequestHash,
    ) -> Result<KeyClaim, CoordError> {
        self.script.gate().await?;
        self.inner.claim_idempotency_key(key, request).await
    }

    async fn complete_idempotency_key(
        &self,
        key: IdempotencyKey,
        request: RequestHash,
        job: JobId,
        deduplicated: bool,
        ttl: Duration,
    ) -> Result<(), CoordError> {
        self.script.gate().await?;
        self.inner
            .complete_idempotency_key(key, request, job, deduplicated, ttl)
            .await
    }

    async fn abandon_idempotency_key(
        &self,
        key: IdempotencyKey,
        request: RequestHash,
    ) -> Result<(), CoordError> {
        self.script.gate().await?;
        self.inner.abandon_idempotency_key(key, request).await
    }
}

/// Completing and abandoning are retried; a claim is not (a repeated claim
/// would find its own reservation and wait for itself).
pub async fn case_policy_retries_within_its_budget(c: Coordination) {
    let make = |script: &Arc<FlakyScript>| {
        TimeoutAndRetry::with_policy(Flaky::new(c.idempotency.clone(), script), test_policy())
    };
    let key = IdempotencyKey::new("acme", "ann", "retry-5");
    let request = RequestHash::of(b"one");
    assert_not_retried(&make, async |k| k.claim_idempotency_key(key, request).await).await;
    let keys = &c.idempotency;
    assert_eq!(
        keys.claim_idempotency_key(key, request).await.unwrap(),
        KeyClaim::Won
    );
    assert_retried(&make, async |k| {
        k.abandon_idempotency_key(key, request).await
    })
    .await;
    assert_eq!(
        keys.claim_idempotency_key(key, request).await.unwrap(),
        KeyClaim::Won
    );
    let job = admit(&c, 32, "ann").await;
    assert_retried(&make, async |k| {
        k.complete_idempotency_key(key, request, job.id(), false, DAY)
            .await
    })
    .await;
    assert_eq!(
        keys.claim_idempotency_key(key, request).await.unwrap(),
        KeyClaim::Replay {
            job: job.id(),
            deduplicated: false
        }
    );
}

coord_suite!(embedded, memory::coordination(3);
    case_idempotency_key_replays_only_its_own_request,
    case_abandoned_idempotency_key_is_free,
    case_idempotency_key_ends_with_its_job,
    case_idempotency_key_lapses_after_its_ttl,
    case_policy_retries_within_its_budget);
coord_suite!(
    redis,
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"],
    redis_coordination(3).await;
    case_idempotency_key_replays_only_its_own_request,
    case_abandoned_idempotency_key_is_free,
    case_idempotency_key_ends_with_its_job,
    case_idempotency_key_lapses_after_its_ttl,
    case_policy_retries_within_its_budget
);

/// Two instances sharing one Redis prefix behave as one: the Lua scripts
/// are what keep concurrent callers on different instances apart.
mod redis_across_instances {
    use super::*;

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn concurrent_idempotency_key_claims_have_one_winner() {
        let pair = redis_pair(3).await;
        let key = IdempotencyKey::new("acme", "ann", "k");
        let request = RequestHash::of(b"body");
        let results = on_both(&pair, 20, |c| async move {
            let claim = c.idempotency.claim_idempotency_key(key, request).await;
            claim.unwrap()
        })
        .await;
        let won = results.iter().filter(|c| **c == KeyClaim::Won).count();
        assert_eq!(won, 1, "{results:?}");
        assert!(
            results
                .iter()
                .all(|c| matches!(c, KeyClaim::Won | KeyClaim::Pending))
        );
    }
}
