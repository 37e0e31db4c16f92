//! Timeouts and retries for the distributed coordination backends, in one
//! layer: [`TimeoutAndRetry`] implements each coordination trait around any
//! implementation of it (as quickwit wraps its storage in
//! `TimeoutAndRetryStorage`), so the backends only talk to their service and
//! the domain code only sees the traits.
//!
//! Every operation gets one deadline, retries included, and answers
//! `CoordError::Timeout` past it: a frozen Redis costs a request one
//! deadline (a second by default), not a deadline per attempt, so the API
//! answers 503 fast. Within it, each attempt of a retried operation gets
//! half the deadline, so one lost reply is retried rather than fatal. Only idempotent operations are retried (with
//! exponential backoff and jitter, on retryable errors, within that
//! deadline): repeating one after a lost reply leaves the same state. Not retried: `lease_offset` (a second lease would hold a
//! second offset), `update_job` (an update applies again), `begin_expiry`,
//! `claim_idempotency_key` (a repeated claim finds its own reservation and
//! waits) and `enqueue` (a job would run twice; `store_and_queue`, which
//! queues a new job, is retried: a job it finds stored is not queued again).
//!
//! Two operations get no overall deadline: `wait_for_change` waits as long as
//! asked (plus one read), and `begin_expiry` must not be cut off midway (a job
//! it has marked expired must reach the sweep, or its offset is never
//! returned); the Redis backends bound each of their round trips at the
//! connection.

use std::future::Future;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{
    ChunkIndex, ChunkPlace, Claim, CoordError, Dedup, IdempotencyKey, IdempotencyKeys,
    IndexedChunks, JobIntake, JobQueue, JobStore, JobsPage, KeyClaim, OffsetPool, PoolUsage,
    QueuedJob, RateLimiter, Recorded, RequestHash,
};
use crate::filter::Fingerprint;
use crate::model::{JobId, JobRecord, JobSpec, JobStatus, JobUpdate, Offset};

/// How long a coordination call may take, and how often it is retried.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// The deadline of a one-round-trip operation, its retries included.
    pub call_timeout: Duration,
    /// The deadline of an operation of a few round trips (a job at an
    /// offset, a user's jobs, an update's compare-and-set).
    pub multi_call_timeout: Duration,
    /// Retries after the first attempt of an idempotent operation.
    pub max_retries: usize,
    /// The first backoff; each next one doubles, up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Policy {
    /// The policy for `PSEUDOSTREAM_BACKEND_TIMEOUT`: one-round-trip
    /// operations get `timeout`, those of a few round trips twice it, and
    /// backoffs stay well inside it so retries fit.
    pub fn with_timeout(timeout: Duration) -> Policy {
        Policy {
            call_timeout: timeout,
            multi_call_timeout: timeout * 2,
            max_retries: 3,
            min_backoff: Duration::from_millis(50).min(timeout / 8),
            max_backoff: timeout / 4,
        }
    }
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::with_timeout(crate::config::DEFAULT_BACKEND_TIMEOUT)
    }
}

/// A coordination backend under a [`Policy`].
pub struct TimeoutAndRetry<T> {
    inner: T,
    policy: Policy,
}

impl<T> TimeoutAndRetry<T> {
    pub fn new(inner: T) -> TimeoutAndRetry<T> {
        TimeoutAndRetry::with_policy(inner, Policy::default())
    }

    pub fn with_policy(inner: T, policy: Policy) -> TimeoutAndRetry<T> {
        TimeoutAndRetry { inner, policy }
    }

    /// One attempt, under the one-round-trip deadline.
    async fn once<R>(
        &self,
        call: impl Future<Output = Result<R, CoordError>>,
    ) -> Result<R, CoordError> {
        deadline(self.policy.call_timeout, call).await
    }

    /// Attempts retried while the error is retryable, all within `limit`;
    /// each attempt gets half of it, so a reply lost to one hung attempt is
    /// asked for again in time.
    async fn retried<R, F, Fut>(
        &self,
        operation: &'static str,
        limit: Duration,
        call: F,
    ) -> Result<R, CoordError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<R, CoordError>>,
    {
        let mut call = call;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.policy.min_backoff)
            .with_max_delay(self.policy.max_backoff)
            .with_max_times(self.policy.max_retries)
            .with_jitter();
        let attempts = (|| deadline(limit / 2, call()))
            .retry(backoff)
            .when(CoordError::is_retryable)
            .notify(|error, wait| {
                debug!(operation, %error, wait_ms = wait.as_millis() as u64, "coordination call failed; retrying");
            });
        deadline(limit, attempts).await
    }
}

