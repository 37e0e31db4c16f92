//! `/v1/jobs`: submit, list, status, chunks and cancel.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Caller;
use super::extract::{JobIdPath, Json, Query, limit_param};
use super::paging::{link_next, parsed};
use super::problem::{ApiError, ErrorCode};
use crate::audit::rfc3339;
use crate::coord::RequestHash;
use crate::filter::time_range::micros_rfc3339;
use crate::filter::{Fingerprint, Order};
use crate::jobs::read::ChunkPage;
use crate::jobs::submit::{Idempotency, MAX_IDEMPOTENCY_KEY_LEN, RangeSpec, Submission};
use crate::model::{JobId, JobRecord, JobStatus, Offset};

/// The longest `POST /v1/jobs?wait=` may hold the answer.
const MAX_SUBMIT_WAIT: f64 = 5.0;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitParams {
    wait: Option<f64>,
}

pub async fn submit(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    Query(params): Query<SubmitParams>,
    headers: HeaderMap,
    Json(request): Json<SubmitRequest>,
) -> Result<Response, ApiError> {
    let wait = wait_param(params.wait, MAX_SUBMIT_WAIT)?;
    let key = idempotency_key(&headers)?.map(str::to_owned);
    // For a keyed submission, the request as sent decides whether a retry
    // replays: hashed from the wire type, whose field order makes the bytes
    // deterministic.
    let request_hash = key
        .is_some()
        .then(|| RequestHash::of(&serde_json::to_vec(&request).unwrap_or_default()));
    let submission = Submission::from(request);
    // Admission runs in its own task so a client hanging up cannot cut it
    // short: between its fingerprint claim (and idempotency key) and the
    // job's insert it holds a claim and an offset lease that only it gives
    // back, and hyper drops a request's future when its connection closes.
    let jobs = state.jobs.clone();
    let submitted = tokio::spawn(async move {
        let idempotency = key
            .as_deref()
            .zip(request_hash)
            .map(|(key, request)| Idempotency { key, request });
        jobs.submit_with_key(&who, submission, idempotency).await
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "the submission's task failed");
        ApiError::new(
            ErrorCode::Internal,
            "the submission failed unexpectedly; it is logged, and a retry may work",
        )
    })??;
    let mut job = submitted.job;
    let mut first_chunk = None;
    if !wait.is_zero() {
        // One round trip for fast queries: hold the answer until the first chunk exists.
        let page = state.jobs.chunks(job, 0, 1, wait).await?;
        // As stored, so its rows keep their fields' order.
        first_chunk = page
            .chunks
            .first()
            .and_then(|c| RawValue::from_string(c.to_string()).ok());
        job = page.job;
    }
    let body = Accepted {
        job_id: job.id(),
        offset: job.spec.offset,
        fingerprint: job.spec.fingerprint,
        deduplicated: submitted.deduplicated,
        status: job.status,
        resolved_range: ResolvedRange::of(&job),
        expires_at: job.expires_at.map(rfc3339),
        links: links(&job),
        first_chunk,
    };
    let location = format!("/v1/jobs/{}", job.id());
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        axum::Json(body),
    )
        .into_response())
}

/// The 202 answer to a submission.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    job_id: JobId,
    offset: Offset,
    fingerprint: Fingerprint,
    deduplicated: bool,
    status: JobStatus,
    resolved_range: ResolvedRange,
    expires_at: Option<String>,
    links: Value,
    /// With `?wait=`, the first chunk when it came in time.
    #[serde(skip_serializing_if = "Option::is_none")]
    first_chunk: Option<Box<RawValue>>,
}

/// The body of `POST /v1/jobs`, as the OpenAPI document's `SubmitRequest`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubmitRequest {
    pub filter: String,
    pub time_range: TimeRangeRequest,
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    #[serde(default)]
    pub order: Option<Order>,
    #[serde(default)]
    pub max_rows: Option<u64>,
    /// Not serialized when absent: a request that does not use it hashes
    /// (for its idempotency key) as it would without this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_staleness: Option<String>,
}

/// The range a job's rows cover, as resolved at its submission (RFC 3339):
/// for a shared relative range, how old the data is.
#[derive(Debug, Serialize)]
pub struct ResolvedRange {
    pub from: String,
    pub to: String,
}

