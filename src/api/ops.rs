//! `/v1/ops/overview`: what the ops page draws, for the `ops` role of a
//! tenant: the offset pool with the tenant's jobs on it, and this
//! instance's last hour of first chunks and rejections. Polled every
//! second by the page, so each job is a short summary, not the full view.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::AppState;
use super::auth::Caller;
use super::problem::ApiError;
use crate::audit::rfc3339;
use crate::jobs::OpsOverview;
use crate::metrics::LastHourView;
use crate::model::{JobRecord, Principal};

/// Characters of a job's filter the overview carries; the audit search
/// has the whole text.
const FILTER_CHARS: usize = 160;

pub async fn overview(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require_ops("the ops overview")?;
    let overview = state.jobs.ops_overview(&caller.0.tenant).await?;
    // A snapshot of now: a cache must not serve it a second later.
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(overview_view(&caller.0, &overview)),
    )
        .into_response())
}

fn overview_view(caller: &Principal, o: &OpsOverview) -> Value {
    let leased = o.jobs.len() + o.admitting.len() + o.other_tenants.len();
    json!({
        "now": rfc3339(o.at),
        "caller": { "user": caller.user, "tenant": caller.tenant },
        "pool": {
            "size": o.pool_size,
            "leased": leased,
            "admitting": o.admitting,
            "otherTenants": o.other_tenants,
        },
        "jobs": o.jobs.iter().map(job_summary).collect::<Vec<_>>(),
        "lastHour": last_hour_view(&o.last_hour),
    })
}

fn job_summary(job: &JobRecord) -> Value {
    let since = |at: Option<DateTime<Utc>>| at.map(|t| (t - job.submitted_at).as_seconds_f64());
    let filter: String = job.spec.filter.chars().take(FILTER_CHARS).collect();
    let cut = filter.len() < job.spec.filter.len();
    json!({
        "jobId": job.id(),
        "offset": job.spec.offset,
        "status": job.status,
        "user": job.spec.user,
        "filter": if cut { format!("{filter}…") } else { filter },
        "fingerprint": job.spec.fingerprint,
        "rows": job.rows,
        "chunks": job.chunks,
        "truncated": job.truncated,
        "cancelRequested": job.cancel_requested,
        "submittedAt": rfc3339(job.submitted_at),
        "firstChunkSeconds": since(job.first_chunk_at),
        "finishedAt": job.finished_at.map(rfc3339),
        "expiresAt": job.expires_at.map(rfc3339),
    })
}

fn last_hour_view(hour: &LastHourView) -> Value {
    json!({
        "bucketBoundsSeconds": hour.bucket_bounds_seconds,
        "firstChunkCounts": hour.first_chunk_counts,
        "minutes": hour.minutes.iter().map(|m| json!({
            "start": rfc3339(m.start),
            "firstChunks": m.first_chunks,
            "rateLimited": m.rate_limited,
            "unavailable": m.unavailable,
        })).collect::<Vec<_>>(),
    })
}
