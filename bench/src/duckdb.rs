//! The DuckDB baselines (through `python3 -c`, two threads, as our query
//! runtime has): the same Parquet files, the filter written in its SQL.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::under_load::NewQuery;

/// DuckDB writes the whole result as JSON lines to /dev/null: the same work
/// as ours (filter, sort, encode every row), with no Python objects built.
const DUCKDB: &str = include_str!("duckdb_baseline.py");

/// Runs the query `ts` in `[from, to)`, `endpoint` matching `re1`, `message`
/// not matching `re2`, `latency_ms > latency`, newest first, at most `limit`
/// rows: the rows DuckDB wrote and the seconds it took, as it measured them.
pub(crate) async fn whole_result(
    python: &str,
    demo: &Path,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    (re1, re2, latency): (&str, &str, f64),
    limit: u64,
) -> anyhow::Result<(u64, f64)> {
    let glob = demo.join("*.parquet");
    let out = tokio::process::Command::new(python)
        .arg("-c")
        .arg(DUCKDB)
        .arg(glob.to_string_lossy().as_ref())
        .arg(from.timestamp_micros().to_string())
        .arg(to.timestamp_micros().to_string())
        .arg(re1)
        .arg(re2)
        .arg(limit.to_string())
        .arg(latency.to_string())
        .output()
        .await
        .with_context(|| format!("running {python} -c (is duckdb installed?)"))?;
    if !out.status.success() {
        bail!("duckdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    let rows: u64 = words.next().context("duckdb printed nothing")?.parse()?;
    let secs: f64 = words.next().context("duckdb printed no time")?.parse()?;
    Ok((rows, secs))
}

const DUCKDB_FIRST_ROWS: &str = include_str!("duckdb_first_rows.py");

/// DuckDB's time for each of `queries` with `ORDER BY ts DESC LIMIT limit`
/// (a first chunk's worth of rows), one after another on one connection.
pub(crate) async fn first_rows(
    python: &str,
    demo: &Path,
    queries: &[NewQuery],
    limit: u64,
) -> anyhow::Result<Vec<Duration>> {
    let glob = demo.join("*.parquet");
    let list: Vec<_> = queries
        .iter()
        .map(|q| {
            json!([
                q.from.timestamp_micros(),
                q.to.timestamp_micros(),
                q.endpoint_regex(),
                q.message_regex(),
                q.latency_over
            ])
        })
        .collect();
    let out = tokio::process::Command::new(python)
        .arg("-c")
        .arg(DUCKDB_FIRST_ROWS)
        .arg(glob.to_string_lossy().as_ref())
        .arg(limit.to_string())
        .arg(serde_json::to_string(&list)?)
        .output()
        .await
        .with_context(|| format!("running {python} -c (is duckdb installed?)"))?;
    if !out.status.success() {
        bail!("duckdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|secs| Ok(Duration::from_secs_f64(secs.parse()?)))
        .collect()
}
