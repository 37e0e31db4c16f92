//! The time range given beside a filter: absolute (`from`, `to`: RFC 3339,
//! `from` inclusive, `to` exclusive) or relative (`last`: a duration such as
//! `15m`, `24h`, `7d`), resolved against "now" into a half-open range of
//! microseconds since the epoch. A relative range remembers its span: it is
//! fingerprinted by that expression, not by its ends, so refreshes share a
//! live job while it is fresh enough (`jobs::share`). Pure like the rest of
//! the module: no clock is read here, no arithmetic can overflow, and no
//! input panics.
//!
//! What is refused, each with its own message:
//! - a leap second (`23:59:60`): the sources keep no such instant;
//! - a time outside the years 1 to 9999 once taken to UTC, which could not
//!   be written back as RFC 3339;
//! - `from` at or after `to`, including a range that is empty once both ends
//!   are taken down to the microsecond (times are kept in microseconds;
//!   finer digits are dropped, so `…00.0000009Z` means `…00.000000Z`);
//! - a range longer than the configured maximum.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, DurationRound, TimeDelta, Timelike, Utc};

/// A resolved, half-open time range in microseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from_us: i64,
    pub to_us: i64,
    /// The span of a relative (`last`) range; `None` for `from`/`to`.
    pub last: Option<Duration>,
}

/// Why a time range was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeRangeError {
    #[error(
        "give either `from` and `to` (RFC 3339, e.g. \"2026-11-01T00:00:00Z\") or `last` (e.g. \"7d\")"
    )]
    Shape,
    #[error(
        "`timeRange.{field}` = {text:?} is not an RFC 3339 time ({reason}); write e.g. \"2026-11-01T00:00:00Z\""
    )]
    NotATime {
        field: &'static str,
        text: String,
        reason: String,
    },
    #[error(
        "`timeRange.{field}` = {text:?} is a leap second, which the sources do not record; use the second before or after"
    )]
    LeapSecond { field: &'static str, text: String },
    #[error("`timeRange.{field}` = {text:?} falls outside the years 1 to 9999 (UTC)")]
    YearOutOfRange { field: &'static str, text: String },
    #[error(
        "`timeRange.last` = {text:?} is not a duration ({reason}); write e.g. \"15m\", \"24h\" or \"7d\""
    )]
    NotADuration { text: String, reason: String },
    #[error(
        "`from` ({from}) must be before `to` ({to}); times count to the microsecond, so the range must span at least one"
    )]
    Empty { from: String, to: String },
    #[error(
        "the time range spans {}, more than the allowed {}; narrow `timeRange`",
        HumanDuration(*.requested), HumanDuration(*.max)
    )]
    TooLong { requested: Duration, max: Duration },
}

/// Resolves a request's range. `last` ends at the next whole second after
/// `now` (so its rows include everything already recorded, and its ends
/// read cleanly); `max` is the longest span allowed.
pub fn resolve(
    from: Option<&str>,
    to: Option<&str>,
    last: Option<&str>,
    now: DateTime<Utc>,
    max: Duration,
) -> Result<TimeRange, TimeRangeError> {
    let (from_us, to_us, last) = match (from, to, last) {
        (Some(from), Some(to), None) => (parse_time("from", from)?, parse_time("to", to)?, None),
        (None, None, Some(last)) => relative(last, now, max)?,
        _ => return Err(TimeRangeError::Shape),
    };
    if from_us >= to_us {
        return Err(TimeRangeError::Empty {
            from: micros_rfc3339(from_us),
            to: micros_rfc3339(to_us),
        });
    }
    // Both ends lie within years 1..=9999, so this cannot overflow.
    let span = Duration::from_micros((to_us - from_us).unsigned_abs());
    if span > max {
        return Err(TimeRangeError::TooLong {
            requested: span,
            max,
        });
    }
    Ok(TimeRange {
        from_us,
        to_us,
        last,
    })
}

