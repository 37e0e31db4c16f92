//! The last hour of this process, a minute at a time, for the ops page:
//! first-chunk latencies (in the metrics' latency buckets) and submissions
//! turned away, as 429 (rate limited) or 503 (pool full, result store full,
//! shutting down, audit down). Prometheus keeps the long history; this is
//! what a page can show without one. Each instance counts its own.
//!
//! A ring of 60 slots, each stamped with the minute it counts: a slot is
//! cleared when a new minute lands on it, and a read skips slots older
//! than the hour, so nothing needs a timer.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{LATENCY_BUCKETS, bucket_of};
use crate::lock;

const MINUTES: usize = 60;
/// The latency buckets plus the one above the last bound.
const SLOTS: usize = LATENCY_BUCKETS.len() + 1;

#[derive(Debug, Default, Clone, Copy)]
struct Minute {
    /// Minutes since the Unix epoch; 0 for a slot never written.
    stamp: i64,
    first_chunks: [u64; SLOTS],
    rate_limited: u64,
    unavailable: u64,
}

#[derive(Debug)]
pub struct LastHour {
    ring: Mutex<[Minute; MINUTES]>,
}

impl Default for LastHour {
    fn default() -> Self {
        LastHour {
            ring: Mutex::new([Minute::default(); MINUTES]),
        }
    }
}

/// The hour, as the ops overview shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LastHourView {
    /// Upper bounds of the latency buckets, in seconds; `counts` has one
    /// more, for latencies above the last bound.
    pub bucket_bounds_seconds: Vec<f64>,
    /// First chunks of the hour by latency bucket.
    pub first_chunk_counts: Vec<u64>,
    /// The 60 minutes of the hour, oldest first; the last one is running.
    pub minutes: Vec<MinuteView>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MinuteView {
    pub start: DateTime<Utc>,
    pub first_chunks: u64,
    /// Submissions answered 429.
    pub rate_limited: u64,
    /// Submissions answered 503.
    pub unavailable: u64,
}

fn minute_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(60)
}

impl LastHour {
    fn with_minute(&self, at: DateTime<Utc>, change: impl FnOnce(&mut Minute)) {
        let stamp = minute_of(at);
        let mut ring = lock(&self.ring);
        let slot = &mut ring[stamp.rem_euclid(MINUTES as i64) as usize];
        if slot.stamp != stamp {
            *slot = Minute {
                stamp,
                ..Minute::default()
            };
        }
        change(slot);
    }

    pub fn first_chunk(&self, at: DateTime<Utc>, waited: Duration) {
        self.with_minute(at, |m| m.first_chunks[bucket_of(waited)] += 1);
    }

    /// A submission turned away with `status` (429, else counted as 503).
    pub fn rejected(&self, at: DateTime<Utc>, status: u16) {
        self.with_minute(at, |m| match status {
            429 => m.rate_limited += 1,
            _ => m.unavailable += 1,
        });
    }

    /// The 60 minutes up to and including the one `now` is in.
    pub fn view(&self, now: DateTime<Utc>) -> LastHourView {
        let ring = *lock(&self.ring);
        let current = minute_of(now);
        let mut counts = vec![0; SLOTS];
        let minutes = (current - MINUTES as i64 + 1..=current)
            .map(|stamp| {
                let slot = ring[stamp.rem_euclid(MINUTES as i64) as usize];
                let slot = if slot.stamp == stamp {
                    slot
                } else {
                    Minute::default()
                };
                for (total, n) in counts.iter_mut().zip(slot.first_chunks) {
                    *total += n;
                }
                MinuteView {
                    start: DateTime::<Utc>::UNIX_EPOCH + TimeDelta::minutes(stamp),
                    first_chunks: slot.first_chunks.iter().sum(),
                    rate_limited: slot.rate_limited,
                    unavailable: slot.unavailable,
                }
            })
            .collect();
        LastHourView {
            bucket_bounds_seconds: LATENCY_BUCKETS.to_vec(),
            first_chunk_counts: counts,
            minutes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64, second: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH
            + TimeDelta::minutes(1_000_000 + minute)
            + TimeDelta::seconds(second)
    }

    #[test]
    fn counts_land_in_their_minute_and_bucket() {
        let hour = LastHour::default();
        hour.first_chunk(at(0, 5), Duration::from_millis(3));
        hour.first_chunk(at(0, 59), Duration::from_millis(40));
        hour.first_chunk(at(2, 0), Duration::from_secs(60));
        hour.rejected(at(2, 1), 429);
        hour.rejected(at(2, 2), 503);
        hour.rejected(at(2, 3), 503);
        let view = hour.view(at(2, 30));
        assert_eq!(view.minutes.len(), 60);
        let last = &view.minutes[59];
        assert_eq!(last.start, at(2, 0));
        assert_eq!(
            (last.first_chunks, last.rate_limited, last.unavailable),
            (1, 1, 2)
        );
        assert_eq!(view.minutes[57].first_chunks, 2);
        assert_eq!(view.minutes[58].first_chunks, 0);
        assert_eq!(
            view.first_chunk_counts.len(),
            view.bucket_bounds_seconds.len() + 1
        );
        assert_eq!(view.first_chunk_counts[2], 1, "3 ms is in the 5 ms bucket");
        assert_eq!(
            view.first_chunk_counts[5], 1,
            "40 ms is in the 50 ms bucket"
        );
        assert_eq!(
            *view.first_chunk_counts.last().unwrap(),
            1,
            "a minute is above 30 s"
        );
    }

    #[test]
    fn an_hour_later_a_minute_is_forgotten() {
        let hour = LastHour::default();
        hour.rejected(at(0, 0), 429);
        assert_eq!(hour.view(at(59, 59)).minutes[0].rate_limited, 1);
        assert!(
            hour.view(at(60, 0))
                .minutes
                .iter()
                .all(|m| m.rate_limited == 0)
        );
        // The slot is reused by the minute an hour on, starting from zero.
        hour.rejected(at(60, 1), 503);
        let view = hour.view(at(60, 2));
        assert_eq!(
            (view.minutes[59].rate_limited, view.minutes[59].unavailable),
            (0, 1)
        );
    }
}