async fn deadline<R>(
    limit: Duration,
    call: impl Future<Output = Result<R, CoordError>>,
) -> Result<R, CoordError> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or(Err(CoordError::Timeout))
}

#[async_trait]
impl<T: Dedup> Dedup for TimeoutAndRetry<T> {
    /// Retried: a claim repeated by the same job finds its own claim and wins.
    async fn claim_fingerprint(
        &self,
        fingerprint: Fingerprint,
        job: JobId,
    ) -> Result<Claim, CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("claim_fingerprint", limit, || {
            self.inner.claim_fingerprint(fingerprint, job)
        })
        .await
    }

    /// Retried: a repeated take-over finds its own claim and says so.
    async fn take_over_fingerprint(
        &self,
        fingerprint: Fingerprint,
        stale: JobId,
        job: JobId,
    ) -> Result<bool, CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("take_over_fingerprint", limit, || {
            self.inner.take_over_fingerprint(fingerprint, stale, job)
        })
        .await
    }

    async fn abandon_fingerprint(
        &self,
        fingerprint: Fingerprint,
        job: JobId,
    ) -> Result<(), CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("abandon_fingerprint", limit, || {
            self.inner.abandon_fingerprint(fingerprint, job)
        })
        .await
    }
}

#[async_trait]
impl<T: OffsetPool> OffsetPool for TimeoutAndRetry<T> {
    async fn lease_offset(&self, job: JobId) -> Result<Option<Offset>, CoordError> {
        self.once(self.inner.lease_offset(job)).await
    }

    async fn release_offset(&self, offset: Offset, job: JobId) -> Result<(), CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("release_offset", limit, || {
            self.inner.release_offset(offset, job)
        })
        .await
    }

    async fn release_held_by(&self, job: JobId) -> Result<(), CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("release_held_by", limit, || self.inner.release_held_by(job))
            .await
    }

    async fn job_at_offset(&self, offset: Offset) -> Result<Option<JobRecord>, CoordError> {
        let limit = self.policy.multi_call_timeout;
        self.retried("job_at_offset", limit, || self.inner.job_at_offset(offset))
            .await
    }

    async fn pool_usage(&self) -> Result<PoolUsage, CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("pool_usage", limit, || self.inner.pool_usage())
            .await
    }

    async fn leases(&self) -> Result<Vec<(Offset, Option<JobRecord>)>, CoordError> {
        let limit = self.policy.multi_call_timeout;
        self.retried("leases", limit, || self.inner.leases()).await
    }
}

#[async_trait]
impl<T: JobStore> JobStore for TimeoutAndRetry<T> {
    /// Retried: inserting the same record again leaves the same state, and
    /// nobody else writes a job before it is enqueued.
    async fn insert_job(&self, record: JobRecord) -> Result<(), CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("insert_job", limit, || {
            self.inner.insert_job(record.clone())
        })
        .await
    }

    async fn job(&self, id: JobId) -> Result<Option<JobRecord>, CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("job", limit, || self.inner.job(id)).await
    }

    async fn jobs_of(
        &self,
        tenant: &str,
        user: &str,
        status: Option<JobStatus>,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<JobsPage, CoordError> {
        let deadline = self.policy.multi_call_timeout;
        self.retried("jobs_of", deadline, || {
            self.inner.jobs_of(tenant, user, status, before, limit)
        })
        .await
    }

    /// Retried: recording the same joiner again changes nothing.
    async fn record_joiner(&self, id: JobId, tenant: &str, user: &str) -> Result<(), CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("record_joiner", limit, || {
            self.inner.record_joiner(id, tenant, user)
        })
        .await
    }

    async fn update_job(
        &self,
        id: JobId,
        update: JobUpdate,
    ) -> Result<Option<JobRecord>, CoordError> {
        deadline(
            self.policy.multi_call_timeout,
            self.inner.update_job(id, update),
        )
        .await
    }

    async fn wait_for_change(
        &self,
        id: JobId,
        seen_version: u64,
        timeout: Duration,
    ) -> Result<Option<JobRecord>, CoordError> {
        deadline(
            timeout + self.policy.call_timeout,
            self.inner.wait_for_change(id, seen_version, timeout),
        )
        .await
    }

    async fn begin_expiry(&self, now: DateTime<Utc>) -> Result<Vec<JobRecord>, CoordError> {
        self.inner.begin_expiry(now).await
    }

    async fn finish_expiry(&self, record: &JobRecord) -> Result<(), CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("finish_expiry", limit, || self.inner.finish_expiry(record))
            .await
    }
}

