//! `pseudostream-bench`: the performance figures of `docs/PERFORMANCE.md`,
//! measured in one run and side by side with a baseline on the same machine.
//!
//! It starts the whole service in-process on an ephemeral port over the demo
//! dataset (generated once into `--data-dir`), with the rate limit off and a
//! large offset pool, then measures over real HTTP:
//!
//! 1. first-chunk latency under `--concurrency` concurrent long queries
//!    (90 days, regex filters, each unique);
//! 2. first-chunk latency of new queries (own regex, own end time) arriving
//!    at a steady rate beside long streaming queries, against the idle
//!    figure of the same run and DuckDB's `LIMIT 10` for the same filters;
//! 3. admission throughput of `POST /v1/jobs` against a trivial axum route
//!    served by the same process;
//! 4. end-to-end rows per second through the result topic against the
//!    lower of raw producer throughput with the same messages (appends of
//!    one chunk to the embedded log; or, when `PSEUDOSTREAM_KAFKA_BROKERS`
//!    and `PSEUDOSTREAM_REDIS_URL` are set, a plain rdkafka producer with
//!    the result topic's settings re-sending the job's own chunks) and the
//!    query alone (the same query through the source, rows encoded into
//!    chunks, nothing published); and the query alone against DuckDB
//!    writing the same rows as JSON. Beside them, the same job with nobody
//!    reading it and that job read back alone, with each one's CPU, show
//!    whether the query, publishing or the reader sets the pace;
//! 5. time to the whole result of two 90-day regex queries against DuckDB
//!    (`python3 -c`, two threads, same Parquet files, equivalent filter,
//!    `ORDER BY ts DESC`): one the row cap stops, one that scans every day.
//!
//! `--compare BIN` runs this build and another one in turn instead
//! (`compare.rs`).
//!
//! Nothing here asserts: it prints a table, and the figures go to the docs.

mod client;
mod compare;
mod cpu;
mod duckdb;
mod memory;
mod proc_stat;
mod raw_delivery;
mod report;
mod scenarios;
mod under_load;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{CommandFactory, FromArgMatches, Parser};
use pseudostream::app::{self, Roles};
use pseudostream::config::{Config, RateLimit};
use pseudostream::jobs::{Hooks, Jobs};

use client::{Client, KEY};
use report::{Table, print_table, rss_line};

#[derive(Parser)]
#[command(
    name = "pseudostream-bench",
    version,
    about = "Measure the figures of docs/PERFORMANCE.md against their baselines"
)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
    // The service's settings, as for `pseudostream`; `run` sets its own
    // listen address, source, data directory, keys, rate limit and pool.
    #[command(flatten, next_help_heading = "Service")]
    config: Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `--data-dir` is the bench's (the dataset, and each run's state under
    // it); the service's data directory is set per run, so its flag is
    // renamed out of the way and hidden.
    let matches = Cli::command()
        .mut_arg("data_dir", |a| a.long("service-data-dir").hide(true))
        .get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    if let Some(other) = &cli.bench.compare {
        let args: Vec<_> = std::env::args_os().skip(1).collect();
        let between = cli.bench.between.as_deref();
        return compare::compare(other, cli.bench.rounds, between, &args).await;
    }
    // Warnings only: a log line per job would cost what it measures.
    app::init_logging("warn");
    run(cli.config, cli.bench).await
}

/// Settings of the bench itself.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Where the demo dataset is generated once (under `demo/`) and each run's
    /// audit database lives.
    #[arg(
        id = "bench_data_dir",
        long = "data-dir",
        value_name = "DATA_DIR",
        default_value = "./pseudostream-bench"
    )]
    pub data_dir: PathBuf,
    /// Concurrent long queries for the first-chunk latency.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Processes on this host, by name (`redis-server,tansu`; the kernel
    /// keeps 15 characters of a name), whose CPU time over the first-chunk
    /// and delivery measurements is printed beside this process's (Linux:
    /// their live threads' run time, from `/proc/PID/task/*/schedstat`).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub cpu_of: Vec<String>,
    /// How long each side of the admission comparison is driven.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub admission_for: Duration,
    /// Concurrent HTTP clients driving admission.
    #[arg(long, default_value_t = 32)]
    pub admission_clients: usize,
    /// Rows of the delivery job (all rows of the newest days).
    #[arg(long, default_value_t = 200_000)]
    pub delivery_rows: u64,
    /// Row cap of the whole-result query (also the DuckDB LIMIT).
    #[arg(long, default_value_t = 500_000)]
    pub whole_rows: u64,
    /// The second whole-result query keeps rows with `latency_ms` above
    /// this: rarer, so it matches fewer rows than the cap (about 240,000 of
    /// the demo's 5.4 million at 150).
    #[arg(long, default_value_t = 150.0)]
    pub whole_scan_latency: f64,
    /// The Python with `duckdb` installed.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// New queries per second in the under-load measurement.
    #[arg(long, default_value_t = 5.0)]
    pub load_rate: f64,
    /// How long new queries arrive beside the long ones.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub load_for: Duration,
    /// How long new queries arrive on the idle service first.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub idle_for: Duration,
    /// Long queries streaming during the under-load measurement.
    #[arg(long, default_value_t = 100)]
    pub long_queries: usize,
    /// Filters of the under-load measurement DuckDB runs for its baseline.
    #[arg(long, default_value_t = 20)]
    pub duckdb_sample: usize,
    /// Queries run at once in the memory measurement.
    #[arg(long, default_value_t = 10)]
    pub memory_queries: usize,
    /// Run only these measurements: first-chunk, under-load, admission,
    /// delivery, whole, memory.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Compare this build with another `pseudostream-bench` (built from
    /// another commit): the two run in turn, `--rounds` times each, with
    /// the other arguments given here; prints each measurement's median
    /// and range for each build, and of the ratio within each round.
    #[arg(long, value_name = "BIN")]
    pub compare: Option<PathBuf>,
    /// Rounds of `--compare`.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// A shell command `--compare` runs before every run, e.g. one that
    /// restarts an in-memory Kafka broker and flushes Redis.
    #[arg(long, value_name = "COMMAND")]
    pub between: Option<String>,
}