/// The `last` form: `(to - span, to, span)` with `to` the next whole second.
fn relative(
    text: &str,
    now: DateTime<Utc>,
    max: Duration,
) -> Result<(i64, i64, Option<Duration>), TimeRangeError> {
    let span = parse_duration(text).map_err(|reason| TimeRangeError::NotADuration {
        text: text.to_owned(),
        reason,
    })?;
    if span > max {
        // Refused before any arithmetic, which a span of 300,000 years would overflow.
        return Err(TimeRangeError::TooLong {
            requested: span,
            max,
        });
    }
    let second = TimeDelta::seconds(1);
    let to = now
        .duration_trunc(second)
        .ok()
        .and_then(|t| t.checked_add_signed(second));
    let from = TimeDelta::from_std(span)
        .ok()
        .and_then(|span| to.and_then(|to| to.checked_sub_signed(span)));
    match (from, to) {
        (Some(from), Some(to)) if in_years(from) && in_years(to) => {
            Ok((from.timestamp_micros(), to.timestamp_micros(), Some(span)))
        }
        _ => Err(TimeRangeError::YearOutOfRange {
            field: "last",
            text: text.to_owned(),
        }),
    }
}

/// A duration as the API takes it (`last`, `maxStaleness`): `15m`, `24h`,
/// `7d`, `90s`, `1h 30m`; `0` alone is zero. The error says why not.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

fn parse_time(field: &'static str, text: &str) -> Result<i64, TimeRangeError> {
    let time = DateTime::parse_from_rfc3339(text).map_err(|e| TimeRangeError::NotATime {
        field,
        text: text.to_owned(),
        reason: e.to_string(),
    })?;
    // chrono keeps a leap second as a nanosecond count past 999,999,999.
    if time.nanosecond() >= 1_000_000_000 {
        return Err(TimeRangeError::LeapSecond {
            field,
            text: text.to_owned(),
        });
    }
    let utc = time.with_timezone(&Utc);
    if !in_years(utc) {
        return Err(TimeRangeError::YearOutOfRange {
            field,
            text: text.to_owned(),
        });
    }
    Ok(utc.timestamp_micros())
}

fn in_years(t: DateTime<Utc>) -> bool {
    (1..=9999).contains(&t.year())
}

/// RFC 3339 of a µs timestamp, as the service writes times (UTC, six
/// digits): for messages and for a resolved range's ends, which always
/// convert (they lie within the years 1 to 9999).
pub fn micros_rfc3339(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_else(|| format!("{us} µs since the epoch"))
}

