use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use chrono::TimeDelta;
use tokio::sync::{Notify, Semaphore};

use super::*;
use crate::audit::{AuditEntry, AuditQuery};
use crate::model::{JobId, JobRecord};

/// A store of rejection rows only: it adds counts like the real ones, can
/// be made to fail, and can hold a write until a permit is given.
#[derive(Default)]
struct Rows {
    rows: Mutex<Vec<RejectionCount>>,
    failing: AtomicBool,
    gate: Option<Arc<Semaphore>>,
    /// Told when a write reaches the store (before the gate).
    arrived: Notify,
}

impl Rows {
    fn count(&self, user: &str, reason: &str) -> i64 {
        let rows = self.rows.lock().unwrap();
        rows.iter()
            .filter(|r| r.user_id == user && r.reason == reason)
            .map(|r| r.count)
            .sum()
    }
}

#[async_trait]
impl AuditLog for Rows {
    async fn record_rejections(&self, counts: &[RejectionCount]) -> Result<(), AuditError> {
        self.arrived.notify_one();
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(AuditError::Unavailable("down".into()));
        }
        let mut rows = self.rows.lock().unwrap();
        for c in counts {
            let same = |r: &&mut RejectionCount| {
                (r.minute, &r.tenant, &r.user_id, &r.reason)
                    == (c.minute, &c.tenant, &c.user_id, &c.reason)
            };
            match rows.iter_mut().find(same) {
                Some(row) => row.count += c.count,
                None => rows.push(c.clone()),
            }
        }
        Ok(())
    }
    async fn rejections(
        &self,
        _: &str,
        _: DateTime<Utc>,
    ) -> Result<Vec<RejectionCount>, AuditError> {
        Ok(self.rows.lock().unwrap().clone())
    }
    async fn record_submission(&self, _: &AuditEntry) -> Result<(), AuditError> {
        unimplemented!()
    }
    async fn record_progress(&self, _: &JobRecord) -> Result<(), AuditError> {
        unimplemented!()
    }
    async fn record_expired(&self, _: JobId, _: DateTime<Utc>) -> Result<(), AuditError> {
        unimplemented!()
    }
    async fn record_interrupted(&self, _: DateTime<Utc>) -> Result<u64, AuditError> {
        unimplemented!()
    }
    async fn search(&self, _: &AuditQuery) -> Result<Vec<AuditEntry>, AuditError> {
        unimplemented!()
    }
    async fn prune(&self, _: DateTime<Utc>, _: u32) -> Result<u64, AuditError> {
        unimplemented!()
    }
    async fn ready(&self) -> Result<(), AuditError> {
        Ok(())
    }
}

fn minute() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn tally(rows: &Arc<Rows>) -> RejectionTally {
    RejectionTally::new(rows.clone(), Duration::from_secs(5))
}

