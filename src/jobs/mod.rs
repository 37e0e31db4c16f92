//! The job's life: submission (validate, fingerprint, dedup, rate limit,
//! offset lease, audit, enqueue), reading its chunks (polled, or pushed
//! through one feed per watched job), cancel and expiry. The
//! domain code sees only the traits of `coord`, `results`, `audit` and `source`.

pub mod clock;
pub mod error;
pub mod expiry;
mod overview;
pub use overview::{AuditPage, OpsOverview, Readiness};
pub mod push;
pub mod read;
pub mod share;
pub mod submit;
mod undo;
pub mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::audit::AuditLog;
use crate::audit::rejections::RejectionTally;
use crate::coord::{
    Dedup, IdempotencyKeys, JobIntake, JobQueue, JobStore, OffsetPool, RateLimiter,
};
use crate::filter::{Limits, RegexCache};
use crate::model::JobId;
use crate::results::ResultTopic;
use crate::source::{QueryRuntime, QuerySource};

pub use clock::{Clock, ManualClock};
pub use error::JobError;

/// Limits and timings the job life follows; built from `Config`.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub chunk_rows: usize,
    pub result_ttl: Duration,
    pub max_rows: u64,
    pub max_time_range: Duration,
    pub max_wait: Duration,
    /// How old a live job of a relative range may be and still be shared,
    /// unless the request says otherwise (see `share`).
    pub max_staleness: Duration,
    pub filter_limits: Limits,
    /// The `Retry-After` given when the pool or the result store is full.
    pub full_retry_after: Duration,
    /// Chunks a push stream may have waiting for its client before it is
    /// dropped as too slow.
    pub stream_buffer: usize,
}

impl JobSettings {
    /// When a job finishing at `finished` is dropped.
    pub fn expires_at(&self, finished: DateTime<Utc>) -> DateTime<Utc> {
        chrono::TimeDelta::from_std(self.result_ttl)
            .ok()
            .and_then(|ttl| finished.checked_add_signed(ttl))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// The backends a job passes through, built once in `main`.
#[derive(Clone)]
pub struct Backends {
    pub dedup: Arc<dyn Dedup>,
    pub offsets: Arc<dyn OffsetPool>,
    pub job_store: Arc<dyn JobStore>,
    pub idempotency: Arc<dyn IdempotencyKeys>,
    pub queue: Arc<dyn JobQueue>,
    /// Stores a new job's record and queues it, in one step where the
    /// backend can.
    pub intake: Arc<dyn JobIntake>,
    pub limiter: Arc<dyn RateLimiter>,
    pub results: Arc<dyn ResultTopic>,
    pub audit: Arc<dyn AuditLog>,
    pub source: Arc<dyn QuerySource>,
    /// Where jobs and their queries run, shared with the source.
    pub query_runtime: QueryRuntime,
}

/// Points where tests can hold a job in a known state. Empty in production.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// When set, a worker takes one permit before publishing each chunk, so a
    /// test can hold a job mid-stream and release it chunk by chunk.
    pub chunk_gate: Option<Arc<tokio::sync::Semaphore>>,
    /// When set, a new job's admission takes one permit after leasing its
    /// offset and before auditing, so a test can hold it mid-admission.
    pub admission_gate: Option<Arc<tokio::sync::Semaphore>>,
    /// When set, a job takes one permit before reading its first rows, so a
    /// test can hold it scanning (a sparse query that finds nothing yet).
    pub scan_gate: Option<Arc<tokio::sync::Semaphore>>,
    /// When set, a worker reports each chunk (job, `chunkSeq`, when) once it
    /// is readable, its progress landed, so a benchmark can time
    /// publish-to-client rather than from before the worker's own work.
    pub chunk_readable: Option<tokio::sync::mpsc::UnboundedSender<(JobId, u64, Instant)>>,
    /// The wall clock of submission, the workers and expiry; the system
    /// clock unless a test sets a manual one.
    pub clock: Clock,
}

/// The job service the API and the workers share.
pub struct Jobs {
    pub backends: Backends,
    pub settings: JobSettings,
    pub hooks: Hooks,
    /// Compiled filter regexes, shared with the source.
    pub regexes: RegexCache,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Submissions turned away, counted for the audit (the app flushes it).
    pub rejections: Arc<RejectionTally>,
    /// Cancelled when shutdown begins: from then on submissions get 503.
    pub admission_closed: CancellationToken,
    /// The push feeds of this process, one per watched job.
    pub watches: watch::Watches,
}

impl Jobs {
    pub fn new(
        backends: Backends,
        settings: JobSettings,
        hooks: Hooks,
        regexes: RegexCache,
        rejections: Arc<RejectionTally>,
    ) -> Arc<Jobs> {
        Arc::new(Jobs {
            backends,
            settings,
            hooks,
            regexes,
            metrics: Arc::default(),
            rejections,
            admission_closed: CancellationToken::new(),
            watches: watch::Watches::default(),
        })
    }

    /// "Now", as the job life reads it (see [`Clock`]).
    pub fn now(&self) -> DateTime<Utc> {
        self.hooks.clock.now()
    }
}
