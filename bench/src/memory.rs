//! Memory per running query (target 7): several queries through the source
//! at once, each cut into chunks and encoded as a worker would, while the
//! allocator's live bytes are sampled; the peak above the figure before they
//! started, divided by their number.
//!
//! Live bytes come from jemalloc's own count (`stats.allocated`), not RSS:
//! the allocator keeps freed pages for a while, so RSS lags both ways.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::anyhow;
use pseudostream::jobs::Jobs;
use tikv_jemalloc_ctl::{epoch, stats};

use crate::BenchArgs;
use crate::client::last_90_days;
use crate::raw_delivery::query_only;
use crate::report::{Figure, Table};
use crate::scenarios::whole_filter;

const MIB: f64 = 1024.0 * 1024.0;

/// How often live bytes are read while the queries run.
const SAMPLE_EVERY: Duration = Duration::from_millis(2);

pub(crate) async fn per_query(
    jobs: &Jobs,
    args: &BenchArgs,
    table: &mut Table,
) -> anyhow::Result<()> {
    let queries = args.memory_queries.max(1);
    let range = last_90_days();
    let selective = whole_filter(args.whole_scan_latency);
    for (what, filter, limit) in [
        (
            "selective (the whole result's scan over every day)",
            selective.as_str(),
            u64::MAX,
        ),
        (
            "unselective (every row, 90 days)",
            "latency_ms >= 0",
            args.delivery_rows,
        ),
    ] {
        eprintln!("memory: {queries} {what} queries at once");
        let idle = allocated()?;
        let peak = Arc::new(AtomicUsize::new(idle));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    if let Ok(now) = allocated() {
                        peak.fetch_max(now, Ordering::Relaxed);
                    }
                    tokio::time::sleep(SAMPLE_EVERY).await;
                }
            })
        };
        let runs = futures::future::try_join_all(
            (0..queries).map(|_| query_only(jobs, filter, range, limit)),
        )
        .await;
        done.store(true, Ordering::Relaxed);
        sampler.await?;
        let runs = runs?;
        let rows: u64 = runs.iter().map(|(rows, _)| rows).sum();
        let secs = runs.iter().map(|(_, secs)| *secs).fold(0.0, f64::max);
        let above = peak.load(Ordering::Relaxed).saturating_sub(idle) as f64;
        table.push(Figure {
            what: format!(
                "memory per running query, {what}: {queries} at once ({rows} rows in all, {secs:.1} s), peak live bytes above those before, divided by {queries}"
            ),
            ours: format!("{:.1} MiB", above / queries as f64 / MIB),
            baseline: format!("{:.0} MiB live before, peak {:.0} MiB above it", idle as f64 / MIB, above / MIB),
            ratio: "—".into(),
            target: "≤ 8 MiB; at 10× rows a day ≤ 1.2× the 1× figure".into(),
        });
    }
    Ok(())
}

/// Bytes the process has allocated and not freed, as jemalloc counts them.
fn allocated() -> anyhow::Result<usize> {
    epoch::advance().map_err(|e| anyhow!("refreshing jemalloc's statistics: {e}"))?;
    stats::allocated::read().map_err(|e| anyhow!("reading jemalloc's allocated bytes: {e}"))
}
