//! The Redis [`OffsetPool`]: a hash of leases and a round-robin cursor,
//! leased by script.
//!
//! A Redis that restarts without its data forgets the leases of running
//! jobs. Their workers notice within a look-out interval (their records are
//! gone too, so they stop), and the pool must not lease their offsets
//! before: every instance writes an epoch key when it connects, and the
//! lease script, finding it missing, pauses leasing for [`QUARANTINE`].

use std::time::Duration;

use ::redis::Script;
use ::redis::aio::ConnectionManager;
use async_trait::async_trait;

use super::conn::{call, decode_record, read_record};
use super::keys::Keys;
use crate::coord::{CoordError, OffsetPool, PoolUsage};
use crate::model::{JobId, JobRecord, Offset};

/// How long leasing pauses after Redis lost its data: several of a running
/// job's 250 ms looks for its record, and a publish batch.
pub const QUARANTINE: Duration = Duration::from_secs(2);

pub struct RedisOffsetPool {
    conn: ConnectionManager,
    keys: Keys,
    pool_size: u32,
    lease: Script,
    release: Script,
    release_held_by: Script,
}

impl RedisOffsetPool {
    /// Says this deployment's pool is fresh, unless an epoch is already
    /// there (then it keeps whatever it says).
    pub(super) async fn mark_epoch(
        conn: &ConnectionManager,
        keys: &Keys,
    ) -> Result<(), CoordError> {
        let mut conn = conn.clone();
        call(
            ::redis::cmd("SET")
                .arg(&keys.epoch)
                .arg(0)
                .arg("NX")
                .query_async::<()>(&mut conn),
        )
        .await
    }

    pub(super) fn new(conn: ConnectionManager, keys: Keys, pool_size: u32) -> RedisOffsetPool {
        RedisOffsetPool {
            conn,
            keys,
            pool_size,
            lease: Script::new(include_str!("scripts/lease_offset.lua")),
            release: Script::new(include_str!("scripts/release_offset.lua")),
            release_held_by: Script::new(include_str!("scripts/release_held_by.lua")),
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
            .key(&self.keys.epoch)
            .arg(self.pool_size)
            .arg(job.to_string())
            .arg(QUARANTINE.as_millis() as u64);
        match call(invocation.invoke_async::<i64>(&mut conn)).await? {
            -2 => Err(CoordError::Unavailable(format!(
                "Redis lost its data; new offsets wait {QUARANTINE:?} for the jobs that held them to stop"
            ))),
            n => Ok(u32::try_from(n).ok().map(Offset)),
        }
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

    async fn release_held_by(&self, job: JobId) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.release_held_by.prepare_invoke();
        invocation.key(&self.keys.leases).arg(job.to_string());
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

    async fn leases(&self) -> Result<Vec<(Offset, Option<JobRecord>)>, CoordError> {
        // Records are read in pages, so one call never asks Redis for a
        // pool's worth of keys at once.
        const PAGE: usize = 100;
        let mut conn = self.conn.clone();
        let mut held: Vec<(u32, String)> = call(
            ::redis::cmd("HGETALL")
                .arg(&self.keys.leases)
                .query_async(&mut conn),
        )
        .await?;
        held.sort_unstable_by_key(|(n, _)| *n);
        let mut leases = Vec::with_capacity(held.len());
        for page in held.chunks(PAGE) {
            let keys: Vec<String> = page.iter().map(|(_, id)| self.keys.job(id)).collect();
            let records: Vec<Option<String>> =
                call(::redis::cmd("MGET").arg(&keys).query_async(&mut conn)).await?;
            for ((n, id), json) in page.iter().zip(records) {
                let record = json.map(|json| decode_record(id, &json)).transpose()?;
                leases.push((Offset(*n), record));
            }
        }
        Ok(leases)
    }
}
