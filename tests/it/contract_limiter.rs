//! The rate limiter contract, for governor in-process and GCRA in Redis:
//! `count` per `per` per user with a burst of `count`, users independent,
//! 0 disables; Redis instances on one prefix share the limit.

use std::future::Future;
use std::time::Duration;

use pseudostream::config::RateLimit;
use pseudostream::coord::RateLimiter;
use pseudostream::coord::limiter::LocalRateLimiter;
use pseudostream::coord::redis::RedisRateLimiter;

use crate::contract_coord::{redis_prefix, redis_url};

fn rate(count: u32, per_secs: u64) -> RateLimit {
    RateLimit {
        count,
        per: Duration::from_secs(per_secs),
    }
}

pub async fn case_one_per_period_per_user<L: RateLimiter, F: Future<Output = L>>(
    make: impl Fn(RateLimit) -> F,
) {
    let limiter = make(rate(1, 5)).await;
    assert!(limiter.check("ann").await.is_ok());
    let wait = limiter.check("ann").await.unwrap_err();
    assert!(
        wait > Duration::from_secs(3) && wait <= Duration::from_secs(5),
        "{wait:?}"
    );
    assert!(
        limiter.check("bob").await.is_ok(),
        "other users are independent"
    );
}

pub async fn case_burst_of_count<L: RateLimiter, F: Future<Output = L>>(
    make: impl Fn(RateLimit) -> F,
) {
    let limiter = make(rate(3, 60)).await;
    for _ in 0..3 {
        assert!(limiter.check("ann").await.is_ok());
    }
    let wait = limiter.check("ann").await.unwrap_err();
    // One job every 20 s: the next fits in about 20 s.
    assert!(
        wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
        "{wait:?}"
    );
}

pub async fn case_zero_disables<L: RateLimiter, F: Future<Output = L>>(
    make: impl Fn(RateLimit) -> F,
) {
    let limiter = make(rate(0, 1)).await;
    for _ in 0..10 {
        assert!(limiter.check("ann").await.is_ok());
    }
}

mod embedded {
    use super::*;

    async fn local(limit: RateLimit) -> LocalRateLimiter {
        LocalRateLimiter::new(limit)
    }

    #[tokio::test]
    async fn one_per_period_per_user() {
        case_one_per_period_per_user(local).await;
    }

    #[tokio::test]
    async fn burst_of_count() {
        case_burst_of_count(local).await;
    }

    #[tokio::test]
    async fn zero_disables() {
        case_zero_disables(local).await;
    }
}

mod redis {
    use super::*;

    async fn limiter_on(prefix: &str, limit: RateLimit) -> RedisRateLimiter {
        let url = redis_url();
        RedisRateLimiter::connect(&url, prefix, limit)
            .await
            .unwrap_or_else(|e| {
                panic!("cannot connect to Redis at {url} (set PSEUDOSTREAM_TEST_REDIS_URL): {e}")
            })
    }

    /// A fresh limiter on its own prefix.
    async fn fresh(limit: RateLimit) -> RedisRateLimiter {
        limiter_on(&redis_prefix(), limit).await
    }

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn one_per_period_per_user() {
        case_one_per_period_per_user(fresh).await;
    }

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn burst_of_count() {
        case_burst_of_count(fresh).await;
    }

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn zero_disables() {
        case_zero_disables(fresh).await;
    }

    #[tokio::test]
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
    async fn instances_on_one_prefix_share_the_limit() {
        let prefix = redis_prefix();
        let a = limiter_on(&prefix, rate(1, 5)).await;
        let b = limiter_on(&prefix, rate(1, 5)).await;
        assert!(a.check("ann").await.is_ok());
        assert!(b.check("ann").await.is_err(), "b sees a's admission");
        assert!(b.check("bob").await.is_ok());
    }
}
