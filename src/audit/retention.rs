//! Keeps the audit trail for its retention time and no longer: a background
//! task deletes rows submitted before `now - retention`, a batch at a time,
//! once an interval. Any number of instances may run it: a delete of rows
//! already gone deletes nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::AuditLog;

/// Rows one statement deletes at most.
pub const PRUNE_BATCH: u32 = 1000;

/// Prunes every `every` until `shutdown`; `retention` zero keeps everything.
pub async fn run(
    audit: Arc<dyn AuditLog>,
    retention: Duration,
    every: Duration,
    shutdown: CancellationToken,
) {
    let Ok(retention) = chrono::TimeDelta::from_std(retention) else {
        return; // longer than any clock can reach: nothing is ever old enough
    };
    if retention.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let Some(before) = Utc::now().checked_sub_signed(retention) else {
            continue;
        };
        let mut pruned = 0;
        loop {
            match audit.prune(before, PRUNE_BATCH).await {
                Ok(n) => {
                    pruned += n;
                    if n < u64::from(PRUNE_BATCH) || shutdown.is_cancelled() {
                        break;
                    }
                    // Between batches, let the writes a submission waits for through.
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    warn!(error = %e, "could not prune the audit trail; trying again next round");
                    break;
                }
            }
        }
        if pruned > 0 {
            info!(pruned, %before, "audit rows past their retention deleted");
        }
    }
}
