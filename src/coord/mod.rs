//! Coordination state shared by every API instance and worker: dedup by
//! fingerprint, idempotency keys, the offset pool, job records, the job queue
//! and the per-user rate limit. Each is a small trait; `memory`, `queue` and `limiter` hold
//! the embedded implementations used by default, `redis` the distributed ones.

pub mod limiter;
pub mod memory;
pub mod queue;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::filter::Fingerprint;
use crate::model::{JobId, JobRecord, JobSpec, JobStatus, JobUpdate, Offset};

#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error("coordination backend unavailable: {0}")]
    Unavailable(String),
    #[error("coordination backend timed out")]
    Timeout,
    #[error("job {0} does not exist")]
    NotFound(JobId),
}

impl CoordError {
    /// Whether a worker may retry the same operation.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CoordError::Unavailable(_) | CoordError::Timeout)
    }
}

/// The outcome of trying to become the job for a fingerprint.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// No live job has this fingerprint; the caller now holds it and must
    /// either insert the job or abandon the claim.
    Won,
    /// A live job has it: share that job.
    Existing(Box<JobRecord>),
    /// Another submission holds the claim and is being admitted right now;
    /// ask again shortly.
    Pending,
}

/// An `Idempotency-Key` in the scope it is unique in: SHA-256 over the
/// tenant, the user and the key (each length-prefixed), so any key fits a
/// fixed-size storage key and two users' keys never meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(pub [u8; 32]);

impl IdempotencyKey {
    pub fn new(tenant: &str, user: &str, key: &str) -> IdempotencyKey {
        let mut hash = Sha256::new();
        for part in [tenant, user, key] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        IdempotencyKey(hash.finalize().into())
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// SHA-256 of the request an idempotency key was first used with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestHash(pub [u8; 32]);

impl RequestHash {
    pub fn of(request: &[u8]) -> RequestHash {
        RequestHash(Sha256::digest(request).into())
    }
}

impl std::fmt::Display for RequestHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// How long a reserved idempotency key waits for its submission to complete
/// or abandon it; after that (the admitter crashed or its client went away)
/// the key is free again.
pub const IDEMPOTENCY_RESERVATION_TTL: Duration = Duration::from_secs(30);

/// The outcome of presenting an idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyClaim {
    /// The key is new, or its job's result is gone: the caller now holds it
    /// and must complete or abandon it.
    Won,
    /// A submission with this key and this request is being admitted right
    /// now; ask again shortly.
    Pending,
    /// This key and this request already got `job`: answer with it again.
    Replay { job: JobId, deduplicated: bool },
    /// The key is live for a different request.
    Mismatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    pub leased: u32,
    pub size: u32,
}

#[async_trait]
pub trait Coordinator: Send + Sync + 'static {
    async fn claim_fingerprint(
        &self,
        fingerprint: Fingerprint,
        job: JobId,
    ) -> Result<Claim, CoordError>;
    /// Gives a won claim back when admission fails after it (rate limit, pool).
    async fn abandon_fingerprint(
        &self,
        fingerprint: Fingerprint,
        job: JobId,
    ) -> Result<(), CoordError>;
    /// Leases the next free offset after the last one handed out (round
    /// robin); `None` when every offset is leased.
    async fn lease_offset(&self, job: JobId) -> Result<Option<Offset>, CoordError>;
    async fn release_offset(&self, offset: Offset, job: JobId) -> Result<(), CoordError>;
    /// Stores a new job; its fingerprint claim becomes live and its offset
    /// points at it.
    async fn insert_job(&self, record: JobRecord) -> Result<(), CoordError>;
    async fn job(&self, id: JobId) -> Result<Option<JobRecord>, CoordError>;
    async fn job_at_offset(&self, offset: Offset) -> Result<Option<JobRecord>, CoordError>;
    /// A user's own jobs, newest first.
    async fn jobs_of(
        &self,
        tenant: &str,
        user: &str,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, CoordError>;
    /// Applies an update; `None` when the job is gone.
    async fn update_job(
        &self,
        id: JobId,
        update: JobUpdate,
    ) -> Result<Option<JobRecord>, CoordError>;
    /// Waits until the job's version passes `seen_version` or `timeout`
    /// elapses, then returns the job as it is.
    async fn wait_for_change(
        &self,
        id: JobId,
        seen_version: u64,
        timeout: Duration,
    ) -> Result<Option<JobRecord>, CoordError>;
    /// Marks every finished job whose TTL has passed as expired and returns
    /// them. A job is returned by exactly one call, whichever instance makes it.
    async fn begin_expiry(&self, now: DateTime<Utc>) -> Result<Vec<JobRecord>, CoordError>;
    /// Forgets an expired job: drops its record and fingerprint and returns
    /// its offset to the pool. Called after its chunks are deleted.
    async fn finish_expiry(&self, record: &JobRecord) -> Result<(), CoordError>;
    async fn pool_usage(&self) -> Result<PoolUsage, CoordError>;
    /// Presents an idempotency key with the request it comes with. A
    /// completed key is remembered while its job lives (until the job
    /// expires) and at most the `ttl` given to `complete_idempotency_key`;
    /// a reservation for `IDEMPOTENCY_RESERVATION_TTL`. Atomic: of
    /// concurrent claims of one key exactly one wins.
    async fn claim_idempotency_key(
        &self,
        key: IdempotencyKey,
        request: RequestHash,
    ) -> Result<KeyClaim, CoordError>;
    /// Binds a won key to the job its submission got.
    async fn complete_idempotency_key(
        &self,
        key: IdempotencyKey,
        request: RequestHash,
        job: JobId,
        deduplicated: bool,
        ttl: Duration,
    ) -> Result<(), CoordError>;
    /// Gives a won key back when its submission failed, so a retry is
    /// judged afresh.
    async fn abandon_idempotency_key(
        &self,
        key: IdempotencyKey,
        request: RequestHash,
    ) -> Result<(), CoordError>;
}

/// A job handed to a worker, with the receipt that acknowledges it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedJob {
    pub spec: JobSpec,
    /// Identifies this delivery to `heartbeat` and `ack` (a stream entry id
    /// in Redis; empty in-process).
    pub receipt: String,
}

/// Jobs waiting for a worker. A distributed queue hands a job whose worker
/// stopped heartbeating to another worker, which resumes it.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    async fn enqueue(&self, spec: JobSpec) -> Result<(), CoordError>;
    /// The next job to run (new, or taken over from a silent worker);
    /// `None` once `shutdown` is cancelled.
    async fn next(&self, shutdown: &CancellationToken) -> Result<Option<QueuedJob>, CoordError>;
    /// Says the worker is still on the job, so nobody takes it over.
    async fn heartbeat(&self, _job: &QueuedJob) -> Result<(), CoordError> {
        Ok(())
    }
    /// The job is finished (its last chunk is published): forget it.
    async fn ack(&self, _job: &QueuedJob) -> Result<(), CoordError> {
        Ok(())
    }
    /// How often a running job must heartbeat; `None` when nobody takes over.
    fn heartbeat_interval(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Admission control for new jobs, per user.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// `Err(retry_after)` when the user must wait before another new job.
    async fn check(&self, user: &str) -> Result<(), Duration>;
}
