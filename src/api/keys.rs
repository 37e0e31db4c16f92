//! The API keys the service accepts, held only as SHA-256 hashes: those of
//! `PSEUDOSTREAM_API_KEYS`, read at start, and those of
//! `PSEUDOSTREAM_API_KEYS_FILE`, read again on SIGHUP and whenever the file
//! changes, so ops can add or revoke a key in seconds without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::model::{Principal, Role};

#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    /// (SHA-256 of the key, who it is). A list, not a map: lookup compares
    /// against every entry (see `principal`).
    hashes: Vec<([u8; 32], Principal)>,
}

impl ApiKeys {
    /// Parses comma-separated `key=user:tenant:role` entries
    /// (`PSEUDOSTREAM_API_KEYS`).
    pub fn parse(text: &str) -> Result<ApiKeys, String> {
        let mut keys = ApiKeys::default();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            keys.add_entry(entry)?;
        }
        Ok(keys)
    }

    /// Parses a keys file: one entry a line, `key=user:tenant:role` or
    /// `sha256:<64 hex digits of the key's SHA-256>=user:tenant:role` (so
    /// the file need not hold the key itself); blank lines and lines
    /// starting with `#` are skipped. Errors name the line.
    pub fn parse_file(text: &str) -> Result<ApiKeys, String> {
        let mut keys = ApiKeys::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            keys.add_entry(line)
                .map_err(|e| format!("line {}: {e}", n + 1))?;
        }
        Ok(keys)
    }

    fn add_entry(&mut self, entry: &str) -> Result<(), String> {
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
        if user.is_empty() || tenant.is_empty() {
            return Err(format!(
                "API key entry for `{who}`: user and tenant must be set"
            ));
        }
        let hash = match key.strip_prefix("sha256:") {
            Some(hex_digest) => {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(hex_digest, &mut hash).map_err(|_| {
                    format!("API key entry for `{user}`: after `sha256:` come the 64 hex digits of the key's SHA-256")
                })?;
                hash
            }
            None if key.len() < 8 => {
                return Err(format!(
                    "API key entry for `{user}`: keys need at least 8 characters"
                ));
            }
            None => hash(key),
        };
        let who = Principal {
            user: user.to_owned(),
            tenant: tenant.to_owned(),
            role,
        };
        self.hashes.retain(|(h, _)| *h != hash);
        self.hashes.push((hash, who));
        Ok(())
    }

    /// Adds a key; a key listed twice keeps its last entry.
    pub fn insert(&mut self, key: &str, who: Principal) {
        let hash = hash(key);
        self.hashes.retain(|(h, _)| *h != hash);
        self.hashes.push((hash, who));
    }

    /// The entries of `self`, then those of `other` (which win on a key in both).
    fn merged(&self, other: &ApiKeys) -> ApiKeys {
        let mut keys = self.clone();
        for (hash, who) in &other.hashes {
            keys.hashes.retain(|(h, _)| h != hash);
            keys.hashes.push((*hash, who.clone()));
        }
        keys
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

/// The keys in force: the configured list plus the keys file's current
/// entries. A file that fails to parse leaves the previous keys in force
/// (and says why in the log), so a typo cannot lock everyone out.
pub struct KeyRing {
    configured: ApiKeys,
    file: Option<PathBuf>,
    /// Swapped whole on a reload; a lookup holds the lock for an `Arc` clone.
    current: Mutex<Arc<ApiKeys>>,
}

/// How often the keys file is looked at for a change (its size and time).
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl KeyRing {
    /// The configured keys and, when given, the file's; an unreadable or
    /// invalid file is an error here, at start.
    pub fn new(configured: ApiKeys, file: Option<PathBuf>) -> Result<KeyRing, String> {
        let mut keys = configured.clone();
        if let Some(path) = &file {
            keys = keys.merged(&read_file(path)?);
        }
        Ok(KeyRing {
            configured,
            file,
            current: Mutex::new(Arc::new(keys)),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.keys().is_empty()
    }

    /// Who a presented key belongs to (see `ApiKeys::principal`).
    pub fn principal(&self, presented: &str) -> Option<Principal> {
        self.keys().principal(presented).cloned()
    }

    /// Adds a key that lives as long as the process (the development key).
    pub fn insert(&self, key: &str, who: Principal) {
        let mut keys = (*self.keys()).clone();
        keys.insert(key, who);
        *crate::lock(&self.current) = Arc::new(keys);
    }

    fn keys(&self) -> Arc<ApiKeys> {
        crate::lock(&self.current).clone()
    }

    /// Reads the keys file again; on an error the keys in force stay.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(path) = &self.file else {
            return Ok(self.keys().hashes.len());
        };
        let keys = self.configured.merged(&read_file(path)?);
        let count = keys.hashes.len();
        *crate::lock(&self.current) = Arc::new(keys);
        Ok(count)
    }

    /// Reloads the keys file on SIGHUP and when it changes, until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(path) = self.file.clone() else {
            return;
        };
        let mut hangups =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(FILE_CHECK_INTERVAL);
        let mut seen = stamp(&path);
        loop {
            let why = tokio::select! {
                _ = tick.tick() => {
                    let now = stamp(&path);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    "the file changed"
                }
                Some(()) = async { hangups.as_mut()?.recv().await } => "SIGHUP",
                () = shutdown.cancelled() => return,
            };
            match self.reload() {
                Ok(keys) => info!(keys, file = %path.display(), why, "API keys reloaded"),
                Err(e) => warn!(error = %e, file = %path.display(), why,
                    "API keys file not reloaded; the keys in force stay"),
            }
        }
    }
}

fn read_file(path: &Path) -> Result<ApiKeys, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the API keys file {}: {e}", path.display()))?;
    ApiKeys::parse_file(&text).map_err(|e| format!("the API keys file {}: {e}", path.display()))
}

/// What tells a changed file from an unchanged one without reading it.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
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
    fn a_keys_file_takes_hashes_comments_and_names_its_bad_line() {
        let digest = hex::encode(hash("key-in-hash-form"));
        let text =
            format!("# ops keys\n\nkey-number-1=ann:acme:query\nsha256:{digest}=olga:acme:ops\n");
        let keys = ApiKeys::parse_file(&text).unwrap();
        assert_eq!(keys.principal("key-number-1").unwrap().user, "ann");
        assert_eq!(keys.principal("key-in-hash-form").unwrap().role, Role::Ops);
        let error =
            ApiKeys::parse_file("key-number-1=ann:acme:query\nsha256:beef=x:y:ops").unwrap_err();
        assert!(error.starts_with("line 2:"), "{error}");
    }

    #[test]
    fn a_key_ring_reloads_its_file_and_keeps_its_keys_on_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "key-number-1=ann:acme:query\n").unwrap();
        let configured = ApiKeys::parse("key-number-9=zed:globex:ops").unwrap();
        let ring = KeyRing::new(configured, Some(path.clone())).unwrap();
        assert!(ring.principal("key-number-1").is_some());
        std::fs::write(&path, "key-number-2=bob:acme:query\n").unwrap();
        assert_eq!(ring.reload(), Ok(2));
        assert!(ring.principal("key-number-1").is_none(), "revoked");
        assert!(ring.principal("key-number-2").is_some());
        assert!(
            ring.principal("key-number-9").is_some(),
            "the configured list stays"
        );
        std::fs::write(&path, "not an entry\n").unwrap();
        assert!(ring.reload().is_err());
        assert!(
            ring.principal("key-number-2").is_some(),
            "a bad file changes nothing"
        );
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
