//! First chunk under real load (issue 24, target 1): new queries arrive at a
//! steady rate, each with its own regex and its own end time, first on an
//! idle service and then while long queries keep streaming. The figure is
//! the loaded p95 over the idle p95 of the same run; DuckDB's time for the
//! same filters with `ORDER BY ts DESC LIMIT 10` over the same files stands
//! beside it.
//!
//! Arrivals are open-loop: a query is sent on schedule whether or not the
//! ones before it have their first chunk, as dashboards would. A query whose
//! first chunk is not there within `FIRST_CHUNK_PATIENCE` counts as missing
//! and as that long in the percentiles.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::BenchArgs;
use crate::client::{Client, last_90_days, rfc3339};
use crate::duckdb;
use crate::report::{Figure, Table, ms, percentile};

/// How long a new query's first chunk is waited for before it counts as missing.
const FIRST_CHUNK_PATIENCE: Duration = Duration::from_secs(20);

/// What the demo shop's endpoints are about: one per query, in turn.
const RESOURCES: [&str; 12] = [
    "orders",
    "payments",
    "search",
    "login",
    "inventory",
    "shipments",
    "products",
    "cart",
    "notifications",
    "recommendations",
    "prices",
    "routes",
];

/// One new query: its own regex, latency bound and end time (up to ten hours
/// back), over 30 days; a dashboard panel's page of rows.
pub(crate) struct NewQuery {
    pub(crate) resource: &'static str,
    pub(crate) cache_hit: usize,
    pub(crate) latency_over: usize,
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: DateTime<Utc>,
}

impl NewQuery {
    fn nth(n: usize, now: DateTime<Utc>) -> NewQuery {
        let to = now - TimeDelta::minutes(((n * 37) % 600) as i64);
        NewQuery {
            resource: RESOURCES[n % RESOURCES.len()],
            cache_hit: n,
            latency_over: n % 50,
            from: to - TimeDelta::days(30),
            to,
        }
    }

    pub(crate) fn endpoint_regex(&self) -> String {
        format!("^/api/v[12]/{}", self.resource)
    }

    pub(crate) fn message_regex(&self) -> String {
        format!("cache hit {}$", self.cache_hit)
    }

    fn body(&self) -> Value {
        json!({
            "filter": format!(
                "endpoint ~ \"{}\" and message !~ \"{}\" and latency_ms > {}",
                self.endpoint_regex(), self.message_regex(), self.latency_over
            ),
            "timeRange": {"from": rfc3339(self.from), "to": rfc3339(self.to)},
            "maxRows": 500,
        })
    }
}

/// First-chunk latencies of new queries sent at `rate` per second for
/// `duration`, numbered from `first`; a missing first chunk counts as
/// `FIRST_CHUNK_PATIENCE`. Returns the latencies (sorted) and the misses.
async fn new_queries(
    client: &Arc<Client>,
    rate: f64,
    duration: Duration,
    first: usize,
) -> (Vec<Duration>, usize) {
    let count = (rate * duration.as_secs_f64()).round() as usize;
    let every = Duration::from_secs_f64(1.0 / rate);
    let now = Utc::now();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    for n in first..first + count {
        tick.tick().await;
        let client = client.clone();
        let body = NewQuery::nth(n, now).body();
        tasks.spawn(async move {
            let started = Instant::now();
            let first_chunk = async {
                let job = client.submit(&body, Some(5)).await?;
                if job.first_chunk.is_none() {
                    loop {
                        let (page, _) = client.page(&job.job_id, 0, 20).await?;
                        if !page.chunks.is_empty() {
                            break;
                        }
                    }
                }
                anyhow::Ok(started.elapsed())
            };
            tokio::time::timeout(FIRST_CHUNK_PATIENCE, first_chunk).await
        });
    }
    let (mut latencies, mut missing) = (Vec::with_capacity(count), 0);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(Ok(latency))) => latencies.push(latency),
            Ok(Ok(Err(e))) => {
                eprintln!("a new query failed: {e:#}");
                missing += 1;
                latencies.push(FIRST_CHUNK_PATIENCE);
            }
            _ => {
                missing += 1;
                latencies.push(FIRST_CHUNK_PATIENCE);
            }
        }
    }
    latencies.sort();
    (latencies, missing)
}

