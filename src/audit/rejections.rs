//! Submissions turned away (429 rate limited, 503 pool exhausted,
//! overloaded, audit or backend unavailable, shutting down), counted for
//! the audit.
//!
//! A rejection never becomes a job, and a row written per rejection would
//! let a client hammering the API turn each 429 into a database write. So
//! [`RejectionTally`] counts them in memory per UTC minute, tenant, user and
//! reason, with the filter text of the first one, and a background task
//! writes the counts every `PSEUDOSTREAM_REJECTION_FLUSH` (and once more at
//! shutdown) with [`AuditLog::record_rejections`], which adds them to the
//! rows of `audit_rejections`. Counting takes a lock and no I/O; no request
//! waits for a flush.
//!
//! Bounded: at most [`MAX_KEYS`] counts wait at once. Past that, a
//! rejection of a user with no count yet is counted under the user
//! [`OTHER_USER`] of its minute, tenant and reason; past [`MAX_KEYS`] +
//! [`MAX_OTHER_KEYS`] it is not audited at all. [`record`] says which, for
//! the metrics. A flush that fails leaves its counts where they are (new
//! rejections add to them) for the next flush; one that succeeds takes
//! away what it wrote. A flush that times out after its write committed
//! counts those rejections twice: the counts are at least the rejections.
//!
//! [`record`]: RejectionTally::record

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::{AuditError, AuditLog, RejectionCount};

/// Counts (minute, tenant, user, reason) waiting at most before users are
/// counted together under [`OTHER_USER`].
pub const MAX_KEYS: usize = 10_000;
/// Counts of [`OTHER_USER`] waiting at most on top of [`MAX_KEYS`]; past
/// them a rejection is not audited.
pub const MAX_OTHER_KEYS: usize = 1_000;
/// The user the rejections of users past [`MAX_KEYS`] are counted under.
pub const OTHER_USER: &str = "(other)";
/// The longest sample filter kept, in bytes (cut on a character boundary):
/// a submission refused while shutting down was not parsed, so its filter
/// may be as long as the request body.
pub const SAMPLE_BYTES: usize = 512;
/// The shortest interval between flushes.
const MIN_FLUSH_EVERY: Duration = Duration::from_millis(10);

/// How a rejection was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tallied {
    /// Under its own user.
    AsUser,
    /// Under [`OTHER_USER`]: too many users were waiting to be written.
    AsOther,
    /// Not at all: the tally is full.
    Dropped,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    minute: DateTime<Utc>,
    tenant: String,
    user: String,
    reason: &'static str,
}

#[derive(Debug)]
struct Tally {
    count: i64,
    sample_filter: String,
}

/// Rejections counted and not yet written; see the module doc.
pub struct RejectionTally {
    audit: Arc<dyn AuditLog>,
    /// How long one flush may take before it counts as failed.
    deadline: Duration,
    counts: Mutex<HashMap<Key, Tally>>,
    /// Held by a flush from its snapshot until it takes away what it
    /// wrote, so two flushes never write the same counts.
    flushing: tokio::sync::Mutex<()>,
}

impl RejectionTally {
    pub fn new(audit: Arc<dyn AuditLog>, deadline: Duration) -> RejectionTally {
        RejectionTally {
            audit,
            deadline,
            counts: Mutex::new(HashMap::new()),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Tally>> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one submission of `user` of `tenant` turned away at `at` for
    /// `reason`, which sent `filter`.
    pub fn record(
        &self,
        at: DateTime<Utc>,
        tenant: &str,
        user: &str,
        reason: &'static str,
        filter: &str,
    ) -> Tallied {
        let mut key = Key {
            minute: at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at),
            tenant: tenant.to_owned(),
            user: user.to_owned(),
            reason,
        };
        let mut counts = self.lock();
        let mut tallied = Tallied::AsUser;
        if counts.len() >= MAX_KEYS && !counts.contains_key(&key) {
            key.user = OTHER_USER.to_owned();
            tallied = Tallied::AsOther;
            if counts.len() >= MAX_KEYS + MAX_OTHER_KEYS && !counts.contains_key(&key) {
                return Tallied::Dropped;
            }
        }
        counts
            .entry(key)
            .or_insert_with(|| Tally {
                count: 0,
                sample_filter: sample(filter),
            })
            .count += 1;
        tallied
    }

    /// Counts waiting to be written.
    pub fn pending(&self) -> usize {
        self.lock().len()
    }

    /// Writes every waiting count; on success takes away what it wrote
    /// (rejections counted meanwhile stay), on failure leaves it all.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let _one_at_a_time = self.flushing.lock().await;
        let (keys, counts): (Vec<Key>, Vec<RejectionCount>) = self
            .lock()
            .iter()
            .map(|(key, tally)| {
                let count = RejectionCount {
                    minute: key.minute,
                    tenant: key.tenant.clone(),
                    user_id: key.user.clone(),
                    reason: key.reason.to_owned(),
                    count: tally.count,
                    sample_filter: tally.sample_filter.clone(),
                };
                (key.clone(), count)
            })
            .unzip();
        if counts.is_empty() {
            return Ok(());
        }
        tokio::time::timeout(self.deadline, self.audit.record_rejections(&counts))
            .await
            .unwrap_or_else(|_| {
                Err(AuditError::Unavailable(format!(
                    "no answer within {:?}",
                    self.deadline
                )))
            })?;
        let mut waiting = self.lock();
        for (key, written) in keys.iter().zip(&counts) {
            if let Some(tally) = waiting.get_mut(key) {
                tally.count -= written.count;
                if tally.count <= 0 {
                    waiting.remove(key);
                }
            }
        }
        Ok(())
    }

    /// Flushes every `every` (at least 10 ms) until `shutdown`; a flush
    /// under way when it comes is finished, not cut short.
    pub async fn run(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every.max(MIN_FLUSH_EVERY));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            if let Err(e) = self.flush().await {
                warn!(error = %e, waiting = self.pending(),
                    "could not write the rejection counts; kept for the next flush");
            }
        }
    }

    /// The last flush, at shutdown; what it cannot write is logged, one
    /// line per count.
    pub async fn close(&self) {
        if let Err(e) = self.flush().await {
            for (key, tally) in self.lock().iter() {
                error!(error = %e, minute = %key.minute, tenant = key.tenant, user = key.user,
                    reason = key.reason, count = tally.count,
                    "rejection count lost at shutdown: the audit store did not answer");
            }
        }
    }
}

/// `filter` cut to at most [`SAMPLE_BYTES`] on a character boundary, its
/// NULs replaced: Postgres text cannot hold one, and a sample it refused
/// would fail every flush of the counts written with it.
fn sample(filter: &str) -> String {
    let mut sample = String::with_capacity(filter.len().min(SAMPLE_BYTES));
    for c in filter.chars() {
        let c = if c == '\0' {
            char::REPLACEMENT_CHARACTER
        } else {
            c
        };
        if sample.len() + c.len_utf8() > SAMPLE_BYTES {
            break;
        }
        sample.push(c);
    }
    sample
}

#[cfg(test)]
mod tests;
