//! axum's `Json`, `Query` and `Path` with their rejections turned into the
//! same problem+json as every other error.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::problem::{ApiError, ErrorCode};
use crate::jobs::JobError;
use crate::model::{JobId, Offset};

pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if caused_by::<super::guard::BodyTimedOut>(&rejection) {
        return ApiError::new(
            ErrorCode::RequestTimeout,
            "the body did not arrive within the body timeout; send it whole, at once",
        );
    }
    let code = match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        _ => ErrorCode::InvalidJson,
    };
    let detail = match &rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "send the body with `Content-Type: application/json`".to_owned()
        }
        _ => rejection.body_text(),
    };
    ApiError::new(code, detail)
}

/// Whether `E` is anywhere in the chain of `error`'s sources.
fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<E>() {
            return true;
        }
        next = e.source();
    }
    false
}

pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|r: QueryRejection| ApiError::new(ErrorCode::InvalidParameter, r.body_text()))
    }
}

pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|r: PathRejection| ApiError::new(ErrorCode::InvalidParameter, r.body_text()))
    }
}

/// A job id from the path, in the one spelling the API writes (lower-case,
/// hyphenated); any other text names no job.
pub struct JobIdPath(pub JobId);

impl<S: Send + Sync> FromRequestParts<S> for JobIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(text) = Path::<String>::from_request_parts(parts, state).await?;
        text.parse()
            .map(JobIdPath)
            .map_err(|_| JobError::JobNotFound(text).into())
    }
}

/// An offset from the path, in its one spelling (`7`, never `07` or `+7`).
pub struct OffsetPath(pub Offset);

impl<S: Send + Sync> FromRequestParts<S> for OffsetPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(text) = Path::<String>::from_request_parts(parts, state).await?;
        text.parse::<u32>()
            .ok()
            .filter(|n| n.to_string() == text)
            .map(|n| OffsetPath(Offset(n)))
            .ok_or_else(|| JobError::OffsetNotFound(text).into())
    }
}

/// Most items one list or page returns (`limit`), and the default.
pub const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 100;

/// The `limit` query parameter every listing shares.
pub fn limit_param(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        _ => Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("`limit` must be between 1 and {MAX_LIMIT}"),
        )),
    }
}
