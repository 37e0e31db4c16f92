//! Property tests for the whole pipeline: canonical text round-trips,
//! fingerprints ignore every meaning-preserving rewrite, and no input makes
//! the parser panic. Predicates are generated over the shared test schema.

mod generators;
mod noisy;

use proptest::prelude::*;

use crate::filter::canonical::{canonicalize, print};
use crate::filter::validate::tests::test_schema;
use crate::filter::{Filter, FingerprintInput, Limits, Order, RangeKey, RegexCache, compile};

use generators::predicate;
use noisy::Noisy;

/// Generated predicates are small, but noise (parentheses, double negation)
/// multiplies depth; these limits keep the properties about canonical form,
/// not about limits.
fn roomy() -> Limits {
    Limits {
        max_length: 1 << 20,
        max_depth: 512,
        max_nodes: 100_000,
        ..Limits::default()
    }
}

fn compile_roomy(text: &str) -> Result<Filter, String> {
    compile(text, &test_schema(), &roomy(), &RegexCache::default())
        .map_err(|e| format!("{text:?}: {e}"))
}

fn fingerprint_of(filter: &Filter) -> crate::filter::Fingerprint {
    let fields = ["status".to_string(), "ts".to_string()];
    FingerprintInput {
        tenant: "t",
        source: "s",
        schema_version: "1",
        filter,
        range: RangeKey::Absolute {
            from_us: 0,
            to_us: 10,
        },
        fields: &fields,
        order: Order::Asc,
        max_rows: 10,
    }
    .fingerprint()
}

const TOKENS: &[&str] = &[
    "(",
    ")",
    "and",
    "OR",
    "Not",
    "not",
    "in",
    "contains",
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "~",
    "!~",
    ",",
    "status",
    "service",
    "endpoint",
    "ts",
    "cached",
    "latency_ms",
    "foo",
    "\"x\"",
    "\"",
    "\\",
    "\\u{",
    "}",
    "1",
    "-",
    "-7",
    "1.5",
    "1e",
    "2.5E-3",
    "99999999999999999999",
    "true",
    "FALSE",
    "\"2026-11-01T00:00:00Z\"",
    "\"(\"",
    "é",
    "\n",
    "\"日本\"",
    "\"a\\nb\"",
];

proptest! {
    #[test]
    fn canonical_text_round_trips(p in predicate()) {
        let canon = canonicalize(&p);
        let text = print(&canon);
        let compiled = compile_roomy(&text);
        prop_assert!(compiled.is_ok(), "{:?}", compiled.err());
        if let Ok(f) = compiled {
            prop_assert_eq!(f.predicate(), &canon, "text {:?}", text);
            prop_assert_eq!(f.canonical(), text.as_str());
        }
        prop_assert_eq!(canonicalize(&canon), canon);
    }

    #[test]
    fn equivalent_spellings_share_canonical_text_and_fingerprint(
        p in predicate(),
        seed in any::<u64>(),
    ) {
        let plain = compile_roomy(&print(&canonicalize(&p)));
        let mut noisy = Noisy::new(seed);
        noisy.predicate(&p);
        let rewritten = compile_roomy(&noisy.out);
        prop_assert!(plain.is_ok(), "{:?}", plain.as_ref().err());
        prop_assert!(rewritten.is_ok(), "{:?}", rewritten.as_ref().err());
        if let (Ok(a), Ok(b)) = (plain, rewritten) {
            prop_assert_eq!(a.canonical(), b.canonical(), "noisy text {:?}", noisy.out);
            prop_assert_eq!(fingerprint_of(&a), fingerprint_of(&b));
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".*") {
        check_total(&text);
    }

    #[test]
    fn token_soup_never_panics(
        tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..40),
        spaced in any::<bool>(),
    ) {
        let text = tokens.join(if spaced { " " } else { "" });
        check_total(&text);
    }
}

/// Any text either compiles — and then its canonical text compiles to the
/// same filter — or fails with a sane position, under roomy and tight limits.
fn check_total(text: &str) {
    let tight = Limits {
        max_length: 64,
        max_depth: 3,
        max_nodes: 6,
        max_in_list: 2,
        regex_size_limit: 10_000,
    };
    for limits in [Limits::default(), tight] {
        match compile(text, &test_schema(), &limits, &RegexCache::default()) {
            Ok(f) => {
                let again = compile_roomy(f.canonical());
                assert_eq!(again.as_ref().ok(), Some(&f), "{text:?}");
            }
            Err(e) => {
                assert!(e.line >= 1 && e.column >= 1, "{text:?}: {e}");
                assert!(!e.message.is_empty());
            }
        }
    }
}
