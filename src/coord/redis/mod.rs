//! The distributed coordination backends on one Redis server: dedup by
//! fingerprint, the offset pool, job records (with expiry and change
//! notification), idempotency keys, the job queue (a stream with a consumer
//! group), the per-user rate limit (GCRA) and the Kafka result topic's chunk
//! index. They keep the embedded implementations' semantics so several API
//! instances and workers can share the state. `keys` documents the key
//! table and why each read-then-write is a script; the scripts live in
//! `scripts/`.

mod chunks;
mod conn;
mod dedup;
mod idempotency;
mod jobs;
mod keys;
mod limiter;
mod listener;
mod offsets;
mod queue;
mod written;

use std::sync::Arc;

use crate::coord::policy::{Policy, TimeoutAndRetry};
use crate::coord::{CoordError, Coordination};

pub use chunks::RedisChunkIndex;
pub use dedup::RedisDedup;
pub use idempotency::RedisIdempotencyKeys;
pub use jobs::RedisJobStore;
pub use limiter::RedisRateLimiter;
pub use offsets::RedisOffsetPool;
pub use queue::RedisJobQueue;

/// The four job-coordination backends of one deployment, sharing one
/// connection.
pub struct RedisCoordination {
    pub dedup: RedisDedup,
    pub offsets: RedisOffsetPool,
    pub job_store: RedisJobStore,
    pub idempotency: RedisIdempotencyKeys,
}

impl RedisCoordination {
    /// Connects to `url` and subscribes to change notifications before
    /// returning, so the first long-poll already wakes on changes.
    pub async fn connect(
        url: &str,
        prefix: &str,
        pool_size: u32,
    ) -> Result<RedisCoordination, CoordError> {
        let (client, conn) = conn::open(url).await?;
        let keys = keys::Keys::new(prefix);
        RedisOffsetPool::mark_epoch(&conn, &keys).await?;
        let remembered = jobs::remembered_records(pool_size);
        let (waiters, stop_listening) =
            listener::start(client, keys.changes.clone(), remembered).await?;
        Ok(RedisCoordination {
            dedup: RedisDedup::new(conn.clone(), keys.clone()),
            offsets: RedisOffsetPool::new(conn.clone(), keys.clone(), pool_size),
            job_store: RedisJobStore::new(
                conn.clone(),
                keys.clone(),
                pool_size,
                waiters,
                stop_listening,
            ),
            idempotency: RedisIdempotencyKeys::new(conn, keys),
        })
    }

    /// The backends as the domain code holds them: each under the
    /// timeout-and-retry `policy`.
    pub fn into_coordination(self, policy: Policy) -> Coordination {
        // The job store also takes new jobs in: its record and its queue
        // entry are written by one script.
        let job_store = Arc::new(TimeoutAndRetry::with_policy(self.job_store, policy));
        Coordination {
            dedup: Arc::new(TimeoutAndRetry::with_policy(self.dedup, policy)),
            offsets: Arc::new(TimeoutAndRetry::with_policy(self.offsets, policy)),
            job_store: job_store.clone(),
            idempotency: Arc::new(TimeoutAndRetry::with_policy(self.idempotency, policy)),
            intake: Some(job_store),
        }
    }
}