#[async_trait]
impl<T: JobIntake> JobIntake for TimeoutAndRetry<T> {
    /// Retried: a call repeated after one that landed changes nothing.
    async fn store_and_queue(&self, record: JobRecord) -> Result<(), CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("store_and_queue", limit, || {
            self.inner.store_and_queue(record.clone())
        })
        .await
    }
}

#[async_trait]
impl<T: IdempotencyKeys> IdempotencyKeys for TimeoutAndRetry<T> {
    async fn claim_idempotency_key(
        &self,
        key: IdempotencyKey,
        request: RequestHash,
    ) -> Result<KeyClaim, CoordError> {
        self.once(self.inner.claim_idempotency_key(key, request))
            .await
    }

    async fn complete_idempotency_key(
        &self,
        key: IdempotencyKey,
        request: RequestHash,
        job: JobId,
        deduplicated: bool,
        ttl: Duration,
    ) -> Result<(), CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("complete_idempotency_key", limit, || {
            self.inner
                .complete_idempotency_key(key, request, job, deduplicated, ttl)
        })
        .await
    }

    async fn abandon_idempotency_key(
        &self,
        key: IdempotencyKey,
        request: RequestHash,
    ) -> Result<(), CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("abandon_idempotency_key", limit, || {
            self.inner.abandon_idempotency_key(key, request)
        })
        .await
    }
}

#[async_trait]
impl<T: JobQueue> JobQueue for TimeoutAndRetry<T> {
    async fn enqueue(&self, spec: JobSpec) -> Result<(), CoordError> {
        self.once(self.inner.enqueue(spec)).await
    }

    /// Waits until a job comes or `shutdown`: each of its reads is bounded
    /// by the backend.
    async fn next(&self, shutdown: &CancellationToken) -> Result<Option<QueuedJob>, CoordError> {
        self.inner.next(shutdown).await
    }

    async fn heartbeat(&self, job: &QueuedJob) -> Result<(), CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("heartbeat", limit, || self.inner.heartbeat(job))
            .await
    }

    async fn ack(&self, job: &QueuedJob) -> Result<(), CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("ack", limit, || self.inner.ack(job)).await
    }

    fn heartbeat_interval(&self) -> Option<Duration> {
        self.inner.heartbeat_interval()
    }
}

/// Every chunk index operation is idempotent (the first place recorded for
/// a seq wins), so all are retried.
#[async_trait]
impl<T: ChunkIndex> ChunkIndex for TimeoutAndRetry<T> {
    async fn count(&self, job: JobId) -> Result<u64, CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("chunk_count", limit, || self.inner.count(job))
            .await
    }

    async fn probe(&self, job: JobId, seq: u64) -> Result<IndexedChunks, CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("chunk_probe", limit, || self.inner.probe(job, seq))
            .await
    }

    async fn record(
        &self,
        job: JobId,
        landed: &[(u64, ChunkPlace)],
    ) -> Result<Recorded, CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("chunk_record", limit, || self.inner.record(job, landed))
            .await
    }

    async fn places(
        &self,
        job: JobId,
        seqs: Range<u64>,
    ) -> Result<Vec<Option<ChunkPlace>>, CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("chunk_places", limit, || {
            self.inner.places(job, seqs.clone())
        })
        .await
    }

    async fn forget(&self, job: JobId) -> Result<(), CoordError> {
        let limit = self.policy.call_timeout;
        self.retried("chunk_forget", limit, || self.inner.forget(job))
            .await
    }
}

/// The limiter admits when its backend does not answer in time, as it does
/// when the backend errs: the limit protects capacity, and the coordination
/// calls around it refuse the job if Redis is really gone. Not retried: a
/// repeated check would count the submission twice.
#[async_trait]
impl<T: RateLimiter> RateLimiter for TimeoutAndRetry<T> {
    async fn check(&self, who: &str) -> Result<(), Duration> {
        match tokio::time::timeout(self.policy.call_timeout, self.inner.check(who)).await {
            Ok(verdict) => verdict,
            Err(_) => {
                warn!(
                    user = who,
                    "rate limiter timed out; admitting without a limit"
                );
                Ok(())
            }
        }
    }
}
