//! Submission, in the brief's order: validate, fingerprint, dedup (in
//! `share`: join a live job fresh enough, or claim the fingerprint), rate
//! limit, lease an offset, audit (fail closed), enqueue. In front of it, an
//! optional `Idempotency-Key` makes a retried submission answer with the job
//! it got the first time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::share::{Freshness, Shared};
use super::undo::Reached;
use super::{JobError, Jobs};
use crate::audit::rejections::Tallied;
use crate::audit::{AuditEntry, rfc3339};
use crate::coord::{IdempotencyKey, KeyClaim, RequestHash};
use crate::filter::time_range::{micros_rfc3339, parse_duration};
use crate::filter::{self, FingerprintInput, Order, RangeKey, TimeRange};
use crate::metrics::Rejection;
use crate::model::{JobId, JobRecord, JobSpec, Principal};

/// What a client asks for: the filter text, the time range as given, and
/// the optional projection, order and row cap (the API's wire type turns
/// into this).
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub filter: String,
    pub time_range: RangeSpec,
    pub fields: Option<Vec<String>>,
    pub order: Option<Order>,
    pub max_rows: Option<u64>,
    /// For a relative range: how old a live job of the same query may be
    /// and still be shared (a duration such as "60s"); the setting's
    /// default when `None`.
    pub max_staleness: Option<String>,
}

/// A time range as given: `from` and `to` (RFC 3339), or `last` (a duration).
#[derive(Debug, Clone, Default)]
pub struct RangeSpec {
    pub from: Option<String>,
    pub to: Option<String>,
    pub last: Option<String>,
}

/// An `Idempotency-Key` as presented (already checked by the API) and the
/// hash of the request it came with.
#[derive(Debug, Clone, Copy)]
pub struct Idempotency<'a> {
    pub key: &'a str,
    pub request: RequestHash,
}

/// What a submission got: the job (new or shared) and whether it was shared.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub job: JobRecord,
    pub deduplicated: bool,
}

/// How long a submission waits for a concurrent identical one to be admitted
/// before giving up with 503; admission takes milliseconds, so this is
/// ample, and short enough that the 503 comes within two seconds.
pub(super) const CLAIM_PATIENCE: Duration = Duration::from_millis(1500);

/// The longest an idempotency key is remembered. It is forgotten earlier,
/// when its job expires (the result TTL after the job ends): from then on
/// the key is free, and a retry starts a new job.
pub const IDEMPOTENCY_KEY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest `Idempotency-Key` accepted, in (printable ASCII) characters.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

impl Jobs {
    /// `submit`, with an optional `Idempotency-Key` (already checked by the
    /// API: 1 to 255 printable ASCII characters). A key is scoped to the
    /// tenant and user. The same key with the same request answers with the
    /// job the first submission got, without a rate-limit check or another
    /// audit row; with a different request it is `IdempotencyKeyReused`. A
    /// submission that fails leaves the key unused.
    pub async fn submit_with_key(
        &self,
        who: &Principal,
        request: Submission,
        idempotency: Option<Idempotency<'_>>,
    ) -> Result<Submitted, JobError> {
        let Some(Idempotency {
            key,
            request: request_hash,
        }) = idempotency
        else {
            return self.submit(who, request).await;
        };
        let key = IdempotencyKey::new(&who.tenant, &who.user, key);
        let keys = &self.backends.idempotency;
        let started = tokio::time::Instant::now();
        loop {
            match keys.claim_idempotency_key(key, request_hash).await? {
                KeyClaim::Won => break,
                KeyClaim::Mismatch => return Err(JobError::IdempotencyKeyReused),
                KeyClaim::Replay { job, deduplicated } => {
                    if let Some(job) = self.backends.job_store.job(job).await? {
                        info!(job_id = %job.id(), offset = %job.spec.offset,
                            user = %who.user, "idempotent retry answered with its job");
                        return Ok(Submitted { job, deduplicated });
                    }
                    // Expired since the claim looked: the next claim frees the key.
                }
                KeyClaim::Pending if started.elapsed() < CLAIM_PATIENCE => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                KeyClaim::Pending => {
                    return Err(JobError::Overloaded {
                        retry_after: self.settings.full_retry_after,
                    });
                }
            }
        }
        let submitted = self.submit(who, request).await;
        let kept = match &submitted {
            Ok(s) => {
                keys.complete_idempotency_key(
                    key,
                    request_hash,
                    s.job.id(),
                    s.deduplicated,
                    IDEMPOTENCY_KEY_TTL,
                )
                .await
            }
            Err(_) => keys.abandon_idempotency_key(key, request_hash).await,
        };
        if let Err(e) = kept {
            // The submission stands; a retry with this key may then start
            // (or share) a job instead of replaying this one.
            warn!(error = %e, "could not record an idempotency key");
        }
        submitted
    }

