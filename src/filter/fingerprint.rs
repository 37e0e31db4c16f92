//! The identity of a query's result set, used to share and cache results:
//! two queries with the same fingerprint must return the same rows, and two
//! that could return different rows must not share one. It is SHA-256 over an
//! unambiguous, versioned encoding of every input that affects the rows.
//!
//! A relative range (`last 7d`) is the one input taken by its expression
//! rather than its value: two refreshes of "the last 7 days" ask the same
//! question at different moments, and share a job while its answer is
//! fresh enough for the later one (decided at dedup, by `maxStaleness`).

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::filter::{Filter, TimeRange};
use crate::model::{Fingerprint, Order};

/// Bumped whenever the encoding below, or the canonical filter text, changes
/// meaning, so old fingerprints can never collide with new ones.
const VERSION_TAG: &[u8] = b"pseudostream-fp-v1";

/// Everything that decides which rows a query returns.
#[derive(Debug, Clone, Copy)]
pub struct FingerprintInput<'a> {
    /// Results are never shared across tenants, even for identical queries.
    pub tenant: &'a str,
    /// A different source is different data.
    pub source: &'a str,
    /// The same filter text can type differently, or the data change shape,
    /// when the source's schema changes.
    pub schema_version: &'a str,
    /// Hashed as canonical text, so equivalent spellings share results.
    pub filter: &'a Filter,
    /// The time range bounds the rows.
    pub range: RangeKey,
    /// The projection changes every returned row, and its order the order of
    /// each row's fields; a repeated name does not (the first one counts).
    pub fields: &'a [String],
    /// Decides which rows come first, and so which survive `max_rows`.
    pub order: Order,
    /// Truncation changes the result set.
    pub max_rows: u64,
}

/// How a time range enters a fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeKey {
    /// `from`/`to`: exactly the rows of `[from_us, to_us)`, so only the same
    /// ends share.
    Absolute { from_us: i64, to_us: i64 },
    /// `last`: its span, whatever the ends it resolved to.
    Last(Duration),
}

impl From<&TimeRange> for RangeKey {
    fn from(range: &TimeRange) -> RangeKey {
        match range.last {
            Some(span) => RangeKey::Last(span),
            None => RangeKey::Absolute {
                from_us: range.from_us,
                to_us: range.to_us,
            },
        }
    }
}

impl FingerprintInput<'_> {
    /// Each part is length-prefixed (u64 big-endian length, then bytes) so
    /// that no two different inputs encode to the same bytes: without the
    /// prefix, tenant "ab" + source "c" would equal tenant "a" + source "bc".
    pub fn fingerprint(&self) -> Fingerprint {
        let mut h = Sha256::new();
        part(&mut h, VERSION_TAG);
        part(&mut h, self.tenant.as_bytes());
        part(&mut h, self.source.as_bytes());
        part(&mut h, self.schema_version.as_bytes());
        part(&mut h, self.filter.canonical().as_bytes());
        match self.range {
            RangeKey::Absolute { from_us, to_us } => {
                part(&mut h, &from_us.to_be_bytes());
                part(&mut h, &to_us.to_be_bytes());
            }
            // The tag's length (4) differs from an absolute range's first
            // part (8), so no relative range encodes like an absolute one.
            RangeKey::Last(span) => {
                part(&mut h, b"last");
                part(&mut h, &span.as_micros().to_be_bytes());
            }
        }
        let mut fields: Vec<&str> = Vec::with_capacity(self.fields.len());
        for f in self.fields {
            if !fields.contains(&f.as_str()) {
                fields.push(f);
            }
        }
        h.update((fields.len() as u64).to_be_bytes());
        for f in fields {
            part(&mut h, f.as_bytes());
        }
        let order: &[u8] = match self.order {
            Order::Asc => b"asc",
            Order::Desc => b"desc",
        };
        part(&mut h, order);
        part(&mut h, &self.max_rows.to_be_bytes());
        Fingerprint(h.finalize().into())
    }
}

