//! The Redis [`RateLimiter`]: GCRA per user, computed by script on the
//! server's clock.

use std::time::Duration;

use ::redis::Script;
use ::redis::aio::ConnectionManager;
use async_trait::async_trait;
use tracing::warn;

use super::conn::{call, open};
use super::keys::Keys;
use crate::config::RateLimit;
use crate::coord::{CoordError, RateLimiter};

pub struct RedisRateLimiter {
    conn: ConnectionManager,
    keys: Keys,
    /// `None` when the limit is disabled (count 0).
    gcra: Option<Gcra>,
}

struct Gcra {
    interval_us: u64,
    burst: u32,
    script: Script,
}

impl RedisRateLimiter {
    /// `limit.count` new jobs per `limit.per` and user, with a burst of
    /// `limit.count`; a count of 0 disables the limit.
    pub async fn connect(
        url: &str,
        prefix: &str,
        limit: RateLimit,
    ) -> Result<RedisRateLimiter, CoordError> {
        let (_, conn) = open(url).await?;
        let gcra = (limit.count > 0).then(|| Gcra {
            interval_us: ((limit.per.as_micros() / u128::from(limit.count)) as u64).max(1),
            burst: limit.count,
            script: Script::new(include_str!("scripts/gcra.lua")),
        });
        Ok(RedisRateLimiter {
            conn,
            keys: Keys::new(prefix),
            gcra,
        })
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, user: &str) -> Result<(), Duration> {
        let Some(gcra) = &self.gcra else {
            return Ok(());
        };
        let mut conn = self.conn.clone();
        let mut invocation = gcra.script.prepare_invoke();
        invocation
            .key(self.keys.rate(user))
            .arg(gcra.interval_us)
            .arg(gcra.burst);
        match call(invocation.invoke_async::<i64>(&mut conn)).await {
            Ok(wait) if wait > 0 => Err(Duration::from_micros(wait as u64)),
            Ok(_) => Ok(()),
            // Admission stays open when the limiter's backend is down: the
            // limit protects capacity, and the coordinator will refuse jobs
            // itself if Redis is really gone.
            Err(e) => {
                warn!(user, error = %e, "rate limiter unavailable; admitting without a limit");
                Ok(())
            }
        }
    }
}