/// A duration as people write it: "100 days", "1 day 6 hours", "90 seconds"
/// becomes "1 minute 30 seconds". Zero parts are left out; below a second,
/// milliseconds and microseconds.
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let micros = self.0.subsec_micros();
        let parts = [
            (secs / 86_400, "day"),
            (secs / 3_600 % 24, "hour"),
            (secs / 60 % 60, "minute"),
            (secs % 60, "second"),
            (u64::from(micros / 1_000), "millisecond"),
            (u64::from(micros % 1_000), "microsecond"),
        ];
        let mut written = false;
        for (n, unit) in parts.into_iter().filter(|(n, _)| *n > 0) {
            if written {
                f.write_str(" ")?;
            }
            let plural = if n == 1 { "" } else { "s" };
            write!(f, "{n} {unit}{plural}")?;
            written = true;
        }
        if !written {
            f.write_str("0 seconds")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: Duration = Duration::from_secs(90 * 86_400);

    /// RFC 3339 shapes with out-of-range fields, years past 9999, leap
    /// seconds, nanoseconds and offsets.
    const TIME_LIKE: &str = "[0-9]{1,5}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})";

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-06T12:00:30Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn absolute(from: &str, to: &str) -> Result<TimeRange, TimeRangeError> {
        resolve(Some(from), Some(to), None, now(), MAX)
    }

    fn last(text: &str) -> Result<TimeRange, TimeRangeError> {
        resolve(None, None, Some(text), now(), MAX)
    }

    #[test]
    fn relative_ranges_end_at_the_next_second_and_keep_their_span() {
        let range = last("1h").unwrap();
        assert_eq!(micros_rfc3339(range.to_us), "2026-12-06T12:00:31.000000Z");
        assert_eq!(micros_rfc3339(range.from_us), "2026-12-06T11:00:31.000000Z");
        assert_eq!(range.last, Some(Duration::from_secs(3600)));
        let now = now() + TimeDelta::microseconds(1);
        let range = resolve(None, None, Some("60m"), now, MAX).unwrap();
        assert_eq!(micros_rfc3339(range.to_us), "2026-12-06T12:00:31.000000Z");
        assert_eq!(range.last, Some(Duration::from_secs(3600)));
        assert_eq!(
            absolute("2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z")
                .unwrap()
                .last,
            None
        );
    }

    #[test]
    fn durations_parse_as_people_write_them() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn refuses_what_it_cannot_represent() {
        let cases: &[(Result<TimeRange, TimeRangeError>, &str)] = &[
            (
                absolute("2026-12-01T23:59:60.5Z", "2026-12-02T00:00:00Z"),
                "is a leap second",
            ),
            (
                absolute(
                    "2026-12-01T00:00:00.0000001Z",
                    "2026-12-01T00:00:00.0000009Z",
                ),
                "must be before `to`",
            ),
            (
                absolute("2026-12-02T00:00:00Z", "2026-12-01T00:00:00Z"),
                "must be before `to`",
            ),
            (
                absolute("9999-12-31T23:00:00-05:00", "9999-12-31T23:30:00-05:00"),
                "outside the years 1 to 9999",
            ),
            (
                absolute("0001-01-01T00:00:00+01:00", "0001-01-01T02:00:00+01:00"),
                "outside the years 1 to 9999",
            ),
            (last("999999999d"), "more than the allowed 90 days"),
            (last("300000y"), "more than the allowed 90 days"),
            (last("soon"), "is not a duration"),
            (last("0s"), "must be before `to`"),
            (resolve(None, None, None, now(), MAX), "give either"),
        ];
        for (result, expected) in cases {
            let message = result.as_ref().unwrap_err().to_string();
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn a_long_range_reads_as_people_write_it() {
        let error = absolute("2026-08-01T00:00:00Z", "2026-11-09T00:00:00Z").unwrap_err();
        insta::assert_snapshot!(error, @"the time range spans 100 days, more than the allowed 90 days; narrow `timeRange`");
        assert_eq!(
            HumanDuration(Duration::from_secs(90_061)).to_string(),
            "1 day 1 hour 1 minute 1 second"
        );
        assert_eq!(
            HumanDuration(Duration::from_micros(1_500)).to_string(),
            "1 millisecond 500 microseconds"
        );
        assert_eq!(HumanDuration(Duration::ZERO).to_string(), "0 seconds");
    }

    #[test]
    fn sub_microsecond_digits_are_dropped() {
        let range = absolute(
            "2026-12-01T00:00:00.0000009Z",
            "2026-12-01T00:00:00.0000019Z",
        );
        let range = range.unwrap();
        assert_eq!(range.to_us - range.from_us, 1);
    }

    proptest! {
        #[test]
        fn never_panics_and_accepts_only_ordered_bounded_ranges(
            from in proptest::option::of(prop_oneof![".{0,40}", TIME_LIKE]),
            to in proptest::option::of(TIME_LIKE),
            last in proptest::option::of("[0-9]{1,25}(ns|us|ms|s|m|h|d|w|y|months)"),
            now_s in -62_135_596_800i64..253_402_300_799,
            max_s in 0u64..u64::MAX,
        ) {
            let now = DateTime::<Utc>::from_timestamp(now_s, 0).unwrap();
            let max = Duration::from_secs(max_s);
            if let Ok(range) = resolve(from.as_deref(), to.as_deref(), last.as_deref(), now, max) {
                prop_assert!(range.from_us < range.to_us);
                prop_assert!(Duration::from_micros((range.to_us - range.from_us) as u64) <= max);
                for us in [range.from_us, range.to_us] {
                    let text = micros_rfc3339(us);
                    prop_assert!(DateTime::parse_from_rfc3339(&text).is_ok(), "{}", text);
                }
            }
        }

        #[test]
        fn absolute_ranges_round_trip(
            from_s in -62_135_596_800i64..253_402_300_700,
            len_us in 1i64..90 * 86_400_000_000,
        ) {
            let from_us = from_s * 1_000_000;
            let to_us = from_us + len_us;
            prop_assume!(DateTime::<Utc>::from_timestamp_micros(to_us).is_some_and(in_years));
            let range = absolute(&micros_rfc3339(from_us), &micros_rfc3339(to_us)).unwrap();
            prop_assert_eq!(range, TimeRange { from_us, to_us, last: None });
        }
    }
}