    pub async fn submit(
        &self,
        who: &Principal,
        request: Submission,
    ) -> Result<Submitted, JobError> {
        let submitted = self.submit_unmetered(who, &request).await;
        let m = &self.metrics;
        let rejection = match &submitted {
            Ok(s) if s.deduplicated => {
                m.dedup_hits_total.inc();
                None
            }
            Ok(_) => {
                m.jobs_accepted_total.inc();
                None
            }
            Err(JobError::RateLimited { .. }) => Some(Rejection::RateLimited),
            Err(JobError::PoolExhausted { .. }) => Some(Rejection::PoolExhausted),
            Err(JobError::Overloaded { .. }) => Some(Rejection::ResultStoreFull),
            Err(JobError::ShuttingDown) => Some(Rejection::ShuttingDown),
            Err(JobError::Audit(_)) => Some(Rejection::AuditUnavailable),
            Err(JobError::Coord(_) | JobError::Results(_)) => Some(Rejection::BackendUnavailable),
            Err(_) => None,
        };
        if let Some(why) = rejection {
            m.rejected(why);
            self.tally_rejection(who, &request.filter, why);
        }
        submitted
    }

    /// Counts a submission turned away for the audit: in memory, written
    /// in bulk by the tally's flush, so a client hammering the API costs
    /// the audit store nothing per request.
    fn tally_rejection(&self, who: &Principal, filter: &str, why: Rejection) {
        let at = self.now();
        match (self.rejections).record(at, &who.tenant, &who.user, why.label(), filter) {
            Tallied::AsUser => {}
            Tallied::AsOther => self.metrics.rejections_unattributed_total.inc(),
            Tallied::Dropped => self.metrics.rejections_unaudited_total.inc(),
        }
    }

    async fn submit_unmetered(
        &self,
        who: &Principal,
        request: &Submission,
    ) -> Result<Submitted, JobError> {
        if self.admission_closed.is_cancelled() {
            return Err(JobError::ShuttingDown);
        }
        let now = self.now();
        let source = &self.backends.source;
        let filter = filter::compile(
            &request.filter,
            source.schema(),
            &self.settings.filter_limits,
            &self.regexes,
        )?;
        let range = self.resolve_range(&request.time_range, now)?;
        let max_staleness = self.resolve_max_staleness(request.max_staleness.as_deref())?;
        let freshness = match range.last {
            Some(_) => Freshness::Within(max_staleness),
            None => Freshness::Exact,
        };
        let fields = self.resolve_fields(request.fields.as_deref())?;
        let order = request.order.unwrap_or_default();
        let max_rows = self.resolve_max_rows(request.max_rows)?;
        let fingerprint = FingerprintInput {
            tenant: &who.tenant,
            source: source.id(),
            schema_version: source.schema_version(),
            filter: &filter,
            range: RangeKey::from(&range),
            fields: &fields,
            order,
            max_rows,
        }
        .fingerprint();
        let mut spec = JobSpec {
            job_id: JobId::new(),
            offset: crate::model::Offset(0),
            fingerprint,
            tenant: who.tenant.clone(),
            user: who.user.clone(),
            filter: filter.canonical().to_owned(),
            from_us: range.from_us,
            to_us: range.to_us,
            fields,
            order,
            max_rows,
        };

        match self.claim(fingerprint, spec.job_id, freshness, now).await {
            Ok(Shared::Won) => {}
            Ok(Shared::Join(job)) => return self.join(who, &request.filter, *job).await,
            Err(e) => {
                // A claim that timed out may still land.
                self.undo_admission(spec, Reached::Claiming, e.to_string(), now);
                return Err(e);
            }
        }
        let mut reached = Reached::Claiming;
        let admitted = self
            .admit(who, &request.filter, &mut spec, &mut reached, now)
            .await;
        if let Err(e) = &admitted {
            self.undo_admission(spec, reached, e.to_string(), now);
        }
        admitted
    }

