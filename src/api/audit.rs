//! `/v1/audit`: the audit trail of the caller's tenant, for the `ops` role.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::Caller;
use super::extract::{Query, limit_param};
use super::problem::{ApiError, ErrorCode};
use crate::audit::AuditQuery;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    user: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

pub async fn search(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(params): Query<AuditParams>,
) -> Result<Response, ApiError> {
    caller.require_ops()?;
    let time = |name: &str, text: Option<&str>| -> Result<Option<DateTime<Utc>>, ApiError> {
        text.filter(|t| !t.is_empty())
            .map(|t| {
                DateTime::parse_from_rfc3339(t)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| {
                        ApiError::new(
                            ErrorCode::InvalidParameter,
                            format!("`{name}` = {t:?} is not an RFC 3339 time: {e}"),
                        )
                    })
            })
            .transpose()
    };
    let limit = limit_param(params.limit)?;
    let query = AuditQuery {
        tenant: caller.0.tenant.clone(),
        user: params.user.filter(|u| !u.is_empty()),
        from: time("from", params.from.as_deref())?,
        to: time("to", params.to.as_deref())?,
        limit: limit as u32,
    };
    let entries = state.jobs.search_audit(&query).await?;
    Ok(axum::Json(json!({ "entries": entries })).into_response())
}
