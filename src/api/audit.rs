//! `/v1/audit`: the audit trail of the caller's tenant, for the `ops` role,
//! as JSON pages or as CSV (`format=csv` or `Accept: text/csv`). Pages are
//! keyed by a cursor: `next` in the body (and a `Link: rel="next"` header)
//! is passed back as `cursor`.

mod csv;

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::Caller;
use super::extract::{Query, limit_param};
use super::paging::{link_next, parsed};
use super::problem::{ApiError, ErrorCode};
use crate::audit::{AuditCursor, AuditQuery};
use crate::filter::Fingerprint;
use crate::model::JobStatus;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    user: Option<String>,
    fingerprint: Option<String>,
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    format: Option<String>,
}

pub async fn search(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(raw_query): RawQuery,
    Query(params): Query<AuditParams>,
) -> Result<Response, ApiError> {
    caller.require_ops("the audit trail")?;
    let csv = wants_csv(params.format.as_deref(), &headers)?;
    let query = audit_query(caller.0.tenant.clone(), params)?;
    let page = state.jobs.search_audit(&query).await?;
    let next = page.next.map(|c| c.to_string());
    let mut response = if csv {
        (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            csv::page(&page.entries),
        )
            .into_response()
    } else {
        axum::Json(json!({ "entries": page.entries, "next": next })).into_response()
    };
    link_next(
        &mut response,
        "/v1/audit",
        raw_query.as_deref(),
        next.as_deref(),
    );
    Ok(response)
}

/// The query's parameters, checked: a typo in a status or a fingerprint is
/// a 400, not an empty page. An empty parameter counts as absent.
fn audit_query(tenant: String, params: AuditParams) -> Result<AuditQuery, ApiError> {
    let time = |name: &'static str, text: Option<String>| {
        parsed(name, text, |t| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| format!("`{name}` = {t:?} is not an RFC 3339 time: {e}"))
        })
    };
    Ok(AuditQuery {
        tenant,
        user: params.user.filter(|u| !u.is_empty()),
        fingerprint: parsed("fingerprint", params.fingerprint, |f| {
            f.parse::<Fingerprint>()
                .map(|f| f.to_string())
                .map_err(|e| format!("`fingerprint`: {e}"))
        })?,
        status: parsed("status", params.status, |s| {
            s.parse::<JobStatus>().map_err(|()| {
                format!("`status` = {s:?} is not one of queued, running, completed, failed, cancelled, expired")
            })
        })?,
        from: time("from", params.from)?,
        to: time("to", params.to)?,
        after: parsed("cursor", params.cursor, |c| {
            c.parse::<AuditCursor>().map_err(|()| {
                "`cursor` is not a `next` this API gave; start again without it".into()
            })
        })?,
        limit: limit_param(params.limit)? as u32,
    })
}

/// CSV when `format=csv`, or without `format` when `Accept` prefers
/// `text/csv` to JSON; JSON otherwise (also for an `Accept` naming neither,
/// as before CSV existed).
fn wants_csv(format: Option<&str>, headers: &HeaderMap) -> Result<bool, ApiError> {
    match format {
        Some("csv") => return Ok(true),
        Some("json") => return Ok(false),
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidParameter,
                format!("`format` = {other:?}: use `json` or `csv`"),
            )
            .with("field", "format"));
        }
        None => {}
    }
    // The best q of each kind over every `Accept` value; a tie is JSON.
    let (mut json, mut csv) = (0.0_f32, 0.0_f32);
    for range in headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/csv" => csv = csv.max(q),
            "application/json" | "application/*" | "*/*" => json = json.max(q),
            _ => {}
        }
    }
    Ok(csv > json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, value.parse().unwrap());
        headers
    }

    #[test]
    fn csv_is_chosen_by_format_or_by_a_preferring_accept() {
        let none = HeaderMap::new();
        assert!(!wants_csv(None, &none).unwrap());
        assert!(wants_csv(Some("csv"), &none).unwrap());
        assert!(!wants_csv(Some("json"), &accept("text/csv")).unwrap());
        assert!(wants_csv(None, &accept("text/csv")).unwrap());
        assert!(wants_csv(None, &accept("text/csv, */*;q=0.1")).unwrap());
        assert!(!wants_csv(None, &accept("text/csv;q=0.5, application/json")).unwrap());
        assert!(!wants_csv(None, &accept("text/csv, application/json")).unwrap());
        assert!(!wants_csv(None, &accept("text/html")).unwrap());
        assert!(wants_csv(Some("xml"), &none).is_err());
    }
}