#[tokio::test]
async fn counts_go_by_minute_user_and_reason_with_the_first_filter() {
    let rows = Arc::new(Rows::default());
    let tally = tally(&rows);
    let t = minute();
    let secs = TimeDelta::seconds;
    for (at, user, reason, filter) in [
        (t + secs(1), "ann", "rate_limited", "status = 1"),
        (t + secs(30), "ann", "rate_limited", "status = 2"),
        (t + secs(59), "ann", "rate_limited", "status = 3"),
        (t + secs(59), "ann", "pool_exhausted", "status = 4"),
        (t + secs(60), "ann", "rate_limited", "status = 5"),
        (t + secs(2), "bob", "rate_limited", "status = 6"),
    ] {
        assert_eq!(
            tally.record(at, "acme", user, reason, filter),
            Tallied::AsUser
        );
    }
    assert_eq!(tally.pending(), 4);
    tally.flush().await.unwrap();
    assert_eq!(tally.pending(), 0);
    let mut written = rows.rows.lock().unwrap().clone();
    written
        .sort_by(|a, b| (a.minute, &a.user_id, &a.reason).cmp(&(b.minute, &b.user_id, &b.reason)));
    let summary: Vec<_> = written
        .iter()
        .map(|r| {
            (
                (r.minute - t).num_seconds(),
                r.user_id.as_str(),
                r.reason.as_str(),
                r.count,
                r.sample_filter.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (0, "ann", "pool_exhausted", 1, "status = 4"),
            (0, "ann", "rate_limited", 3, "status = 1"),
            (0, "bob", "rate_limited", 1, "status = 6"),
            (60, "ann", "rate_limited", 1, "status = 5"),
        ]
    );
    // Nothing waiting: a flush writes nothing.
    tally.flush().await.unwrap();
    assert_eq!(rows.count("ann", "rate_limited"), 4);
}

#[tokio::test]
async fn past_the_bound_users_are_counted_together_then_not_at_all() {
    let rows = Arc::new(Rows::default());
    let tally = tally(&rows);
    let t = minute();
    let count = |at, user: &str| tally.record(at, "acme", user, "rate_limited", "x");
    for n in 0..MAX_KEYS {
        assert_eq!(count(t, &format!("user-{n}")), Tallied::AsUser);
    }
    // A user already counted still counts as themselves; a new one does not.
    assert_eq!(count(t, "user-7"), Tallied::AsUser);
    assert_eq!(count(t, "eve"), Tallied::AsOther);
    assert_eq!(count(t, "fay"), Tallied::AsOther);
    // `(other)` of further minutes, up to its own bound.
    for n in 1..MAX_OTHER_KEYS {
        assert_eq!(
            count(t + TimeDelta::minutes(n as i64), "eve"),
            Tallied::AsOther
        );
    }
    assert_eq!(tally.pending(), MAX_KEYS + MAX_OTHER_KEYS);
    let later = t + TimeDelta::days(1);
    assert_eq!(count(later, "eve"), Tallied::Dropped);
    assert_eq!(count(t, "gil"), Tallied::AsOther);

    tally.flush().await.unwrap();
    assert_eq!(rows.count("user-7", "rate_limited"), 2);
    assert_eq!(
        rows.count(OTHER_USER, "rate_limited"),
        3 + (MAX_OTHER_KEYS as i64 - 1)
    );
    // Written, the bound is free again.
    assert_eq!(count(later, "eve"), Tallied::AsUser);
}

#[tokio::test]
async fn a_failed_flush_keeps_its_counts_for_the_next() {
    let rows = Arc::new(Rows::default());
    let tally = tally(&rows);
    let t = minute();
    rows.failing.store(true, Ordering::SeqCst);
    tally.record(t, "acme", "ann", "rate_limited", "first");
    tally.record(t, "acme", "ann", "rate_limited", "second");
    assert!(tally.flush().await.is_err());
    tally.record(t, "acme", "ann", "rate_limited", "third");
    tally.record(t, "acme", "ann", "shutting_down", "fourth");
    assert!(tally.flush().await.is_err());
    rows.failing.store(false, Ordering::SeqCst);
    tally.flush().await.unwrap();
    assert_eq!(tally.pending(), 0);
    assert_eq!(rows.count("ann", "rate_limited"), 3);
    assert_eq!(rows.count("ann", "shutting_down"), 1);
    let written = rows.rows.lock().unwrap().clone();
    assert!(written.iter().any(|r| r.sample_filter == "first"));
}

#[tokio::test]
async fn rejections_counted_during_a_flush_wait_for_the_next() {
    let gate = Arc::new(Semaphore::new(0));
    let rows = Arc::new(Rows {
        gate: Some(gate.clone()),
        ..Rows::default()
    });
    let tally = Arc::new(tally(&rows));
    let t = minute();
    tally.record(t, "acme", "ann", "rate_limited", "x");
    let flushing = tokio::spawn({
        let tally = tally.clone();
        async move { tally.flush().await }
    });
    // The flush has its snapshot (one) and waits at the store.
    rows.arrived.notified().await;
    tally.record(t, "acme", "ann", "rate_limited", "x");
    tally.record(t, "acme", "bob", "rate_limited", "x");
    gate.add_permits(1);
    flushing.await.unwrap().unwrap();
    assert_eq!(rows.count("ann", "rate_limited"), 1);
    assert_eq!(tally.pending(), 2);
    gate.add_permits(1);
    tally.flush().await.unwrap();
    assert_eq!(rows.count("ann", "rate_limited"), 2);
    assert_eq!(rows.count("bob", "rate_limited"), 1);
    assert_eq!(tally.pending(), 0);
}

#[test]
fn samples_are_cut_on_a_character_boundary_without_nuls() {
    assert_eq!(sample("status = 500"), "status = 500");
    assert_eq!(sample("path = \"a\0b\""), "path = \"a\u{FFFD}b\"");
    let long = format!("{}é", "a".repeat(SAMPLE_BYTES - 1));
    assert_eq!(sample(&long), "a".repeat(SAMPLE_BYTES - 1));
    assert_eq!(sample(&"é".repeat(SAMPLE_BYTES)).len(), SAMPLE_BYTES);
}
