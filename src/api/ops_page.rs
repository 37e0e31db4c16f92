//! `/ops`: the ops page, a static page and its script and style, embedded
//! in the binary (no Node to build or run it). The page holds no data; it
//! reads `/v1/ops/overview` and `/v1/audit` with the key the user types.
//!
//! Every answer carries a strict Content-Security-Policy: only this
//! origin's script, style and API, no inline script or style, no framing,
//! no form posts. The key travels as a bearer header set by the script, so
//! there is no cookie for another site to ride on.

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("ops_page/index.html");
const APP_JS: &str = include_str!("ops_page/app.js");
const APP_CSS: &str = include_str!("ops_page/app.css");

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 6] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // Embedded in the binary: a new binary may bring new assets, so the
        // browser asks again (the answer is a few KiB).
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body).into_response()
}
