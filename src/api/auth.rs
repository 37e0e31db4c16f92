//! Bearer API keys. Keys are held only as SHA-256 hashes; the configured
//! `key=user:tenant:role` list is parsed once at start-up.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::AppState;
use super::problem::{ApiError, ErrorCode};
use crate::jobs::{Principal, Role};

#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    by_hash: HashMap<[u8; 32], Principal>,
}

impl ApiKeys {
    /// Parses comma-separated `key=user:tenant:role` entries.
    pub fn parse(text: &str) -> Result<ApiKeys, String> {
        let mut keys = ApiKeys::default();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (key, who) = entry.split_once('=').ok_or_else(|| {
                "an API key entry lacks `=`; write entries as key=user:tenant:role".to_owned()
            })?;
            let parts: Vec<&str> = who.split(':').collect();
            let [user, tenant, role] = parts[..] else {
                return Err(format!(
                    "API key entry for user `{who}` must be key=user:tenant:role"
                ));
            };
            let role = match role {
                "query" => Role::Query,
                "ops" => Role::Ops,
                other => return Err(format!("unknown role `{other}`; use `query` or `ops`")),
            };
            if key.len() < 8 || user.is_empty() || tenant.is_empty() {
                return Err(format!(
                    "API key entry for `{user}`: keys need at least 8 characters, user and tenant must be set"
                ));
            }
            keys.insert(
                key,
                Principal {
                    user: user.to_owned(),
                    tenant: tenant.to_owned(),
                    role,
                },
            );
        }
        Ok(keys)
    }

    pub fn insert(&mut self, key: &str, who: Principal) {
        self.by_hash.insert(hash(key), who);
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Looks a presented key up by its hash. The map compares fixed-size
    /// hashes, so timing tells nothing about how much of a key was right.
    pub fn principal(&self, presented: &str) -> Option<&Principal> {
        self.by_hash.get(&hash(presented))
    }
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The authenticated caller of a request.
pub struct Caller(pub Principal);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Caller, ApiError> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthorized,
                    "send your API key as `Authorization: Bearer <key>`",
                )
            })?;
        state
            .keys
            .principal(presented)
            .cloned()
            .map(Caller)
            .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "the API key is not valid"))
    }
}

impl Caller {
    pub fn require_ops(&self) -> Result<(), ApiError> {
        match self.0.role {
            Role::Ops => Ok(()),
            Role::Query => Err(ApiError::new(
                ErrorCode::Forbidden,
                "the audit trail is for keys with the `ops` role",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_entries() {
        let keys = ApiKeys::parse("secret-one=ann:acme:query, secret-two=olga:acme:ops").unwrap();
        assert_eq!(keys.principal("secret-one").unwrap().user, "ann");
        assert_eq!(keys.principal("secret-two").unwrap().role, Role::Ops);
        assert!(keys.principal("secret-three").is_none());
        assert!(ApiKeys::parse("short=ann:acme:query").is_err());
        assert!(ApiKeys::parse("long-enough=ann:acme:admin").is_err());
        assert!(ApiKeys::parse("long-enough=ann:acme").is_err());
    }
}
