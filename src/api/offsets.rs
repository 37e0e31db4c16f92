//! `/v1/offsets/{offset}`: the stable URL a dashboard embeds. It reads
//! whichever job holds the offset now.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::Caller;
use super::extract::{OffsetPath, Query};
use super::jobs::{ChunkParams, job_view, read_chunks};
use super::problem::ApiError;

pub async fn get(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    OffsetPath(offset): OffsetPath,
) -> Result<Response, ApiError> {
    let job = state.jobs.job_at_offset(&who, offset).await?;
    Ok(axum::Json(job_view(&job)).into_response())
}

pub async fn chunks(
    State(state): State<Arc<AppState>>,
    Caller(who): Caller,
    OffsetPath(offset): OffsetPath,
    Query(params): Query<ChunkParams>,
) -> Result<Response, ApiError> {
    let job = state.jobs.job_at_offset(&who, offset).await?;
    read_chunks(&state, job, params).await
}
