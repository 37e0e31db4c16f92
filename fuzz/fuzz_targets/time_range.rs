//! Arbitrary `timeRange` inputs through `filter::time_range::resolve`: the
//! three optional strings, "now" and the configured maximum. It must never
//! panic, and a range it accepts must be non-empty, no longer than the
//! maximum, and within the years 1 to 9999 (so it prints as RFC 3339).

#![no_main]

use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use libfuzzer_sys::fuzz_target;
use pseudostream_fuzz::filter::time_range::resolve;

/// `from`, `to`, `last`, "now" in seconds, the maximum in seconds.
type Input<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, i64, u64);

fuzz_target!(|input: Input<'_>| {
    let (from, to, last, now_s, max_s) = input;
    // "Now" anywhere a clock can say; the maximum anything a config can say.
    let Some(now) = DateTime::<Utc>::from_timestamp(now_s % 253_402_300_799, 0) else {
        return;
    };
    let max = Duration::from_secs(max_s);
    if let Ok(range) = resolve(from, to, last, now, max) {
        assert!(range.from_us < range.to_us, "{input:?} gave {range:?}");
        let span = Duration::from_micros((range.to_us - range.from_us) as u64);
        assert!(span <= max, "{input:?}: {span:?} over {max:?}");
        for us in [range.from_us, range.to_us] {
            let t = DateTime::<Utc>::from_timestamp_micros(us).expect("representable");
            assert!((1..=9999).contains(&t.year()), "{input:?}: {t}");
        }
    }
});