fn part(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::validate::tests::test_schema;
    use crate::filter::{Limits, RegexCache, compile};
    use crate::model::ParseFingerprintError;

    fn filter(text: &str) -> Filter {
        match compile(
            text,
            &test_schema(),
            &Limits::default(),
            &RegexCache::default(),
        ) {
            Ok(f) => f,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    fn base<'a>(filter: &'a Filter, fields: &'a [String]) -> FingerprintInput<'a> {
        FingerprintInput {
            tenant: "acme",
            source: "logs",
            schema_version: "3",
            filter,
            range: RangeKey::Absolute {
                from_us: 0,
                to_us: 1_000_000,
            },
            fields,
            order: Order::Desc,
            max_rows: 100,
        }
    }

    #[test]
    fn hex_display_parse_serde() {
        let fields = vec!["status".to_string()];
        let f = filter("status = 500");
        let fp = base(&f, &fields).fingerprint();
        let text = fp.to_string();
        assert_eq!(text.len(), 64);
        assert!(
            text.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(format!("{fp:?}"), text);
        assert_eq!(text.parse::<Fingerprint>(), Ok(fp));
        assert_eq!("zz".parse::<Fingerprint>(), Err(ParseFingerprintError));
        assert!(text[..62].parse::<Fingerprint>().is_err());
        let json = serde_json::to_string(&fp).unwrap_or_default();
        assert_eq!(json, format!("\"{text}\""));
        let back: Result<Fingerprint, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(fp));
        assert!(serde_json::from_str::<Fingerprint>("\"nope\"").is_err());
    }

    #[test]
    fn fields_order_matters_and_repeats_do_not() {
        let f = filter("status = 500");
        let a = vec!["status".to_string(), "service".to_string()];
        let b = vec![
            "status".to_string(),
            "service".to_string(),
            "status".to_string(),
        ];
        let c = vec!["service".to_string(), "status".to_string()];
        assert_eq!(base(&f, &a).fingerprint(), base(&f, &b).fingerprint());
        assert_ne!(base(&f, &a).fingerprint(), base(&f, &c).fingerprint());
    }

    #[test]
    fn equivalent_filters_share_a_fingerprint() {
        let fields = vec!["status".to_string()];
        let a = filter("status = 500 and service in (\"a\", \"b\")");
        let b = filter("service in (\"b\",\"a\",\"a\") AND (status = 500)");
        assert_eq!(
            base(&a, &fields).fingerprint(),
            base(&b, &fields).fingerprint()
        );
    }

    #[test]
    fn different_inputs_give_different_fingerprints() {
        let fields = vec!["status".to_string()];
        let other_fields = vec!["status".to_string(), "service".to_string()];
        let f500 = filter("status = 500");
        let f501 = filter("status = 501");
        let fand = filter("status = 500 and cached = true");
        let for_ = filter("status = 500 or cached = true");
        let fnot = filter("not status = 500");
        let fne = filter("status != 500");
        let b = base(&f500, &fields);
        let variants = [
            b,
            base(&f501, &fields),
            base(&fand, &fields),
            base(&for_, &fields),
            base(&fnot, &fields),
            base(&fne, &fields),
            FingerprintInput {
                tenant: "acme2",
                ..b
            },
            FingerprintInput {
                source: "logs2",
                ..b
            },
            FingerprintInput {
                schema_version: "4",
                ..b
            },
            FingerprintInput {
                range: RangeKey::Absolute {
                    from_us: 1,
                    to_us: 1_000_000,
                },
                ..b
            },
            FingerprintInput {
                range: RangeKey::Absolute {
                    from_us: 0,
                    to_us: 999_999,
                },
                ..b
            },
            FingerprintInput {
                range: RangeKey::Last(Duration::from_secs(1)),
                ..b
            },
            FingerprintInput {
                range: RangeKey::Last(Duration::from_secs(2)),
                ..b
            },
            FingerprintInput {
                fields: &other_fields,
                ..b
            },
            FingerprintInput { fields: &[], ..b },
            FingerprintInput {
                order: Order::Asc,
                ..b
            },
            FingerprintInput { max_rows: 101, ..b },
            // Shifting bytes between adjacent parts must not collide.
            FingerprintInput {
                tenant: "acm",
                source: "elogs",
                ..b
            },
        ];
        let mut fps: Vec<Fingerprint> = variants.iter().map(|v| v.fingerprint()).collect();
        fps.sort();
        fps.dedup();
        assert_eq!(fps.len(), variants.len());
    }

    #[test]
    fn a_relative_range_is_taken_by_its_span_not_its_ends() {
        let fields = vec!["status".to_string()];
        let f = filter("status = 500");
        let at = |now: &str| {
            let now = chrono::DateTime::parse_from_rfc3339(now).unwrap().to_utc();
            let max = Duration::from_secs(90 * 86_400);
            let range = crate::filter::time_range::resolve(None, None, Some("7d"), now, max);
            FingerprintInput {
                range: RangeKey::from(&range.unwrap()),
                ..base(&f, &fields)
            }
            .fingerprint()
        };
        assert_eq!(at("2026-12-06T12:00:59Z"), at("2026-12-06T12:01:01Z"));
        assert_eq!(at("2026-12-06T12:00:59Z"), at("2026-12-07T08:00:00Z"));
    }

    #[test]
    fn stable_across_releases() {
        // Pinned: changing this value invalidates every cached result and
        // needs a new VERSION_TAG.
        let fields = vec!["status".to_string()];
        let f = filter("status = 500");
        insta::assert_snapshot!(base(&f, &fields).fingerprint().to_string(), @"a4c4fdff11bf7c41505f2a74cfc463f7b9cff8be484be8f4d44b676e43447433");
    }
}
