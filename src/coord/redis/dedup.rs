//! The Redis [`Dedup`]: one string per fingerprint, claimed by script.

use std::time::Duration;

use ::redis::Script;
use ::redis::aio::ConnectionManager;
use async_trait::async_trait;

use super::conn::{call, decode_record};
use super::keys::Keys;
use crate::coord::{Claim, CoordError, Dedup};
use crate::filter::Fingerprint;
use crate::model::JobId;

/// An admitting claim outlives a crashed admitter by at most this long.
const ADMITTING_TTL: Duration = Duration::from_secs(30);

pub struct RedisDedup {
    conn: ConnectionManager,
    keys: Keys,
    claim: Script,
    take_over: Script,
    delete_if_equal: Script,
}

impl RedisDedup {
    pub(super) fn new(conn: ConnectionManager, keys: Keys) -> RedisDedup {
        RedisDedup {
            conn,
            keys,
            claim: Script::new(include_str!("scripts/claim_fingerprint.lua")),
            take_over: Script::new(include_str!("scripts/take_over_fingerprint.lua")),
            delete_if_equal: Script::new(include_str!("scripts/delete_if_equal.lua")),
        }
    }
}

#[async_trait]
impl Dedup for RedisDedup {
    async fn claim_fingerprint(
        &self,
        fingerprint: Fingerprint,
        job: JobId,
    ) -> Result<Claim, CoordError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.claim.prepare_invoke();
        invocation
            .key(self.keys.fingerprint(fingerprint))
            .arg(job.to_string())
            .arg(self.keys.job_prefix())
            .arg(ADMITTING_TTL.as_millis() as u64);
        let reply: Vec<String> = call(invocation.invoke_async(&mut conn)).await?;
        match reply.as_slice() {
            [outcome] if outcome == "won" => Ok(Claim::Won),
            [outcome] if outcome == "pending" => Ok(Claim::Pending),
            [outcome, record] if outcome == "existing" => {
                let record = decode_record(fingerprint, record)?;
                Ok(Claim::Existing(Box::new(record)))
            }
            other => Err(CoordError::Unavailable(format!(
                "unexpected fingerprint claim reply {other:?}"
            ))),
        }
    }

    async fn take_over_fingerprint(
        &self,
        fingerprint: Fingerprint,
        stale: JobId,
        job: JobId,
    ) -> Result<bool, CoordError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.take_over.prepare_invoke();
        invocation
            .key(self.keys.fingerprint(fingerprint))
            .arg(format!("live:{stale}"))
            .arg(format!("admitting:{job}"))
            .arg(ADMITTING_TTL.as_millis() as u64);
        let taken: i64 = call(invocation.invoke_async(&mut conn)).await?;
        Ok(taken == 1)
    }

    async fn abandon_fingerprint(
        &self,
        fingerprint: Fingerprint,
        job: JobId,
    ) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.delete_if_equal.prepare_invoke();
        invocation
            .key(self.keys.fingerprint(fingerprint))
            .arg(format!("admitting:{job}"));
        call(invocation.invoke_async::<()>(&mut conn)).await
    }
}
