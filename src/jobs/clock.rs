//! The wall clock a job's life reads: submission (which resolves relative
//! time ranges and judges a live job's staleness), the worker's timestamps
//! and expiry. The app owns one; tests hand it a manual clock to move time
//! across minute and staleness boundaries without waiting for them.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The system clock, or a manual one a test sets.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(ManualClock),
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(clock) => clock.now(),
        }
    }
}

/// A clock that stands still until it is moved; clones share one time.
/// Kept in microseconds, the resolution the service keeps times in.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(at.timestamp_micros())))
    }

    pub fn now(&self) -> DateTime<Utc> {
        let micros = self.0.load(Ordering::SeqCst);
        // Only `new` and `set` store, both from a `DateTime`, and `advance`
        // saturates at its bounds, so this always converts.
        DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    pub fn set(&self, at: DateTime<Utc>) {
        self.0.store(at.timestamp_micros(), Ordering::SeqCst);
    }

    /// Moves the clock forward by `by` (up to the latest time chrono holds).
    pub fn advance(&self, by: Duration) {
        let later = TimeDelta::from_std(by)
            .ok()
            .and_then(|by| self.now().checked_add_signed(by))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.set(later);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let start = DateTime::parse_from_rfc3339("2026-12-06T12:00:59Z")
            .unwrap()
            .with_timezone(&Utc);
        let hand = ManualClock::new(start);
        let clock = Clock::Manual(hand.clone());
        assert_eq!(clock.now(), start);
        hand.advance(Duration::from_secs(2));
        assert_eq!(clock.now().to_rfc3339(), "2026-12-06T12:01:01+00:00");
        hand.advance(Duration::MAX);
        assert!(clock.now() > start + TimeDelta::days(365 * 100_000));
    }
}
