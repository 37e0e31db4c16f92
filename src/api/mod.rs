//! The HTTP API (axum): routes, authentication, and problem+json errors.
//! Handlers are thin: they parse, call `Jobs`, and shape JSON.

pub mod audit;
pub mod auth;
pub mod events;
pub mod extract;
pub mod guard;
pub mod jobs;
pub mod keys;
pub mod offsets;
pub mod openapi;
pub mod ops;
pub mod ops_page;
pub mod paging;
pub mod problem;
pub mod server;
pub mod stream;
pub mod traffic;
pub mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use self::guard::BodyLimits;
use self::keys::KeyRing;
use self::problem::{ApiError, ErrorCode};
use crate::jobs::Jobs;

/// What every handler can reach.
pub struct AppState {
    pub jobs: Arc<Jobs>,
    pub keys: Arc<KeyRing>,
    /// Where exchanges are recorded, when a traffic topic is configured.
    pub traffic: Option<traffic::TrafficRecorder>,
    /// Push streams: their cap and heartbeat.
    pub streams: stream::Streams,
}

pub fn router(state: Arc<AppState>, body: BodyLimits) -> Router {
    // The document is a build-time constant, checked by a unit test; a
    // failure here is a broken build, not something a request can cause.
    let openapi_json =
        axum::body::Bytes::from(openapi::to_json().expect("openapi/openapi.yaml is valid YAML"));
    let routes = Router::new()
        .route("/v1/jobs", get(jobs::list).post(jobs::submit))
        .route("/v1/jobs/{job_id}", get(jobs::get).delete(jobs::cancel))
        .route("/v1/jobs/{job_id}/chunks", get(jobs::chunks))
        .route("/v1/jobs/{job_id}/events", get(events::stream))
        .route("/v1/jobs/{job_id}/ws", get(ws::stream))
        .route("/v1/offsets/{offset}", get(offsets::get))
        .route("/v1/offsets/{offset}/chunks", get(offsets::chunks))
        .route("/v1/offsets/{offset}/events", get(events::stream))
        .route("/v1/offsets/{offset}/ws", get(ws::stream))
        .route("/v1/audit", get(audit::search))
        .route("/v1/ops/overview", get(ops::overview))
        .route("/ops", get(ops_page::index))
        .route("/ops/app.js", get(ops_page::script))
        .route("/ops/app.css", get(ops_page::style))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.yaml", get(openapi::yaml))
        .route(
            "/openapi.json",
            get(move || {
                let json = openapi_json.clone();
                async move { openapi::json_response(json) }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    with_layers(routes, state, body)
}

/// `routes` behind the API's middleware, in its order: body limits and
/// guard, latency by route, traffic recording, tracing. Every API route
/// pays for these; so does the bench's baseline route.
pub fn with_layers(
    routes: Router<Arc<AppState>>,
    state: Arc<AppState>,
    body: BodyLimits,
) -> Router {
    routes
        .layer(DefaultBodyLimit::max(body.max_bytes))
        .layer(middleware::from_fn_with_state(Arc::new(body), guard::guard))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_latency,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            traffic::record,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// What a worker-only process serves: liveness, readiness and its metrics,
/// so probes and Prometheus reach workers as they reach the API.
pub fn ops_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_latency,
        ))
        .with_state(state)
}

/// Times every request by its route template (not the raw path, which
/// would make one series per job id).
async fn record_latency(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = method_label(request.method());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state.jobs.metrics.http_request(
        method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// A request's method as a metrics label, from a closed set: the method is
/// the client's to choose (any token up to hyper's head limit), and every
/// label value is a series kept for the life of the process.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Prometheus metrics of this process.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let pool = state
        .jobs
        .pool_usage()
        .await
        .ok()
        .map(|p| (p.leased, p.size));
    let results = state.jobs.held_bytes();
    let feeds = state.jobs.watches.feeds() as u64;
    (state.jobs.metrics.streams.feeds).store(feeds, std::sync::atomic::Ordering::Relaxed);
    let body = state.jobs.metrics.render(pool, results);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Liveness: the process answers.
async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// How long readiness waits for each backend.
const READY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Readiness: not shutting down, and every backend (coordination, the
/// audit log, the result topic) answers within two seconds. A full pool is
/// still ready (reads and dedup work; new jobs get 503 with `Retry-After`);
/// the body says how full it is and how each backend answered.
async fn readyz(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    if state.jobs.admission_closed.is_cancelled() {
        // Through `JobError` so the 503 carries `Retry-After` like every other.
        return Err(crate::jobs::JobError::ShuttingDown.into());
    }
    let ready = state.jobs.readiness(READY_PATIENCE).await;
    if let Some((backend, why)) = ready.failure() {
        return Err(ApiError::new(
            ErrorCode::BackendUnavailable,
            format!("not ready: {backend} does not answer: {why}"),
        )
        .with("backend", backend));
    }
    let offsets = ready.pool.as_ref().ok().map(|pool| {
        json!({
            "leased": pool.leased,
            "free": pool.size.saturating_sub(pool.leased),
            "size": pool.size,
        })
    });
    Ok(axum::Json(json!({
        "status": "ready",
        "offsets": offsets,
        "backends": { "coordination": "ok", "audit": "ok", "results": "ok" },
    }))
    .into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "no such route; the API lives under /v1 (see the README)",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not support that method",
    )
}
