//! Coordination state shared by every API instance and worker: dedup by
//! fingerprint ([`Dedup`]), the offset pool ([`OffsetPool`]), job records
//! ([`JobStore`]), idempotency keys ([`IdempotencyKeys`]), the job queue
//! ([`JobQueue`]), the per-user rate limit ([`RateLimiter`]) and the result
//! topic's chunk index ([`ChunkIndex`]). Each is a small trait; `memory`,
//! `queue` and `limiter` hold the embedded implementations used by default,
//! `redis` the distributed ones, and `policy` the timeout-and-retry wrapper
//! the distributed ones run in.

pub mod limiter;
pub mod memory;
pub mod policy;
pub mod queue;
pub mod redis;

use std::sync::Arc;
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

/// Dedup by fingerprint: identical queries share one job.
///
/// Owns only the fingerprint claim. A claim reads the job a live
/// fingerprint points at (to share it, or to start afresh when it is
/// expiring), and that read is part of the claim's atomic step; making a
/// claim live is part of [`JobStore::insert_job`] and dropping it part of
/// [`JobStore::finish_expiry`], because a live fingerprint must never be
/// seen without its job record.
#[async_trait]
pub trait Dedup: Send + Sync + 'static {
    async fn claim_fingerprint(
        &self,
        fingerprint: Fingerprint,
        job: JobId,
    ) -> Result<Claim, CoordError>;
    /// Moves a fingerprint from a live job too stale to share (`stale`) to
    /// a new claim by `job`, as if `claim_fingerprint` had won it: a
    /// compare-and-set, so of concurrent submissions that found the same
    /// stale job exactly one starts the fresh one (the others then find its
    /// claim pending, and then its job). `false` when the fingerprint no
    /// longer points at `stale` (taken over already, or expired): claim
    /// again. `true` again when `job` already holds the claim, so a repeat
    /// after a lost reply is harmless. The stale job lives on for its
    /// readers; its expiry drops the fingerprint only while it still points
    /// at it (see [`JobStore::finish_expiry`]).
    async fn take_over_fingerprint(
        &self,
        fingerprint: Fingerprint,
        stale: JobId,
        job: JobId,
    ) -> Result<bool, CoordError>;
    /// Gives a won claim back when admission fails after it (rate limit,
    /// pool). A claim won by taking over leaves the fingerprint free: the
    /// stale job it came from was not to be shared any more.
    async fn abandon_fingerprint(
        &self,
        fingerprint: Fingerprint,
        job: JobId,
    ) -> Result<(), CoordError>;
}

/// The fixed pool of public offsets, each leased to at most one job.
///
/// A lease names its job, so the offset points at the job from the lease on;
/// an expired job's offset is returned by [`JobStore::finish_expiry`] in the
/// same atomic step that forgets the job, so a reader never finds an offset
/// pointing at a job that is gone while a new job could take it.
#[async_trait]
pub trait OffsetPool: Send + Sync + 'static {
    /// Leases the next free offset after the last one handed out (round
    /// robin); `None` when every offset is leased.
    async fn lease_offset(&self, job: JobId) -> Result<Option<Offset>, CoordError>;
    async fn release_offset(&self, offset: Offset, job: JobId) -> Result<(), CoordError>;
    /// Releases whatever offset `job` holds, if any: undoes a lease whose
    /// answer was lost (a call that timed out may still have leased).
    async fn release_held_by(&self, job: JobId) -> Result<(), CoordError>;
    /// The job holding `offset`, if it has one and the job is stored.
    async fn job_at_offset(&self, offset: Offset) -> Result<Option<JobRecord>, CoordError>;
    async fn pool_usage(&self) -> Result<PoolUsage, CoordError>;
    /// Every leased offset, in offset order, with the record of the job
    /// holding it; `None` while that job is being admitted (leased, not yet
    /// stored) or its expiry is finishing. What the ops page draws: one
    /// read of the pool, not one per offset.
    async fn leases(&self) -> Result<Vec<(Offset, Option<JobRecord>)>, CoordError>;
}

/// One job of a user's list.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedJob {
    pub record: JobRecord,
    /// The user joined this job by dedup; someone else started it.
    pub joined: bool,
}

/// A page of a user's jobs, and the job id to page on from (`before`) when
/// there are more.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobsPage {
    pub jobs: Vec<ListedJob>,
    pub next: Option<JobId>,
}

impl JobsPage {
    /// Cuts the matching jobs, newest first, to a page: `jobs` holds at most
    /// `limit + 1`, the extra one only saying that there is a next page.
    pub fn cut(mut jobs: Vec<ListedJob>, limit: usize) -> JobsPage {
        let next = if jobs.len() > limit {
            jobs.truncate(limit);
            jobs.last().map(|j| j.record.id())
        } else {
            None
        };
        JobsPage { jobs, next }
    }
}