async fn run(base: Config, args: BenchArgs) -> anyhow::Result<()> {
    let wants = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let demo = args.data_dir.join("demo");
    let started = Instant::now();
    app::ensure_demo_data(&demo, base.demo_days, base.demo_rows_per_day).await?;
    eprintln!("demo data ready in {demo:?} ({:.1?})", started.elapsed());
    let run_dir = args.data_dir.join(format!("run-{}", std::process::id()));

    let mut config = base.clone();
    config.listen = "127.0.0.1:0".parse()?;
    config.source = Some(demo.to_string_lossy().into_owned());
    config.data_dir = run_dir.clone();
    config.api_keys = format!("{KEY}=bench:bench:ops");
    config.rate_limit = RateLimit {
        count: 0,
        per: Duration::from_secs(1),
    };
    // Admission leases one offset per job for the TTL: give it room.
    config.offset_pool_size = config.offset_pool_size.max(200_000);
    config.result_memory_bytes = config.result_memory_bytes.max(4 << 30);
    let kafka = config.kafka_brokers.is_some() && config.redis_url.is_some();
    if kafka {
        let tag = format!("bench-{}", std::process::id());
        config.kafka_topic = format!("pseudostream.{tag}");
        config.redis_prefix = format!("pseudostream-{tag}");
    }
    let (running, _) = app::start_with_hooks(config.clone(), Roles::ALL, Hooks::default()).await?;
    let addr = running.addr.context("the bench needs the API")?;
    let client = Client::new(format!("http://{addr}"));
    eprintln!(
        "service on {addr}: {} workers, result topic {}",
        config.workers,
        if kafka { "Kafka" } else { "embedded" }
    );

    let mut table = Table::default();
    scenarios::warm_up(&client).await?;
    if wants("first-chunk") {
        scenarios::first_chunk(&client, args.concurrency, &args.cpu_of, &mut table).await?;
        table.push(rss_line("after first-chunk"));
        // Its hundred cancelled jobs wind down before the next measurement.
        settle(&running.jobs).await?;
    }
    if wants("under-load") {
        under_load::first_chunk_under_load(&client, &demo, &args, &mut table).await?;
        table.push(rss_line("after under-load"));
        settle(&running.jobs).await?;
    }
    if wants("admission") {
        scenarios::admission(&client, &running, &config, &args, &mut table).await?;
        table.push(rss_line("after admission"));
        settle(&running.jobs).await?;
    }
    if wants("delivery") {
        scenarios::delivery(&client, &running, &demo, &config, &args, kafka, &mut table).await?;
        table.push(rss_line("after delivery"));
        settle(&running.jobs).await?;
    }
    if wants("whole") {
        scenarios::whole_result(&client, &demo, &args, &mut table).await?;
        table.push(rss_line("after whole-result"));
    }
    if wants("memory") {
        memory::per_query(&running.jobs, &args, &mut table).await?;
    }

    running.shutdown.cancel();
    running.done.await??;
    let _ = std::fs::remove_dir_all(&run_dir);
    print_table(&table.0, &config, kafka);
    Ok(())
}

/// Waits until every admitted job has finished and the audit writes they
/// queued are committed, so the next measurement starts on a quiet service
/// (admission leaves thousands of short jobs behind it).
async fn settle(jobs: &Jobs) -> anyhow::Result<()> {
    let started = Instant::now();
    let metrics = &jobs.metrics;
    while metrics.jobs_finished_total() < metrics.jobs_accepted_total.get() {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("admitted jobs did not finish within two minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A search waits for every audit write queued before it.
    let query = pseudostream::audit::AuditQuery {
        tenant: "bench".into(),
        limit: 1,
        ..Default::default()
    };
    jobs.backends.audit.search(&query).await?;
    eprintln!("settled in {:.1?}", started.elapsed());
    Ok(())
}
