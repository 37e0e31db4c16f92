//! The Redis [`IdempotencyKeys`]: one string per key, claimed and completed
//! by script.

use std::time::Duration;

use ::redis::Script;
use ::redis::aio::ConnectionManager;
use async_trait::async_trait;

use super::conn::call;
use super::keys::Keys;
use crate::coord::{
    CoordError, IDEMPOTENCY_RESERVATION_TTL, IdempotencyKey, IdempotencyKeys, KeyClaim, RequestHash,
};
use crate::model::JobId;

pub struct RedisIdempotencyKeys {
    conn: ConnectionManager,
    keys: Keys,
    claim: Script,
    complete: Script,
    delete_if_equal: Script,
}

impl RedisIdempotencyKeys {
    pub(super) fn new(conn: ConnectionManager, keys: Keys) -> RedisIdempotencyKeys {
        RedisIdempotencyKeys {
            conn,
            keys,
            claim: Script::new(include_str!("scripts/claim_idempotency_key.lua")),
            complete: Script::new(include_str!("scripts/complete_idempotency_key.lua")),
            delete_if_equal: Script::new(include_str!("scripts/delete_if_equal.lua")),
        }
    }
}

#[async_trait]
impl IdempotencyKeys for RedisIdempotencyKeys {
    async fn claim_idempotency_key(
        &self,
        key: IdempotencyKey,
        request: RequestHash,
    ) -> Result<KeyClaim, CoordError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.claim.prepare_invoke();
        invocation
            .key(self.keys.idempotency(key))
            .arg(request.to_string())
            .arg(self.keys.job_prefix())
            .arg(IDEMPOTENCY_RESERVATION_TTL.as_millis() as u64);
        let reply: Vec<String> = call(invocation.invoke_async(&mut conn)).await?;
        match reply.as_slice() {
            [outcome] if outcome == "won" => Ok(KeyClaim::Won),
            [outcome] if outcome == "pending" => Ok(KeyClaim::Pending),
            [outcome] if outcome == "mismatch" => Ok(KeyClaim::Mismatch),
            [outcome, job, deduplicated] if outcome == "replay" => {
                let job = job.parse().map_err(|_| {
                    CoordError::Unavailable(format!("idempotency key {key} holds job id {job:?}"))
                })?;
                Ok(KeyClaim::Replay {
                    job,
                    deduplicated: deduplicated == "1",
                })
            }
            other => Err(CoordError::Unavailable(format!(
                "unexpected idempotency key claim reply {other:?}"
            ))),
        }
    }

    async fn complete_idempotency_key(
        &self,
        key: IdempotencyKey,
        request: RequestHash,
        job: JobId,
        deduplicated: bool,
        ttl: Duration,
    ) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.complete.prepare_invoke();
        invocation
            .key(self.keys.idempotency(key))
            .arg(format!("reserved:{request}"))
            .arg(format!("done:{request}:{}:{job}", u8::from(deduplicated)))
            .arg(ttl.as_millis().max(1) as u64);
        call(invocation.invoke_async::<()>(&mut conn)).await
    }

    async fn abandon_idempotency_key(
        &self,
        key: IdempotencyKey,
        request: RequestHash,
    ) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.delete_if_equal.prepare_invoke();
        invocation
            .key(self.keys.idempotency(key))
            .arg(format!("reserved:{request}"));
        call(invocation.invoke_async::<()>(&mut conn)).await
    }
}
