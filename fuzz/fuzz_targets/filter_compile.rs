//! Arbitrary UTF-8 through `filter::compile` against a fixed schema with the
//! default limits: it must never panic, must answer quickly (the limits bound
//! its work), and a filter it accepts must compile again from its canonical
//! form to the same canonical form. That second compile lifts the length
//! limit: it bounds what a client sends, and the canonical form escapes
//! control characters (`\u{0}` is 6 characters), so it may legitimately be
//! longer (the fuzzer's first finding, kept in fuzz/regressions/).

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pseudostream_fuzz::filter::{FieldType, Limits, RegexCache, Schema, compile};

/// Far above what any input within the limits needs (microseconds to a few
/// milliseconds); only a runaway (a quadratic path, a regex blow-up) gets here.
const BOUND: Duration = Duration::from_secs(2);

fn schema() -> Schema {
    // The demo source's kinds of field: one of each type.
    Schema {
        fields: vec![
            ("ts".into(), FieldType::Time),
            ("service".into(), FieldType::String),
            ("endpoint".into(), FieldType::String),
            ("status".into(), FieldType::Integer),
            ("latency_ms".into(), FieldType::Float),
            ("cached".into(), FieldType::Boolean),
        ],
        time_column: "ts".into(),
    }
}

fuzz_target!(|text: &str| {
    let schema = schema();
    let limits = Limits::default();
    let regexes = RegexCache::default();
    let started = Instant::now();
    let compiled = compile(text, &schema, &limits, &regexes);
    let took = started.elapsed();
    assert!(
        took < BOUND,
        "compile took {took:?} on {} bytes",
        text.len()
    );
    if let Ok(filter) = compiled {
        let unbounded = Limits {
            max_length: usize::MAX,
            ..limits
        };
        let again = compile(filter.canonical(), &schema, &unbounded, &regexes).unwrap_or_else(|e| {
            panic!(
                "canonical form {:?} does not compile: {e}",
                filter.canonical()
            )
        });
        assert_eq!(
            again.canonical(),
            filter.canonical(),
            "canonical form is not a fixed point"
        );
    }
});
