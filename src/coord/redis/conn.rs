//! Connecting, error mapping and the record codec the Redis backends share.
//!
//! The connection bounds each round trip (`ROUND_TRIP_TIMEOUT`, answered as
//! `CoordError::Timeout`); deadlines of whole operations and retries are
//! the policy wrapper's (`coord::policy`), which `RedisCoordination` and
//! `app` put around these backends.

use std::future::Future;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, RedisResult};

use crate::coord::CoordError;
use crate::model::{JobId, JobRecord};

use super::keys::Keys;

/// Longest one Redis round trip may take before the caller sees `Timeout`.
pub const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest wait between two attempts to reconnect.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

/// A Redis failure as the traits report it: a round trip past its time is a
/// `Timeout`, anything else `Unavailable`.
pub fn error(e: RedisError) -> CoordError {
    if e.is_timeout() {
        CoordError::Timeout
    } else {
        CoordError::Unavailable(e.to_string())
    }
}

/// One Redis call on a connection from `open`, which bounds its time.
pub async fn call<T>(call: impl Future<Output = RedisResult<T>>) -> Result<T, CoordError> {
    call.await.map_err(error)
}

/// Connecting and subscribing, which no connection bounds, under `limit`.
pub async fn timed<T>(
    limit: Duration,
    call: impl Future<Output = RedisResult<T>>,
) -> Result<T, CoordError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(error),
        Err(_) => Err(CoordError::Timeout),
    }
}

pub async fn open(url: &str) -> Result<(Client, ConnectionManager), CoordError> {
    let client = Client::open(url).map_err(error)?;
    // Reconnection tries at most half a second apart: with redis-rs's
    // default backoff (doubling to 3.2 s) a Redis back from a restart was
    // reached only 4.3 s later (the fault suite), past the 5 s we promise.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(ROUND_TRIP_TIMEOUT))
        .set_response_timeout(Some(ROUND_TRIP_TIMEOUT))
        .set_max_delay(RECONNECT_MAX_DELAY);
    let conn = timed(
        ROUND_TRIP_TIMEOUT,
        ConnectionManager::new_with_config(client.clone(), config),
    )
    .await?;
    Ok((client, conn))
}

pub fn decode_record(id: impl std::fmt::Display, json: &str) -> Result<JobRecord, CoordError> {
    serde_json::from_str(json)
        .map_err(|e| CoordError::Unavailable(format!("job {id} has an unreadable record: {e}")))
}

pub fn encode_record(record: &JobRecord) -> Result<String, CoordError> {
    serde_json::to_string(record).map_err(|e| {
        CoordError::Unavailable(format!("job {} could not be encoded: {e}", record.id()))
    })
}

/// A job's record as stored, undecoded.
pub async fn record_json(
    conn: &ConnectionManager,
    keys: &Keys,
    id: JobId,
) -> Result<Option<String>, CoordError> {
    let mut conn = conn.clone();
    call(::redis::cmd("GET").arg(keys.job(id)).query_async(&mut conn)).await
}

/// A job's record.
pub async fn read_record(
    conn: &ConnectionManager,
    keys: &Keys,
    id: JobId,
) -> Result<Option<JobRecord>, CoordError> {
    record_json(conn, keys, id)
        .await?
        .map(|json| decode_record(id, &json))
        .transpose()
}
