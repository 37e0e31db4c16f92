//! The caller of a request: a bearer API key, looked up in the key ring.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::AppState;
use super::problem::{ApiError, ErrorCode};
use crate::model::{Principal, Role};

/// The authenticated caller of a request.
pub struct Caller(pub Principal);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Caller, ApiError> {
        presented_caller(&parts.headers, state)?.ok_or_else(no_key)
    }
}

fn no_key() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        "send your API key as `Authorization: Bearer <key>`",
    )
}

/// The caller an `Authorization` header names, `None` without one (a
/// WebSocket may authenticate in its first message instead).
pub fn presented_caller(
    headers: &header::HeaderMap,
    state: &AppState,
) -> Result<Option<Caller>, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        // Proxies and servers disagree on which of several counts.
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "send one `Authorization` header, not several",
        )
        .with("field", "Authorization"));
    }
    let presented = bearer_key(first).ok_or_else(no_key)?;
    caller_of_key(presented, state).map(Some)
}

/// The caller `key` belongs to.
pub fn caller_of_key(key: &str, state: &AppState) -> Result<Caller, ApiError> {
    state
        .keys
        .principal(key)
        .map(Caller)
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "the API key is not valid"))
}

/// The key of an `Authorization: Bearer <key>` value.
pub(crate) fn bearer_key(value: &header::HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
}

impl Caller {
    /// For the ops views (the audit trail, the ops overview); `what` names
    /// the view in the 403.
    pub fn require_ops(&self, what: &str) -> Result<(), ApiError> {
        match self.0.role {
            Role::Ops => Ok(()),
            Role::Query => Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("{what} is for keys with the `ops` role; this key has the `query` role"),
            )),
        }
    }
}
