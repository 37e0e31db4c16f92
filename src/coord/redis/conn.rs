//! Connecting, error mapping and the record codec the Redis backends share.

use std::future::Future;
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{Client, RedisError, RedisResult};

use crate::coord::CoordError;
use crate::model::{JobId, JobRecord};

use super::keys::Keys;

/// Longest a single Redis call may take before the caller sees `Timeout`.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub fn unavailable(e: RedisError) -> CoordError {
    CoordError::Unavailable(e.to_string())
}

/// Runs one Redis call under `limit`, mapping failures to `CoordError`.
pub async fn timed<T>(
    limit: Duration,
    call: impl Future<Output = RedisResult<T>>,
) -> Result<T, CoordError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(CoordError::Timeout),
    }
}

pub async fn call<T>(call: impl Future<Output = RedisResult<T>>) -> Result<T, CoordError> {
    timed(CALL_TIMEOUT, call).await
}

pub async fn open(url: &str) -> Result<(Client, ConnectionManager), CoordError> {
    let client = Client::open(url).map_err(unavailable)?;
    let conn = call(ConnectionManager::new(client.clone())).await?;
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