/// Job records: their states, change notification and expiry.
///
/// Owns the two operations that also touch dedup and the pool, because they
/// must be atomic with the record: `insert_job` stores the record and makes
/// its fingerprint claim live in one step; `finish_expiry` drops the record,
/// its live fingerprint and its offset lease in one step.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Stores a new job; its fingerprint claim becomes live and its offset
    /// points at it.
    async fn insert_job(&self, record: JobRecord) -> Result<(), CoordError>;
    async fn job(&self, id: JobId) -> Result<Option<JobRecord>, CoordError>;
    /// A page of a user's jobs: those they started and the live ones they
    /// joined by dedup (see [`JobStore::record_joiner`]), each once, newest
    /// first (by job id: UUIDv7s sort by creation), with `status` if given,
    /// older than `before` if given. Paging by id keeps pages stable while
    /// new jobs arrive: they are newer than any cursor.
    async fn jobs_of(
        &self,
        tenant: &str,
        user: &str,
        status: Option<JobStatus>,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<JobsPage, CoordError>;
    /// Records that `user` of `tenant` joined job `id` by dedup, so it is
    /// listed among their jobs until it expires. Idempotent; nothing happens
    /// when the job is gone (it expired meanwhile) or is their own.
    async fn record_joiner(&self, id: JobId, tenant: &str, user: &str) -> Result<(), CoordError>;
    /// Applies an update; `None` when the job is gone. An update from a
    /// worker attempt older than the record's (`JobUpdate::is_stale_for`)
    /// is refused in the same atomic step and changes nothing: the answer
    /// is the record as it is, whose higher `attempt` tells the worker it
    /// was taken over. `Started` raises the record's attempt by one.
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
    /// Forgets an expired job: drops its record and returns its offset to
    /// the pool, and drops its fingerprint only while it still points at
    /// this job (a fresh job may have taken it over). Called after its
    /// chunks are deleted.
    async fn finish_expiry(&self, record: &JobRecord) -> Result<(), CoordError>;
}

/// `Idempotency-Key`s: a retried submission gets the job its first try got.
///
/// A claim reads the status of the job a completed key names (a key ends
/// with its job's result) in the same atomic step; the keys themselves are
/// written by nothing else.
#[async_trait]
pub trait IdempotencyKeys: Send + Sync + 'static {
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

/// The four job-coordination traits of one deployment. Their embedded
/// implementations share one in-process state, their Redis ones one server,
/// which is what keeps the operations that span two of them atomic.
#[derive(Clone)]
pub struct Coordination {
    pub dedup: Arc<dyn Dedup>,
    pub offsets: Arc<dyn OffsetPool>,
    pub job_store: Arc<dyn JobStore>,
    pub idempotency: Arc<dyn IdempotencyKeys>,
    /// The backend's own one-step [`JobIntake`], where it has one; without,
    /// the job store and the queue take a job in one after the other
    /// ([`queue::StoreThenQueue`]).
    pub intake: Option<Arc<dyn JobIntake>>,
}

/// Where a published chunk landed in the result topic's log: a partition
/// and the message's position in it, and which attempt at the job wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPlace {
    pub partition: i32,
    pub position: i64,
    pub attempt: u32,
}

/// The answer to "is this chunk stored?", with the count that tells the
/// next seq (chunks are indexed without gaps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexedChunks {
    /// The attempt whose copy of the seq is indexed; `None` when none is.
    pub written_by: Option<u32>,
    pub count: u64,
}

/// What recording chunk places came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Some seq holds a newer attempt's place: the caller's attempt is
    /// superseded.
    pub superseded: bool,
    /// Seqs, with the attempt now indexed for each, whose indexed copy lies
    /// before an older attempt's copy in the log (a frozen worker's copy
    /// that landed late). Compaction keeps a key's last message, so each
    /// wants the indexed attempt's copy written once more, after it.
    pub rewrite: Vec<(u64, u32)>,
}

/// Where each chunk of a job landed in a log that cannot look messages up
/// by key (the Kafka result topic). Seqs are indexed from 0 without gaps:
/// a batch is recorded only from a seq at or below the count (the publish
/// refuses one past it before sending), and an implementation may rely on
/// it (Redis writes a batch that starts at the count without reading it).
/// Of two copies of one seq the newest attempt's wins, and of one
/// attempt's copies the first recorded: a worker frozen past its lease may
/// land its copy first, and readers must get the copy of the attempt that
/// now runs the job.
#[async_trait]
pub trait ChunkIndex: Send + Sync + 'static {
    /// How many chunks of `job` are indexed.
    async fn count(&self, job: JobId) -> Result<u64, CoordError>;
    /// Which attempt's copy of `seq` is indexed, and how many chunks are,
    /// in one look.
    async fn probe(&self, job: JobId, seq: u64) -> Result<IndexedChunks, CoordError>;
    /// Records where chunks landed, all at once, in one atomic step: a seq
    /// takes the new place when it has none or one of an older attempt,
    /// and keeps its place otherwise. Says whether some seq holds a newer
    /// attempt's place, and which seqs want their copy written again.
    async fn record(
        &self,
        job: JobId,
        landed: &[(u64, ChunkPlace)],
    ) -> Result<Recorded, CoordError>;
    /// The places of `seqs`, `None` for a seq not indexed.
    async fn places(
        &self,
        job: JobId,
        seqs: std::ops::Range<u64>,
    ) -> Result<Vec<Option<ChunkPlace>>, CoordError>;
    /// Forgets the job's index.
    async fn forget(&self, job: JobId) -> Result<(), CoordError>;
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

/// Taking in a new job: its record stored (as [`JobStore::insert_job`])
/// and the job queued for a worker, in one step where the two share a
/// server. Stored and queued separately, a process that died between the
/// two would leave a job holding its fingerprint and its offset that no
/// worker ever runs, and every identical query would join it. A call
/// repeated after one that landed (a retry after a lost answer) changes
/// nothing: the job is queued once.
#[async_trait]
pub trait JobIntake: Send + Sync + 'static {
    async fn store_and_queue(&self, record: JobRecord) -> Result<(), CoordError>;
}

/// Admission control for new jobs, per user of a tenant.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// `Err(retry_after)` when `who` (a key naming one user of one tenant,
    /// built by `jobs`) must wait before another new job.
    async fn check(&self, who: &str) -> Result<(), Duration>;
}