impl ResolvedRange {
    pub fn of(job: &JobRecord) -> ResolvedRange {
        ResolvedRange {
            from: micros_rfc3339(job.spec.from_us),
            to: micros_rfc3339(job.spec.to_us),
        }
    }
}

/// `{from, to}` (RFC 3339, `from` inclusive, `to` exclusive) or `{last: "7d"}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRangeRequest {
    pub from: Option<String>,
    pub to: Option<String>,
    pub last: Option<String>,
}

impl From<SubmitRequest> for Submission {
    fn from(r: SubmitRequest) -> Submission {
        Submission {
            filter: r.filter,
            time_range: RangeSpec {
                from: r.time_range.from,
                to: r.time_range.to,
                last: r.time_range.last,
            },
            fields: r.fields,
            order: r.order,
            max_rows: r.max_rows,
            max_staleness: r.max_staleness,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    status: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// The caller's jobs, started or joined by dedup, newest first, a page at a
/// time: `next` (and a `Link: rel="next"`) goes back as `cursor`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    RawQuery(raw_query): RawQuery,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let status = parsed("status", params.status, |s| {
        s.parse::<JobStatus>().map_err(|()| {
            format!(
                "`status` = {s:?}; use queued, running, completed, failed, cancelled or expired"
            )
        })
    })?;
    // The cursor is the last listed job's id; clients treat it as opaque.
    let before = parsed("cursor", params.cursor, |c| {
        c.parse::<JobId>()
            .map_err(|_| "`cursor` is not a `next` this API gave; start again without it".into())
    })?;
    let limit = limit_param(params.limit)?;
    let page = state.jobs.jobs_of(&who, status, before, limit).await?;
    let jobs: Vec<Value> = page
        .jobs
        .iter()
        .map(|listed| {
            let mut view = job_view(&listed.record);
            view["joined"] = Value::Bool(listed.joined);
            view
        })
        .collect();
    let next = page.next.map(|id| id.to_string());
    let mut response = axum::Json(json!({ "jobs": jobs, "next": next })).into_response();
    link_next(
        &mut response,
        "/v1/jobs",
        raw_query.as_deref(),
        next.as_deref(),
    );
    Ok(response)
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    JobIdPath(id): JobIdPath,
) -> Result<Response, ApiError> {
    let job = state.jobs.job(&who, id).await?;
    Ok(axum::Json(job_view(&job)).into_response())
}

pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    JobIdPath(id): JobIdPath,
) -> Result<Response, ApiError> {
    let job = state.jobs.cancel(&who, id).await?;
    let status = if job.status.is_finished() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, axum::Json(job_view(&job))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkParams {
    from: Option<u64>,
    limit: Option<usize>,
    wait: Option<f64>,
}

pub async fn chunks(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    JobIdPath(id): JobIdPath,
    Query(params): Query<ChunkParams>,
) -> Result<Response, ApiError> {
    let job = state.jobs.job(&who, id).await?;
    read_chunks(&state, job, params).await
}

/// The largest chunk cursor: 2^53 - 1, the largest integer every JSON
/// reader (JavaScript's numbers) holds exactly, so `next` never exceeds it.
pub const MAX_CURSOR: u64 = (1 << 53) - 1;

/// Shared by the job and offset chunk routes.
pub async fn read_chunks(
    state: &AppState,
    job: JobRecord,
    params: ChunkParams,
) -> Result<Response, ApiError> {
    let wait = wait_param(params.wait, state.jobs.settings.max_wait.as_secs_f64())?;
    let limit = limit_param(params.limit)?;
    let from = cursor_param(params.from)?;
    let page = state.jobs.chunks(job, from, limit, wait).await?;
    Ok(chunk_page_response(&page))
}

/// The `from` parameter: a chunk cursor, 0 when absent.
pub fn cursor_param(from: Option<u64>) -> Result<u64, ApiError> {
    match from.unwrap_or(0) {
        from @ 0..=MAX_CURSOR => Ok(from),
        _ => Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("`from` must be between 0 and {MAX_CURSOR}"),
        )
        .with("field", "from")),
    }
}

