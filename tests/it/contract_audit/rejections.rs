//! The audit contract's rejection counts: added per minute, tenant, user
//! and reason, read back by tenant, pruned by minute.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use pseudostream::audit::{AuditLog, RejectionCount};
use pseudostream::model::JobId;

use super::{all, base, entry};

fn minute() -> DateTime<Utc> {
    base().duration_trunc(TimeDelta::minutes(1)).unwrap()
}

pub(crate) fn rejection(
    minute: DateTime<Utc>,
    tenant: &str,
    user: &str,
    reason: &str,
    count: i64,
    sample_filter: &str,
) -> RejectionCount {
    RejectionCount {
        minute,
        tenant: tenant.into(),
        user_id: user.into(),
        reason: reason.into(),
        count,
        sample_filter: sample_filter.into(),
    }
}

pub async fn case_rejection_counts_add_up_per_minute_user_and_reason(log: &dyn AuditLog) {
    let (m0, m1) = (minute(), minute() + TimeDelta::minutes(1));
    let quoted = "message contains \"it's\" and path ~ \"^/ü\"";
    log.record_rejections(&[]).await.unwrap();
    log.record_rejections(&[
        rejection(m0, "acme", "ann", "rate_limited", 3, quoted),
        rejection(m0, "acme", "ann", "pool_exhausted", 1, "status = 1"),
        rejection(m0, "globex", "ann", "rate_limited", 2, "status = 2"),
    ])
    .await
    .unwrap();
    log.record_rejections(&[
        rejection(m0, "acme", "ann", "rate_limited", 4, "status = 3"),
        rejection(m1, "acme", "(other)", "rate_limited", 1, "status = 4"),
        rejection(m0, "acme", "bob", "shutting_down", 2, ""),
    ])
    .await
    .unwrap();

    // Added up, and the first sample stays; by minute, user and reason.
    assert_eq!(
        log.rejections("acme", m0).await.unwrap(),
        [
            rejection(m0, "acme", "ann", "pool_exhausted", 1, "status = 1"),
            rejection(m0, "acme", "ann", "rate_limited", 7, quoted),
            rejection(m0, "acme", "bob", "shutting_down", 2, ""),
            rejection(m1, "acme", "(other)", "rate_limited", 1, "status = 4"),
        ]
    );
    assert_eq!(
        log.rejections("acme", m1).await.unwrap(),
        [rejection(
            m1,
            "acme",
            "(other)",
            "rate_limited",
            1,
            "status = 4"
        )]
    );
    // Tenants never see each other's counts.
    assert_eq!(
        log.rejections("globex", m0).await.unwrap(),
        [rejection(
            m0,
            "globex",
            "ann",
            "rate_limited",
            2,
            "status = 2"
        )]
    );
    assert!(log.rejections("initech", m0).await.unwrap().is_empty());
}

/// Retention takes rejection counts by minute, in the same batches as the
/// submissions: the old ones of both go, the rest stay.
pub async fn case_prune_deletes_rejections_past_the_cutoff(log: &dyn AuditLog) {
    let cutoff = minute() - TimeDelta::days(400);
    let days = TimeDelta::days;
    let old_submission = entry(JobId::new(), "acme", "ann", cutoff - days(1));
    log.record_submission(&old_submission).await.unwrap();
    let at = |d| cutoff + days(d);
    log.record_rejections(&[
        rejection(at(-3), "acme", "ann", "rate_limited", 5, "a"),
        rejection(at(-2), "acme", "ann", "rate_limited", 5, "b"),
        rejection(at(-1), "globex", "zed", "pool_exhausted", 5, "c"),
        rejection(at(0), "acme", "ann", "rate_limited", 1, "d"),
        rejection(at(1), "acme", "bob", "rate_limited", 1, "e"),
    ])
    .await
    .unwrap();
    let mut pruned = Vec::new();
    loop {
        let n = log.prune(cutoff, 2).await.unwrap();
        pruned.push(n);
        if n < 2 {
            break;
        }
    }
    assert_eq!(pruned.iter().sum::<u64>(), 4, "{pruned:?}");
    assert!(pruned.iter().all(|&n| n <= 2), "{pruned:?}");
    assert!(all(log, "acme").await.is_empty());
    let left: Vec<_> = log
        .rejections("acme", at(-10))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.sample_filter)
        .collect();
    assert_eq!(left, ["d", "e"], "counts at or after the cutoff stay");
    assert!(log.rejections("globex", at(-10)).await.unwrap().is_empty());
}
