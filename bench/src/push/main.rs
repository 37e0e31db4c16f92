//! `pseudostream-push-bench`: push streams under load, against long-polling
//! in the same run. It starts the service as a child process (its own
//! binary, `server` mode: see `server.rs`) so that client and server each
//! have their own open-file limit, then:
//!
//! 1. submits `--jobs` jobs, each held before every chunk by a gate the
//!    bench opens;
//! 2. opens `--streams` Server-Sent Events streams spread over them and
//!    notes the server's resident memory before and after (idle streams:
//!    no chunk exists yet), and starts `--pollers` long-pollers;
//! 3. for `--rounds` rounds lets each job publish one chunk (all at once,
//!    or one job after another over `--spread`) and times, for
//!    every client, release-to-arrival of that chunk (an upper bound: the
//!    release also covers the worker publishing it) and publish-to-client
//!    (from the moment the chunk was readable, its progress landed, as the
//!    server noted it on the clock both processes share);
//! 4. lets the jobs finish and counts the streams that saw `end`.
//!
//! With `--short-pollers` it also runs dashboards that read a page about
//! once a second without waiting, timing each request, and it reports the
//! server's CPU over the rounds.
//!
//! Errors are any non-200, any `error` event, any stream closed before
//! `end`. Nothing here asserts; it prints a table for docs/PERFORMANCE.md.

mod clients;
mod clock;
#[path = "../proc_stat.rs"]
mod proc_stat;
mod report;
mod server;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

use clients::Arrivals;
use clock::SharedClock;
use proc_stat::cpu_seconds;
use report::{ServerCpu, Times, readable_times, report, report_short_polls, rss_kib};

const KEY: &str = "push-bench-key-0001";

#[derive(Parser)]
#[command(
    name = "pseudostream-push-bench",
    about = "Push streams under load, against long-polling"
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Concurrent SSE streams.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Concurrent long-pollers (the baseline), on the same jobs.
    #[arg(long, default_value_t = 500)]
    pollers: usize,
    /// Short pollers beside them: each reads its job's next page about once
    /// a second with `wait=0` (a dashboard refreshing), timed per request.
    #[arg(long, default_value_t = 0)]
    short_pollers: usize,
    /// Running jobs the streams and pollers are spread over.
    #[arg(long, default_value_t = 100)]
    jobs: usize,
    /// Chunks measured per job.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// How long each round's releases are spread over: 0 lets every job
    /// publish at once (10,000 streams written in one burst); 1s releases
    /// one job's chunk every 10 ms with 100 jobs, a steady load of
    /// streams / spread deliveries a second.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    spread: Duration,
    /// Streams being opened at once.
    #[arg(long, default_value_t = 256)]
    opening: usize,
    /// Where the demo dataset is generated once (under `demo-push/`).
    #[arg(long, default_value = "./pseudostream-bench")]
    data_dir: PathBuf,
}

