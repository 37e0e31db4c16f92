//! The API's contract, served as committed: `openapi/openapi.yaml` is
//! embedded at build time and served as is at `/openapi.yaml`, and converted
//! once, when the router is built, for `/openapi.json`. Keeping one source
//! file (rather than a generated JSON copy) means the two cannot drift.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The committed OpenAPI document.
pub const OPENAPI_YAML: &str = include_str!("../../openapi/openapi.yaml");

/// The document as JSON text.
pub fn to_json() -> Result<String, serde_yaml_ng::Error> {
    let value: serde_json::Value = serde_yaml_ng::from_str(OPENAPI_YAML)?;
    Ok(value.to_string())
}

pub async fn yaml() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML).into_response()
}

/// `json` is the converted document; `Bytes` clones share one buffer.
pub fn json_response(json: axum::body::Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_document_converts_to_json() {
        let json: serde_json::Value = serde_json::from_str(&to_json().unwrap()).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        assert!(json["paths"]["/v1/jobs"]["post"].is_object());
    }
}
