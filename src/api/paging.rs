//! What the paged lists (`/v1/audit`, `/v1/jobs`) share: a parameter parsed
//! into a 400 that names it, and the `Link: rel="next"` header that carries
//! the same request with its `cursor` set to the page's `next`.

use axum::http::{HeaderValue, header};
use axum::response::Response;

use super::problem::{ApiError, ErrorCode};

/// A non-empty parameter `name` through `parse`, whose error becomes a 400
/// naming the field.
pub fn parsed<T>(
    name: &'static str,
    value: Option<String>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| {
            parse(&v).map_err(|detail| {
                ApiError::new(ErrorCode::InvalidParameter, detail).with("field", name)
            })
        })
        .transpose()
}

/// Adds `Link: <{path}?{query with cursor=next}>; rel="next"` when there is
/// a next page.
pub fn link_next(response: &mut Response, path: &str, raw_query: Option<&str>, next: Option<&str>) {
    let Some(next) = next else { return };
    let link = format!("<{path}?{}>; rel=\"next\"", with_cursor(raw_query, next));
    if let Ok(value) = HeaderValue::from_str(&link) {
        response.headers_mut().insert(header::LINK, value);
    }
}

/// The request's own query with `cursor` set to `next`, for the `Link`.
fn with_cursor(raw_query: Option<&str>, next: &str) -> String {
    let mut pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw_query.unwrap_or("")).unwrap_or_default();
    pairs.retain(|(k, _)| k != "cursor");
    pairs.push(("cursor".into(), next.into()));
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_keeps_the_query_and_replaces_the_cursor() {
        assert_eq!(
            with_cursor(Some("user=ann&cursor=old&limit=2"), "1.a"),
            "user=ann&limit=2&cursor=1.a"
        );
        assert_eq!(with_cursor(None, "1.a"), "cursor=1.a");
    }
}