/// Chunks are stored as JSON text; the page is assembled around them
/// without decoding, which keeps polls cheap.
fn chunk_page_response(page: &ChunkPage) -> Response {
    let mut body =
        String::with_capacity(64 + page.chunks.iter().map(|c| c.len() + 1).sum::<usize>());
    body.push_str(r#"{"jobId":""#);
    body.push_str(&page.job.id().to_string());
    body.push_str(r#"","offset":"#);
    body.push_str(&page.job.spec.offset.to_string());
    body.push_str(r#","status":""#);
    body.push_str(page.job.status.as_str());
    // RFC 3339 times need no JSON escaping.
    let range = ResolvedRange::of(&page.job);
    body.push_str(r#"","resolvedRange":{"from":""#);
    body.push_str(&range.from);
    body.push_str(r#"","to":""#);
    body.push_str(&range.to);
    body.push_str(r#""},"chunks":["#);
    for (n, chunk) in page.chunks.iter().enumerate() {
        if n > 0 {
            body.push(',');
        }
        body.push_str(chunk);
    }
    body.push_str(r#"],"next":"#);
    body.push_str(&page.next.to_string());
    body.push('}');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The optional `Idempotency-Key` header: 1 to 255 printable ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = |detail: &str| {
        Err(ApiError::new(ErrorCode::InvalidParameter, detail).with("field", "Idempotency-Key"))
    };
    if values.next().is_some() {
        return invalid("send one `Idempotency-Key` header, not several");
    }
    let bytes = value.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !bytes.iter().all(|b| (0x20..=0x7e).contains(b))
    {
        return invalid(&format!(
            "`Idempotency-Key` must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters, e.g. a UUID"
        ));
    }
    // Printable ASCII, so valid UTF-8.
    Ok(value.to_str().ok())
}

fn wait_param(wait: Option<f64>, max: f64) -> Result<Duration, ApiError> {
    match wait {
        None => Ok(Duration::ZERO),
        Some(w) if w.is_finite() && (0.0..=max).contains(&w) => Ok(Duration::from_secs_f64(w)),
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("`wait` must be between 0 and {max} seconds"),
        )),
    }
}

fn links(job: &JobRecord) -> Value {
    let id = job.id();
    let offset = job.spec.offset;
    json!({
        "self": format!("/v1/jobs/{id}"),
        "chunks": format!("/v1/jobs/{id}/chunks"),
        "offset": format!("/v1/offsets/{offset}"),
        "offsetChunks": format!("/v1/offsets/{offset}/chunks"),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Timings {
    /// Submission to a worker picking the job up.
    queued_seconds: Option<f64>,
    /// Submission to the first chunk being readable.
    first_chunk_seconds: Option<f64>,
    /// Submission to the last chunk.
    total_seconds: Option<f64>,
}

pub fn job_view(job: &JobRecord) -> Value {
    let since = |at: Option<DateTime<Utc>>| at.map(|t| (t - job.submitted_at).as_seconds_f64());
    let spec = &job.spec;
    json!({
        "jobId": spec.job_id,
        "offset": spec.offset,
        "fingerprint": spec.fingerprint,
        "status": job.status,
        "filter": spec.filter,
        "resolvedRange": ResolvedRange::of(job),
        // Also under the name existing clients read.
        "timeRange": ResolvedRange::of(job),
        "fields": spec.fields,
        "order": spec.order,
        "maxRows": spec.max_rows,
        "rows": job.rows,
        "chunks": job.chunks,
        "truncated": job.truncated,
        "error": job.error,
        "cancelRequested": job.cancel_requested,
        "submittedAt": rfc3339(job.submitted_at),
        "startedAt": job.started_at.map(rfc3339),
        "firstChunkAt": job.first_chunk_at.map(rfc3339),
        "finishedAt": job.finished_at.map(rfc3339),
        "expiresAt": job.expires_at.map(rfc3339),
        "timings": Timings {
            queued_seconds: since(job.started_at),
            first_chunk_seconds: since(job.first_chunk_at),
            total_seconds: since(job.finished_at),
        },
        "links": links(job),
    })
}
