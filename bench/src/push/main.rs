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
//! Errors are any non-200, any `error` event, any stream closed before
//! `end`. Nothing here asserts; it prints a table for docs/PERFORMANCE.md.

mod clients;
mod clock;
mod server;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

use clients::{Arrivals, Sample};
use clock::SharedClock;

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
    let connections = cli.streams + cli.pollers + 1_000;
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
    // The pollers' first long-polls are in before the first chunk.
    tokio::time::sleep(Duration::from_secs(2)).await;

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

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .context("VmRSS in /proc/<pid>/status")
}

/// What the server printed as it stopped: when each (job, `chunkSeq`)
/// became readable, in shared-clock nanoseconds.
fn readable_times(
    out: &mut impl BufRead,
    jobs: &[String],
) -> anyhow::Result<HashMap<(u16, u32), u64>> {
    let index: HashMap<&str, u16> = jobs
        .iter()
        .enumerate()
        .map(|(n, id)| (id.as_str(), n as u16))
        .collect();
    let mut times = HashMap::new();
    for line in out.lines() {
        let line = line?;
        let mut words = line.split(' ');
        if words.next() != Some("readable") {
            continue;
        }
        let (Some(job), Some(seq), Some(ns)) = (words.next(), words.next(), words.next()) else {
            bail!("the server said {line:?}");
        };
        if let Some(&job) = index.get(job) {
            times.insert((job, seq.parse()?), ns.parse()?);
        }
    }
    Ok(times)
}

/// What arrivals are timed from.
struct Times<'a> {
    /// Each round's release, in the bench's clock.
    released: &'a [Instant],
    /// Each chunk's readable time, in the shared clock.
    readable: &'a HashMap<(u16, u32), u64>,
    clock: &'a SharedClock,
}

impl Times<'_> {
    fn since_release(&self, s: &Sample) -> Duration {
        s.at.saturating_duration_since(self.released[s.seq as usize])
    }

    /// None when the server did not note the chunk.
    fn since_readable(&self, s: &Sample) -> Option<Duration> {
        let readable = self.readable.get(&(s.job, s.seq))?;
        Some(Duration::from_nanos(
            self.clock.ns(s.at).saturating_sub(*readable),
        ))
    }
}

fn report(
    cli: &Cli,
    arrivals: &Arrivals,
    times: &Times,
    before: u64,
    after: u64,
    open_time: Duration,
) {
    let samples = arrivals.samples.lock().unwrap();
    let latencies = |stream: bool, readable: bool| {
        let mut l: Vec<Duration> = samples
            .iter()
            .filter(|s| s.stream == stream)
            .filter_map(|s| {
                if readable {
                    times.since_readable(s)
                } else {
                    Some(times.since_release(s))
                }
            })
            .collect();
        l.sort();
        l
    };
    let pct = |l: &[Duration], p: f64| {
        l.get(((l.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
    };
    let (sse, polls) = (latencies(true, false), latencies(false, false));
    let (sse_readable, polls_readable) = (latencies(true, true), latencies(false, true));
    let opened = arrivals.opened.load(Ordering::Relaxed);
    let per_stream = after.saturating_sub(before) as f64 / opened.max(1) as f64;
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| SSE streams open at once | {opened} of {} (opened in {open_time:.1?}) |",
        cli.streams
    );
    println!("| long-pollers alongside | {} |", cli.pollers);
    println!(
        "| jobs, chunks measured per job | {}, {} |",
        cli.jobs, cli.rounds
    );
    println!("| each round's releases spread over | {:?} |", cli.spread);
    println!("| errors | {} |", arrivals.errors.load(Ordering::Relaxed));
    println!(
        "| streams and pollers that saw the end | {} |",
        arrivals.ended.load(Ordering::Relaxed)
    );
    println!(
        "| server RSS before / after opening the streams | {} / {} MiB |",
        before / 1024,
        after / 1024
    );
    println!("| server memory per idle stream | {per_stream:.1} KiB |");
    let mut rows = vec![
        ("publish-to-client, SSE", &sse_readable),
        ("publish-to-client, long-poll", &polls_readable),
    ];
    // With a spread, a round's start says nothing of a chunk's own release.
    if cli.spread.is_zero() {
        rows.push(("release-to-client, SSE", &sse));
        rows.push(("release-to-client, long-poll", &polls));
    }
    for (name, l) in rows {
        println!(
            "| {name} ({} samples): p50 / p99 / max | {} / {} / {} |",
            l.len(),
            pct(l, 0.50),
            pct(l, 0.99),
            pct(l, 1.0)
        );
    }
    for e in arrivals.first_errors.lock().unwrap().iter() {
        eprintln!("error: {e}");
    }
}