/// Starts `count` long queries (90 days, a selective regex, no row cap to
/// speak of), waits until each has its first chunk, and returns their ids.
async fn start_long_queries(client: &Arc<Client>, count: usize) -> anyhow::Result<Vec<String>> {
    let (from, to) = last_90_days();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..count {
        let client = client.clone();
        let body = json!({
            "filter": format!("endpoint ~ \"^/api/v[12]/(orders|cart)\" and message !~ \"cache hit {n}$\" and status >= 500"),
            "timeRange": {"from": rfc3339(from), "to": rfc3339(to)},
            "maxRows": 400_000 + n,
        });
        tasks.spawn(async move {
            let job = client.submit(&body, Some(5)).await?;
            anyhow::Ok(job.job_id)
        });
    }
    let mut jobs = Vec::with_capacity(count);
    while let Some(done) = tasks.join_next().await {
        jobs.push(done??);
    }
    Ok(jobs)
}

/// How many of `jobs` are still running.
async fn still_running(client: &Client, jobs: &[String]) -> usize {
    let mut running = 0;
    for job in jobs {
        let state: anyhow::Result<Value> = client.get_json(&format!("/v1/jobs/{job}")).await;
        if state.is_ok_and(|s| s["status"] == "running") {
            running += 1;
        }
    }
    running
}

pub(crate) async fn first_chunk_under_load(
    client: &Client,
    demo: &Path,
    args: &BenchArgs,
    table: &mut Table,
) -> anyhow::Result<()> {
    let client = Arc::new(Client::new(client.base.clone()));
    let rate = args.load_rate;
    eprintln!(
        "first chunk under load: {rate}/s new queries for {:?} idle, then for {:?} beside {} long queries",
        args.idle_for, args.load_for, args.long_queries
    );
    let (idle, idle_missing) = new_queries(&client, rate, args.idle_for, 0).await;

    let long = start_long_queries(&client, args.long_queries).await?;
    let first = idle.len();
    let (loaded, loaded_missing) = new_queries(&client, rate, args.load_for, first).await;
    let running = still_running(&client, &long).await;
    for job in &long {
        client.cancel(job).await?;
    }

    // DuckDB over the same files, one connection, the same filters in turn.
    let now = Utc::now();
    let sample: Vec<NewQuery> = (0..args.duckdb_sample)
        .map(|n| NewQuery::nth(first + n, now))
        .collect();
    let mut duck = duckdb::first_rows(&args.python, demo, &sample, 10).await?;
    duck.sort();

    let idle_p95 = percentile(&idle, 95.0);
    let loaded_p95 = percentile(&loaded, 95.0);
    table.push(Figure {
        what: format!(
            "first chunk p50 / p95, {rate}/s new 30-day regex queries (own regex and end time): idle ({} queries, {idle_missing} missing) vs beside {} long 90-day queries ({} queries, {loaded_missing} missing; {running} long ones still running at the end)",
            idle.len(),
            long.len(),
            loaded.len(),
        ),
        ours: format!(
            "loaded {} / {}",
            ms(percentile(&loaded, 50.0)),
            ms(loaded_p95)
        ),
        baseline: format!(
            "idle {} / {}; DuckDB LIMIT 10 p50 / p95 {} / {} ({} filters)",
            ms(percentile(&idle, 50.0)),
            ms(idle_p95),
            ms(percentile(&duck, 50.0)),
            ms(percentile(&duck, 95.0)),
            duck.len()
        ),
        ratio: format!(
            "{:.2}× idle p95",
            loaded_p95.as_secs_f64() / idle_p95.as_secs_f64().max(1e-9)
        ),
        target: "≤ 2×".into(),
    });
    Ok(())
}