#[derive(clap::Subcommand)]
enum Mode {
    /// The service with a chunk gate (started by the bench itself).
    #[command(hide = true)]
    Server,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Mode::Server) = cli.mode {
        pseudostream::app::init_logging("warn");
        return server::run().await;
    }
    run(cli).await
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let demo = cli.data_dir.join("demo-push");
    pseudostream::app::ensure_demo_data(&demo, 7, 20_000).await?;
    let run_dir = cli
        .data_dir
        .join(format!("push-run-{}", std::process::id()));
    let connections = cli.streams + cli.pollers + cli.short_pollers + 1_000;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("server")
        .env("PSEUDOSTREAM_LISTEN", "127.0.0.1:0")
        .env("PSEUDOSTREAM_SOURCE", &demo)
        .env("PSEUDOSTREAM_DATA_DIR", &run_dir)
        .env("PSEUDOSTREAM_API_KEYS", format!("{KEY}=bench:bench:query"))
        .env("PSEUDOSTREAM_RATE_LIMIT", "0/1s")
        .env("PSEUDOSTREAM_WORKERS", (cli.jobs + 8).to_string())
        .env("PSEUDOSTREAM_MAX_CONNECTIONS", connections.to_string())
        .env("PSEUDOSTREAM_MAX_STREAMS", connections.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the server process")?;
    let pid = child.id();
    let mut control = child.stdin.take().context("the server's stdin")?;
    let mut out = BufReader::new(child.stdout.take().context("the server's stdout")?);
    let clock = SharedClock::new();
    let mut line = String::new();
    out.read_line(&mut line)?;
    let base = line
        .trim()
        .strip_prefix("listening ")
        .with_context(|| format!("the server said {line:?}"))?
        .to_owned();
    eprintln!("server pid {pid} on {base}");

    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()?;
    let jobs = submit_jobs(&http, &base, cli.jobs, cli.rounds).await?;
    wait_running(&http, &base, &jobs).await?;

    let arrivals = Arc::new(Arrivals::new(cli.rounds));
    let opening = Arc::new(tokio::sync::Semaphore::new(cli.opening));
    let rss_before = rss_kib(pid)?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..cli.streams {
        let job = n % jobs.len();
        let url = format!("{base}/v1/jobs/{}/events", jobs[job]);
        let (http, arrivals, opening) = (http.clone(), arrivals.clone(), opening.clone());
        let job = job as u16;
        tasks.spawn(async move { clients::stream(http, url, job, KEY, &arrivals, &opening).await });
    }
    while arrivals.opened.load(Ordering::Relaxed) + arrivals.errors.load(Ordering::Relaxed)
        < cli.streams
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_kib(pid)?;
    eprintln!(
        "{} streams open in {open_time:.1?}",
        arrivals.opened.load(Ordering::Relaxed)
    );
    // Pollers keep their connections alive between polls, as a polling
    // dashboard does (a new connection per poll would also measure SYN
    // retries when hundreds reconnect at once).
    let polling = reqwest::Client::builder()
        .pool_max_idle_per_host(cli.pollers)
        .build()?;
    for n in 0..cli.pollers {
        let job = (jobs[n % jobs.len()].clone(), (n % jobs.len()) as u16);
        let (http, arrivals, base) = (polling.clone(), arrivals.clone(), base.clone());
        tasks.spawn(async move { clients::poll(http, base, job, KEY, &arrivals).await });
    }
    let short_polling = reqwest::Client::builder()
        .pool_max_idle_per_host(cli.short_pollers.max(1))
        .build()?;
    let stop_short = tokio_util::sync::CancellationToken::new();
    for n in 0..cli.short_pollers {
        let job = jobs[n % jobs.len()].clone();
        let (http, arrivals, base) = (short_polling.clone(), arrivals.clone(), base.clone());
        // Spread over the second, so they do not poll in step.
        let phase = Duration::from_micros((n as u64 * 7_919) % 1_000_000);
        let stop = stop_short.clone();
        tasks.spawn(async move {
            clients::short_poll(http, base, job, KEY, &arrivals, (phase, stop)).await
        });
    }
    // The pollers' first long-polls are in before the first chunk.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu_before, rounds_started) = (cpu_seconds(pid)?, Instant::now());

    let clients = cli.streams + cli.pollers;
    let mut released = Vec::with_capacity(cli.rounds);
    for round in 0..cli.rounds {
        let start = Instant::now();
        released.push(start);
        if cli.spread.is_zero() {
            writeln!(control, "release {}", jobs.len())?;
            control.flush()?;
        } else {
            // One job's chunk at a time, evenly over the spread.
            for n in 0..jobs.len() {
                let at = start + cli.spread.mul_f64(n as f64 / jobs.len() as f64);
                tokio::time::sleep_until(at.into()).await;
                writeln!(control, "release 1")?;
                control.flush()?;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while arrivals.seen[round].load(Ordering::Relaxed) + arrivals.errors.load(Ordering::Relaxed)
            < clients
        {
            if Instant::now() > deadline {
                eprintln!(
                    "round {round}: only {} clients got the chunk",
                    arrivals.seen[round].load(Ordering::Relaxed)
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let server_cpu = ServerCpu {
        seconds: cpu_seconds(pid)? - cpu_before,
        over: rounds_started.elapsed(),
    };
    stop_short.cancel();
    writeln!(control, "release 1000000")?;
    control.flush()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while tasks.join_next().await.is_some() {
        if tokio::time::Instant::now() > deadline {
            bail!("clients did not finish within two minutes");
        }
    }
    drop(control);
    let readable = readable_times(&mut out, &jobs)?;
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&run_dir);
    let times = Times {
        released: &released,
        readable: &readable,
        clock: &clock,
    };
    report(&cli, &arrivals, &times, rss_before, rss_after, open_time);
    report_short_polls(&cli, &arrivals, &server_cpu);
    Ok(())
}

async fn submit_jobs(
    http: &reqwest::Client,
    base: &str,
    jobs: usize,
    rounds: usize,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(jobs);
    for n in 0..jobs {
        // Unique filters, so no two share a job; few fields, small chunks.
        let body = json!({
            "filter": format!("status != {}", 1000 + n),
            "timeRange": { "last": "7d" },
            "fields": ["ts", "service", "status"],
            "maxRows": 10 * (rounds + 2),
        });
        let response = http
            .post(format!("{base}/v1/jobs"))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if status != 202 {
            bail!("submit answered {status}: {body}");
        }
        ids.push(body["jobId"].as_str().context("a jobId")?.to_owned());
    }
    Ok(ids)
}

/// Until every job is running, held at the gate before its first chunk.
async fn wait_running(http: &reqwest::Client, base: &str, jobs: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in jobs {
        loop {
            let job: Value = http
                .get(format!("{base}/v1/jobs/{id}"))
                .bearer_auth(KEY)
                .send()
                .await?
                .json()
                .await?;
            if job["status"] == "running" {
                break;
            }
            if Instant::now() > deadline {
                bail!("job {id} is still {} after a minute", job["status"]);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // A running job reads its first rows before it reaches the gate.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}
