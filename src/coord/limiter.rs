//! The embedded per-user rate limit: governor's GCRA, keyed by user.

use std::num::NonZeroU32;
use std::time::Duration;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as Governor};

use super::RateLimiter;
use crate::config::RateLimit;

pub struct LocalRateLimiter {
    governor: Option<Governor<String, DefaultKeyedStateStore<String>, DefaultClock>>,
}

impl LocalRateLimiter {
    pub fn new(limit: RateLimit) -> LocalRateLimiter {
        let governor = NonZeroU32::new(limit.count).and_then(|burst| {
            // `count` jobs per `per` = one every per/count, with a burst of count.
            Quota::with_period(limit.per / burst.get())
                .map(|q| Governor::keyed(q.allow_burst(burst)))
        });
        LocalRateLimiter { governor }
    }

    /// Drops state of users whose allowance is full again, so the map stays small.
    pub fn forget_idle(&self) {
        if let Some(g) = &self.governor {
            g.retain_recent();
        }
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn check(&self, user: &str) -> Result<(), Duration> {
        let Some(g) = &self.governor else {
            return Ok(());
        };
        g.check_key(&user.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_per_period_per_user() {
        let l = LocalRateLimiter::new(RateLimit {
            count: 1,
            per: Duration::from_secs(5),
        });
        assert!(l.check("ann").await.is_ok());
        let wait = l.check("ann").await.unwrap_err();
        assert!(wait > Duration::from_secs(3) && wait <= Duration::from_secs(5));
        assert!(l.check("bob").await.is_ok());
    }

    #[tokio::test]
    async fn zero_disables() {
        let l = LocalRateLimiter::new(RateLimit {
            count: 0,
            per: Duration::from_secs(1),
        });
        for _ in 0..10 {
            assert!(l.check("ann").await.is_ok());
        }
    }
}
