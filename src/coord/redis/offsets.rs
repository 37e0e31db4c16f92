//! The Redis [`OffsetPool`]: a hash of leases and a round-robin cursor,
//! leased by script.

use ::redis::Script;
use ::redis::aio::ConnectionManager;
use async_trait::async_trait;

use super::conn::{call, read_record};
use super::keys::Keys;
use crate::coord::{CoordError, OffsetPool, PoolUsage};
use crate::model::{JobId, JobRecord, Offset};

pub struct RedisOffsetPool {
    conn: ConnectionManager,
    keys: Keys,
    pool_size: u32,
    lease: Script,
    release: Script,
}

impl RedisOffsetPool {
    pub(super) fn new(conn: ConnectionManager, keys: Keys, pool_size: u32) -> RedisOffsetPool {
        RedisOffsetPool {
            conn,
            keys,
            pool_size,
            lease: Script::new(include_str!("scripts/lease_offset.lua")),
            release: Script::new(include_str!("scripts/release_offset.lua")),
        }
    }
}

#[async_trait]
impl OffsetPool for RedisOffsetPool {
    async fn lease_offset(&self, job: JobId) -> Result<Option<Offset>, CoordError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.lease.prepare_invoke();
        invocation
            .key(&self.keys.leases)
            .key(&self.keys.cursor)
            .arg(self.pool_size)
            .arg(job.to_string());
        let n: i64 = call(invocation.invoke_async(&mut conn)).await?;
        Ok(u32::try_from(n).ok().map(Offset))
    }

    async fn release_offset(&self, offset: Offset, job: JobId) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.release.prepare_invoke();
        invocation
            .key(&self.keys.leases)
            .arg(offset.0)
            .arg(job.to_string());
        call(invocation.invoke_async::<()>(&mut conn)).await
    }

    async fn job_at_offset(&self, offset: Offset) -> Result<Option<JobRecord>, CoordError> {
        let mut conn = self.conn.clone();
        let holder: Option<String> = call(
            ::redis::cmd("HGET")
                .arg(&self.keys.leases)
                .arg(offset.0)
                .query_async(&mut conn),
        )
        .await?;
        match holder.and_then(|h| h.parse::<JobId>().ok()) {
            Some(id) => read_record(&self.conn, &self.keys, id).await,
            None => Ok(None),
        }
    }

    async fn pool_usage(&self) -> Result<PoolUsage, CoordError> {
        let mut conn = self.conn.clone();
        let leased: u32 = call(
            ::redis::cmd("HLEN")
                .arg(&self.keys.leases)
                .query_async(&mut conn),
        )
        .await?;
        Ok(PoolUsage {
            leased,
            size: self.pool_size,
        })
    }
}