    /// Admits a new job for a won fingerprint claim, saying in `reached`
    /// how far it got (what a failure leaves to undo).
    async fn admit(
        &self,
        who: &Principal,
        filter_text: &str,
        spec: &mut JobSpec,
        reached: &mut Reached,
        now: DateTime<Utc>,
    ) -> Result<Submitted, JobError> {
        let b = &self.backends;
        if b.results.is_full() {
            return Err(JobError::Overloaded {
                retry_after: self.settings.full_retry_after,
            });
        }
        b.limiter
            .check(&rate_key(who))
            .await
            .map_err(|retry_after| JobError::RateLimited { retry_after })?;
        *reached = Reached::Leasing;
        let Some(offset) = b.offsets.lease_offset(spec.job_id).await? else {
            *reached = Reached::Claiming;
            return Err(JobError::PoolExhausted {
                retry_after: self.settings.full_retry_after,
            });
        };
        spec.offset = offset;
        if let Some(gate) = &self.hooks.admission_gate
            && let Ok(permit) = gate.acquire().await
        {
            permit.forget();
        }
        let record = JobRecord::new(spec.clone(), now);
        *reached = Reached::Auditing;
        b.audit
            .record_submission(&audit_entry(&record, filter_text, None))
            .await?;
        *reached = Reached::Storing;
        b.intake.store_and_queue(record.clone()).await?;
        info!(job_id = %spec.job_id, offset = %spec.offset, fingerprint = %spec.fingerprint,
            user = %who.user, tenant = %who.tenant, "job accepted");
        Ok(Submitted {
            job: record,
            deduplicated: false,
        })
    }

    fn resolve_range(
        &self,
        request: &RangeSpec,
        now: DateTime<Utc>,
    ) -> Result<TimeRange, JobError> {
        Ok(filter::time_range::resolve(
            request.from.as_deref(),
            request.to.as_deref(),
            request.last.as_deref(),
            now,
            self.settings.max_time_range,
        )?)
    }

    fn resolve_max_staleness(&self, requested: Option<&str>) -> Result<Duration, JobError> {
        match requested {
            None => Ok(self.settings.max_staleness),
            Some(text) => parse_duration(text).map_err(|reason| JobError::NotAStaleness {
                text: text.to_owned(),
                reason,
            }),
        }
    }

    /// Checks the requested fields against the schema. Rows carry them in
    /// the order asked for; a name asked for twice counts once, where it
    /// first appears.
    fn resolve_fields(&self, fields: Option<&[String]>) -> Result<Vec<String>, JobError> {
        let schema = self.backends.source.schema();
        let mut out: Vec<String> = Vec::new();
        for name in fields.unwrap_or_default() {
            if schema.field_type(name).is_none() {
                return Err(JobError::UnknownField {
                    name: name.clone(),
                    known: schema.field_names().collect::<Vec<_>>().join(", "),
                });
            }
            if !out.contains(name) {
                out.push(name.clone());
            }
        }
        Ok(out)
    }

    fn resolve_max_rows(&self, requested: Option<u64>) -> Result<u64, JobError> {
        let cap = self.settings.max_rows;
        match requested {
            None => Ok(cap),
            Some(n) if (1..=cap).contains(&n) => Ok(n),
            Some(n) => Err(JobError::MaxRowsOutOfRange { requested: n, cap }),
        }
    }
}

/// Whom a rate limit counts: one user of one tenant (users of two tenants
/// may share a name). The tenant is length-prefixed, so no two pairs meet.
fn rate_key(who: &Principal) -> String {
    format!("{}:{}:{}", who.tenant.len(), who.tenant, who.user)
}

/// A job's audit row; its time range is the job's resolved range.
pub(super) fn audit_entry(
    job: &JobRecord,
    filter_text: &str,
    deduplicated_from: Option<crate::model::JobId>,
) -> AuditEntry {
    let spec = &job.spec;
    AuditEntry {
        submission_id: uuid::Uuid::now_v7().to_string(),
        job_id: spec.job_id.to_string(),
        fingerprint: spec.fingerprint.to_string(),
        user_id: spec.user.clone(),
        tenant: spec.tenant.clone(),
        result_offset: i64::from(spec.offset.0),
        filter_text: filter_text.to_owned(),
        canonical_filter: spec.filter.clone(),
        time_from: micros_rfc3339(spec.from_us),
        time_to: micros_rfc3339(spec.to_us),
        deduplicated_from: deduplicated_from.map(|j| j.to_string()),
        status: job.status.as_str().to_owned(),
        row_count: job.rows as i64,
        chunk_count: job.chunks as i64,
        truncated: job.truncated,
        error: job.error.clone(),
        submitted_at: rfc3339(job.submitted_at),
        started_at: job.started_at.map(rfc3339),
        first_chunk_at: job.first_chunk_at.map(rfc3339),
        finished_at: job.finished_at.map(rfc3339),
        expired_at: None,
    }
}
