//! Bearer API keys. Keys are held only as SHA-256 hashes; the configured
//! `key=user:tenant:role` list is parsed once at start-up.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::AppState;
use super::problem::{ApiError, ErrorCode};
use crate::model::{Principal, Role};

#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    /// (SHA-256 of the key, who it is). A list, not a map: lookup compares
    /// against every entry (see `principal`).
    hashes: Vec<([u8; 32], Principal)>,
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

    /// Adds a key; a key listed twice keeps its last entry.
    pub fn insert(&mut self, key: &str, who: Principal) {
        let hash = hash(key);
        self.hashes.retain(|(h, _)| *h != hash);
        self.hashes.push((hash, who));
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Looks a presented key up by its hash, in constant time: the
    /// presented key's hash is compared with every stored hash, each with a
    /// constant-time equality (no early exit, in the comparison or the
    /// loop), so the time taken says neither how much of a hash matched nor
    /// which entry did. Hashing first already hides how much of the key
    /// was right; this also keeps a hash map's bucket probing and `memcmp`
    /// out of the picture.
    pub fn principal(&self, presented: &str) -> Option<&Principal> {
        let presented = hash(presented);
        let mut found = None;
        for (n, (stored, _)) in self.hashes.iter().enumerate() {
            if constant_time_eq(stored, &presented) {
                found = Some(n);
            }
        }
        found.map(|n| &self.hashes[n].1)
    }
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Equality of two hashes that takes the same time whatever they hold: XOR
/// every byte pair and OR the results together, then test once.
/// `black_box` keeps the optimiser from turning the fold back into an
/// early-exit comparison.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut difference = 0u8;
    for (x, y) in a.iter().zip(b) {
        difference |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(difference) == 0
}

/// The authenticated caller of a request.
pub struct Caller(pub Principal);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Caller, ApiError> {
        let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
        let first = values.next();
        if values.next().is_some() {
            // Proxies and servers disagree on which of several counts.
            return Err(ApiError::new(
                ErrorCode::InvalidParameter,
                "send one `Authorization` header, not several",
            )
            .with("field", "Authorization"));
        }
        let presented = first
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

    #[test]
    fn lookup_finds_exactly_the_presented_key() {
        let keys = ApiKeys::parse(
            "key-number-1=ann:acme:query,key-number-2=bob:acme:ops,key-number-3=zed:globex:query",
        )
        .unwrap();
        for (key, user) in [
            ("key-number-1", "ann"),
            ("key-number-2", "bob"),
            ("key-number-3", "zed"),
        ] {
            assert_eq!(keys.principal(key).unwrap().user, user);
        }
        // Prefixes, extensions, case and whitespace variants are other keys.
        for wrong in [
            "",
            "key-number-",
            "key-number-12",
            "KEY-NUMBER-1",
            " key-number-1",
            "key-number-4",
        ] {
            assert!(keys.principal(wrong).is_none(), "{wrong:?}");
        }
        assert!(ApiKeys::default().principal("key-number-1").is_none());
    }

    #[test]
    fn a_key_listed_twice_keeps_its_last_entry() {
        let keys = ApiKeys::parse("key-number-1=ann:acme:query,key-number-1=bob:acme:ops").unwrap();
        assert_eq!(keys.principal("key-number-1").unwrap().user, "bob");
        assert_eq!(keys.hashes.len(), 1);
    }

    #[test]
    fn constant_time_eq_is_equality() {
        let a = hash("one");
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        for i in [0, 15, 31] {
            b = a;
            b[i] ^= 0x80;
            assert!(!constant_time_eq(&a, &b), "byte {i}");
        }
    }
}
