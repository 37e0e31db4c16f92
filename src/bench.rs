//! `pseudostream bench`: the performance figures of `docs/PERFORMANCE.md`,
//! measured in one run and side by side with a baseline on the same machine.
//!
//! It starts the whole service in-process on an ephemeral port over the demo
//! dataset (generated once into `--data-dir`), with the rate limit off and a
//! large offset pool, then measures over real HTTP:
//!
//! 1. first-chunk latency under `--concurrency` concurrent long queries
//!    (90 days, regex filters, each unique);
//! 2. admission throughput of `POST /v1/jobs` against a trivial axum route
//!    served by the same process;
//! 3. end-to-end rows per second through the result topic against raw
//!    producer throughput with the same messages (appends of one chunk to
//!    the embedded log; or, when `PSEUDOSTREAM_KAFKA_BROKERS` and
//!    `PSEUDOSTREAM_REDIS_URL` are set, a plain rdkafka producer with the
//!    result topic's settings re-sending the job's own chunks);
//! 4. time to the whole result of a 90-day regex query against DuckDB
//!    (`python3 -c`, same Parquet files, equivalent filter, `ORDER BY ts DESC`).
//!
//! Nothing here asserts: it prints a table, and the figures go to the docs.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::{self, Roles};
use crate::config::{Config, RateLimit};
use crate::jobs::Hooks;
use crate::model::{Chunk, JobId, Offset};
use crate::results::ResultTopic;
use crate::results::kafka::Compression;
use crate::results::memory::MemoryResultLog;
use crate::source::Row;

const KEY: &str = "bench-key-0001";

/// Settings of `pseudostream bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Where the demo dataset is generated once (under `demo/`) and each run's
    /// audit database lives.
    #[arg(long, default_value = "./pseudostream-bench")]
    pub data_dir: PathBuf,
    /// Concurrent long queries for the first-chunk latency.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
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
    /// The Python with `duckdb` installed.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Run only these measurements: first-chunk, admission, delivery, whole.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

/// The figures so far; each is also printed to stderr as it is measured,
/// so a later failure does not lose the earlier ones.
#[derive(Default)]
struct Table(Vec<Figure>);

impl Table {
    fn push(&mut self, f: Figure) {
        eprintln!(
            "  {}: {} (baseline {}, ratio {})",
            f.what, f.ours, f.baseline, f.ratio
        );
        self.0.push(f);
    }
}

/// One line of the table.
struct Figure {
    what: String,
    ours: String,
    baseline: String,
    ratio: String,
    target: String,
}

pub async fn run(base: Config, args: BenchArgs) -> anyhow::Result<()> {
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
    warm_up(&client).await?;
    if wants("first-chunk") {
        first_chunk(&client, args.concurrency, &mut table).await?;
        table.push(rss_line("after first-chunk"));
    }
    if wants("admission") {
        admission(&client, &args, &mut table).await?;
        table.push(rss_line("after admission"));
        settle(&running.jobs).await?;
    }
    if wants("delivery") {
        delivery(&client, &config, &args, kafka, &mut table).await?;
        table.push(rss_line("after delivery"));
        settle(&running.jobs).await?;
    }
    if wants("whole") {
        whole_result(&client, &demo, &args, &mut table).await?;
        table.push(rss_line("after whole-result"));
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
async fn settle(jobs: &crate::jobs::Jobs) -> anyhow::Result<()> {
    let started = Instant::now();
    let metrics = &jobs.metrics;
    while metrics.jobs_finished_total() < metrics.jobs_accepted_total.get() {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("admitted jobs did not finish within two minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A search waits for every audit write queued before it.
    let query = crate::audit::AuditQuery {
        tenant: "bench".into(),
        user: None,
        from: None,
        to: None,
        limit: 1,
    };
    jobs.backends.audit.search(&query).await?;
    eprintln!("settled in {:.1?}", started.elapsed());
    Ok(())
}

fn print_table(table: &[Figure], config: &Config, kafka: bool) {
    println!();
    println!(
        "pseudostream bench — {} — {} cores — {} workers — result topic: {}",
        Utc::now().format("%Y-%m-%d %H:%M UTC"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        config.workers,
        if kafka { "Kafka" } else { "embedded log" }
    );
    println!();
    println!("| measurement | pseudostream | baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    for f in table {
        println!(
            "| {} | {} | {} | {} | {} |",
            f.what, f.ours, f.baseline, f.ratio, f.target
        );
    }
}

/// The process's resident memory now and at its peak (the server is in this process).
fn rss_line(when: &str) -> Figure {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or("?".to_owned(), |kb| format!("{} MiB", kb / 1024))
    };
    Figure {
        what: format!("RSS {when} (now / peak)"),
        ours: format!("{} / {}", field("VmRSS:"), field("VmHWM:")),
        baseline: "-".into(),
        ratio: "-".into(),
        target: "bounded".into(),
    }
}

/// A minimal API client.
struct Client {
    http: reqwest::Client,
    base: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Submitted {
    job_id: String,
    #[serde(default)]
    first_chunk: Option<ChunkHead>,
}

/// What the bench reads of a chunk; its rows are skipped, not built.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChunkHead {
    is_last: bool,
    #[serde(default)]
    total_rows: Option<u64>,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
struct Page {
    chunks: Vec<ChunkHead>,
    next: u64,
}

impl Client {
    fn new(base: String) -> Client {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build()
            .expect("a default HTTP client builds");
        Client { http, base }
    }

    async fn submit(&self, body: &Value, wait: Option<u32>) -> anyhow::Result<Submitted> {
        let url = match wait {
            Some(w) => format!("{}/v1/jobs?wait={w}", self.base),
            None => format!("{}/v1/jobs", self.base),
        };
        let res = self
            .http
            .post(url)
            .bearer_auth(KEY)
            .json(body)
            .send()
            .await?;
        let status = res.status();
        let text = res.text().await?;
        if status.as_u16() != 202 {
            bail!("submit answered {status}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    async fn page(&self, job: &str, from: u64, wait: u32) -> anyhow::Result<(Page, usize)> {
        let url = format!(
            "{}/v1/jobs/{job}/chunks?from={from}&limit=1000&wait={wait}",
            self.base
        );
        let res = self.http.get(url).bearer_auth(KEY).send().await?;
        let status = res.status();
        let bytes = res.bytes().await?;
        if !status.is_success() {
            bail!(
                "chunks answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok((serde_json::from_slice(&bytes)?, bytes.len()))
    }

    async fn cancel(&self, job: &str) -> anyhow::Result<()> {
        self.http
            .delete(format!("{}/v1/jobs/{job}", self.base))
            .bearer_auth(KEY)
            .send()
            .await?;
        Ok(())
    }

    /// `GET` of an API path, decoded.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        Ok(self
            .http
            .get(url)
            .bearer_auth(KEY)
            .send()
            .await?
            .json()
            .await?)
    }

    /// Every chunk of a finished job, as JSON text of its stored size.
    async fn chunk_texts(&self, job: &str) -> anyhow::Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Texts {
            chunks: Vec<Value>,
            next: u64,
        }
        let (mut from, mut texts) = (0, Vec::new());
        loop {
            let page: Texts = self
                .get_json(&format!("/v1/jobs/{job}/chunks?from={from}&limit=1000"))
                .await?;
            if page.chunks.is_empty() {
                return Ok(texts);
            }
            texts.extend(page.chunks.iter().map(Value::to_string));
            from = page.next;
        }
    }

    /// Reads a job to its last chunk: (rows, chunks, bytes of chunk pages, status).
    async fn read_all(&self, job: &str) -> anyhow::Result<(u64, u64, u64, String)> {
        let (mut from, mut bytes) = (0, 0u64);
        loop {
            let (page, n) = self.page(job, from, 20).await?;
            bytes += n as u64;
            from = page.next;
            if let Some(last) = page.chunks.last().filter(|c| c.is_last) {
                let status = last.status.clone().unwrap_or_default();
                return Ok((last.total_rows.unwrap_or(0), from, bytes, status));
            }
        }
    }
}

/// `[from, to)` of "the last 90 days", as the API resolves `{last: "90d"}`.
fn last_90_days() -> (DateTime<Utc>, DateTime<Utc>) {
    let now = Utc::now();
    let to = now
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap_or(now)
        .checked_add_signed(TimeDelta::minutes(1))
        .unwrap_or(now);
    (to - TimeDelta::days(90), to)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

async fn first_chunk(client: &Client, concurrency: usize, table: &mut Table) -> anyhow::Result<()> {
    eprintln!("first chunk: {concurrency} concurrent 90-day regex queries");
    let client = Arc::new(Client::new(client.base.clone()));
    let (from, to) = last_90_days();
    // Every job keeps running until all have their first chunk, then all are cancelled.
    let all_measured = Arc::new(tokio::sync::Barrier::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..concurrency {
        let (client, all_measured) = (client.clone(), all_measured.clone());
        let body = json!({
            "filter": format!("endpoint ~ \"^/api/v[12]/(orders|cart)\" and message !~ \"cache hit {n}$\" and latency_ms > 1"),
            "timeRange": {"from": rfc3339(from), "to": rfc3339(to)},
            "maxRows": 100_000 + n,
        });
        tasks.spawn(async move {
            let started = Instant::now();
            let measured = async {
                let job = client.submit(&body, Some(5)).await?;
                if job.first_chunk.is_some() {
                    return anyhow::Ok((started.elapsed(), job.job_id));
                }
                loop {
                    let (page, _) = client.page(&job.job_id, 0, 20).await?;
                    if !page.chunks.is_empty() {
                        return Ok((started.elapsed(), job.job_id));
                    }
                }
            }
            .await;
            all_measured.wait().await;
            let (latency, job) = measured?;
            client.cancel(&job).await?;
            anyhow::Ok(latency)
        });
    }
    let mut latencies = Vec::with_capacity(concurrency);
    while let Some(done) = tasks.join_next().await {
        latencies.push(done??);
    }
    latencies.sort();
    for p in [50.0, 95.0, 99.0] {
        table.push(Figure {
            what: format!("first chunk p{p:.0}, {concurrency} concurrent 90-day regex queries"),
            ours: ms(percentile(&latencies, p)),
            baseline: "-".into(),
            ratio: "-".into(),
            target: if p == 95.0 {
                "≤ 100 ms".into()
            } else {
                "-".into()
            },
        });
    }
    Ok(())
}

/// Runs one small query to its end, so figures are those of a service that
/// has served before (in Kafka mode, a producer that knows the topic), not
/// of its first seconds.
async fn warm_up(client: &Client) -> anyhow::Result<()> {
    let (from, to) = last_90_days();
    let body = json!({
        "filter": "latency_ms > 1",
        "timeRange": {"from": rfc3339(from), "to": rfc3339(to)},
        "maxRows": 100,
    });
    let started = Instant::now();
    let job = client.submit(&body, None).await?;
    client.read_all(&job.job_id).await?;
    eprintln!("warm-up query read in {:.1?}", started.elapsed());
    Ok(())
}

/// Drives `POST url` from `clients` concurrent clients for `duration`;
/// returns accepted requests per second and the failures.
async fn drive(
    http: reqwest::Client,
    url: String,
    clients: usize,
    duration: Duration,
    prefix: &'static str,
) -> (f64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let day = json!({"from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"});
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for c in 0..clients {
        let (http, url, ok, failed, stop, day) = (
            http.clone(),
            url.clone(),
            ok.clone(),
            failed.clone(),
            stop.clone(),
            day.clone(),
        );
        tasks.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = json!({
                    "filter": format!("message contains \"{prefix}-{c}-{i}\" or customer = \"cust-{c}-{i}\""),
                    "timeRange": day,
                    "maxRows": 100,
                });
                let res = http.post(&url).bearer_auth(KEY).json(&body).send().await;
                match res {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let secs = started.elapsed().as_secs_f64();
    (
        ok.load(Ordering::Relaxed) as f64 / secs,
        failed.load(Ordering::Relaxed),
    )
}

async fn admission(client: &Client, args: &BenchArgs, table: &mut Table) -> anyhow::Result<()> {
    use axum::Json;
    use axum::http::StatusCode;
    eprintln!(
        "admission: {} clients for {:?} on each side",
        args.admission_clients, args.admission_for
    );
    // The baseline parses the same body and answers 202 with a small JSON body.
    let trivial = axum::Router::new().route(
        "/trivial",
        axum::routing::post(|Json(body): Json<Value>| async move {
            let filter_len = body["filter"].as_str().map_or(0, str::len);
            (
                StatusCode::ACCEPTED,
                Json(json!({"jobId": JobId::new().to_string(), "offset": filter_len})),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let trivial_addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, trivial).await });
    let (base_rate, base_failed) = drive(
        client.http.clone(),
        format!("http://{trivial_addr}/trivial"),
        args.admission_clients,
        args.admission_for,
        "trivial",
    )
    .await;
    server.abort();
    let (rate, failed) = drive(
        client.http.clone(),
        format!("{}/v1/jobs", client.base),
        args.admission_clients,
        args.admission_for,
        "admit",
    )
    .await;
    table.push(Figure {
        what: format!(
            "admission, POST /v1/jobs vs trivial axum route ({} clients; failures {failed} / {base_failed})",
            args.admission_clients
        ),
        ours: format!("{rate:.0} req/s"),
        baseline: format!("{base_rate:.0} req/s"),
        ratio: format!("{:.0} %", 100.0 * rate / base_rate.max(1e-9)),
        target: "≥ 50 %".into(),
    });
    Ok(())
}

async fn delivery(
    client: &Client,
    config: &Config,
    args: &BenchArgs,
    kafka: bool,
    table: &mut Table,
) -> anyhow::Result<()> {
    eprintln!(
        "delivery: {} rows through the result topic",
        args.delivery_rows
    );
    let (from, to) = last_90_days();
    let body = json!({
        "filter": "latency_ms >= 0",
        "timeRange": {"from": rfc3339(from), "to": rfc3339(to)},
        "maxRows": args.delivery_rows,
    });
    let started = Instant::now();
    let job = client.submit(&body, None).await?;
    let (rows, chunks, bytes, status) = client.read_all(&job.job_id).await?;
    let elapsed = started.elapsed();
    let rate = rows as f64 / elapsed.as_secs_f64();
    // The same chunk, re-published raw: one full chunk of real rows.
    let sample = sample_chunk(client, &job.job_id).await?;
    let chunk_bytes = sample.to_json().len();
    let (raw_rate, raw_what) = if kafka {
        let brokers = config.kafka_brokers.clone().unwrap_or_default();
        let payloads = client.chunk_texts(&job.job_id).await?;
        (
            raw_kafka(&brokers, config.kafka_compression, &payloads).await?
                * sample.rows.len() as f64,
            "a raw rdkafka producer (the result topic's settings) re-sending the job's chunks",
        )
    } else {
        (
            raw_memory(&sample, chunks.max(10_000)).await? * sample.rows.len() as f64,
            "raw embedded-log appends",
        )
    };
    table.push(Figure {
        what: format!(
            "delivery: rows/s submit→last chunk read, {rows} rows in {chunks} chunks ({status}, {:.0} B/chunk on the wire), vs {raw_what} ({chunk_bytes} B a chunk)",
            bytes as f64 / chunks.max(1) as f64
        ),
        ours: format!("{rate:.0} rows/s ({:.2} s)", elapsed.as_secs_f64()),
        baseline: format!("{raw_rate:.0} rows/s"),
        ratio: format!("{:.1} %", 100.0 * rate / raw_rate.max(1e-9)),
        target: "≥ 80 %".into(),
    });
    Ok(())
}

/// The first chunk of `job`, rebuilt as a `Chunk` to publish again.
async fn sample_chunk(client: &Client, job: &str) -> anyhow::Result<Chunk> {
    let page: Value = client
        .get_json(&format!("/v1/jobs/{job}/chunks?from=0&limit=1"))
        .await?;
    let rows = page["chunks"][0]["rows"]
        .as_array()
        .context("the delivery job has no first chunk")?
        .iter()
        .filter_map(|r| {
            r.as_object()
                .map(|o| Row::from_pairs(o.iter().map(|(k, v)| (k.as_str(), v))))
        })
        .collect();
    Ok(Chunk {
        job_id: JobId::new(),
        offset: Offset(0),
        chunk_seq: 0,
        is_last: false,
        rows,
        status: None,
        total_rows: None,
        truncated: None,
        error: None,
    })
}

/// Chunks per second appended to a fresh embedded log, encoding included.
async fn raw_memory(sample: &Chunk, count: u64) -> anyhow::Result<f64> {
    let log = MemoryResultLog::new(u64::MAX);
    let mut chunk = sample.clone();
    let started = Instant::now();
    for seq in 0..count {
        chunk.chunk_seq = seq;
        log.publish(&chunk).await?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Messages per second of a plain rdkafka producer (same acks, idempotence
/// and compression as the result topic) sending `payloads` (at least 10,000
/// messages, cycling), every message in flight at once. Real chunks, not
/// filler: compression works on them as on the result topic's.
async fn raw_kafka(
    brokers: &str,
    compression: Compression,
    payloads: &[String],
) -> anyhow::Result<f64> {
    use rdkafka::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    anyhow::ensure!(!payloads.is_empty(), "no chunks to re-send");
    let topic = format!("pseudostream.bench-raw-{}", std::process::id());
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("compression.type", compression.as_str())
        .set("allow.auto.create.topics", "true")
        .create()?;
    // Created like the result topic (a broker may not auto-create topics).
    crate::results::kafka::ensure_topic(brokers, &topic, 1).await?;
    // Warm up: metadata.
    producer
        .send(
            FutureRecord::<str, str>::to(&topic)
                .key("warm")
                .payload(&payloads[0]),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    let count = payloads.len().max(10_000);
    let keys: Vec<String> = (0..count).map(|n| format!("0/{n}")).collect();
    let started = Instant::now();
    let mut inflight = futures::stream::FuturesUnordered::new();
    for (key, payload) in keys.iter().zip(payloads.iter().cycle()) {
        inflight.push(
            producer.send(
                FutureRecord::<str, str>::to(&topic)
                    .key(key.as_str())
                    .payload(payload.as_str()),
                Duration::from_secs(30),
            ),
        );
    }
    while let Some(sent) = inflight.next().await {
        sent.map_err(|(e, _)| e)?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// DuckDB writes the whole result as JSON lines to /dev/null: the same work
/// as ours (filter, sort, encode every row), with no Python objects built.
const DUCKDB: &str = r#"
import sys, time, duckdb
glob, frm, to, re1, re2, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
started = time.perf_counter()
con = duckdb.connect()
con.execute('SET enable_progress_bar = false')  # it would draw on stdout
rows = con.execute(
    f"COPY (SELECT * FROM read_parquet('{glob}') WHERE ts >= make_timestamp({frm}) AND ts < make_timestamp({to}) "
    f"AND regexp_matches(endpoint, '{re1}') AND NOT regexp_matches(message, '{re2}') AND latency_ms > 1 "
    f"ORDER BY ts DESC LIMIT {limit}) TO '/dev/null' (FORMAT JSON)").fetchone()[0]
print(rows, time.perf_counter() - started)
"#;

async fn whole_result(
    client: &Client,
    demo: &std::path::Path,
    args: &BenchArgs,
    table: &mut Table,
) -> anyhow::Result<()> {
    let (re1, re2) = ("^/api/v[12]/(orders|cart)", "cache hit 0$");
    let (from, to) = last_90_days();
    eprintln!("whole result: 90-day regex query, ours then DuckDB");
    let body = json!({
        "filter": format!("endpoint ~ \"{re1}\" and message !~ \"{re2}\" and latency_ms > 1"),
        "timeRange": {"from": rfc3339(from), "to": rfc3339(to)},
        "maxRows": args.whole_rows,
    });
    let started = Instant::now();
    let job = client.submit(&body, None).await?;
    let (rows, _, _, status) = client.read_all(&job.job_id).await?;
    let ours = started.elapsed();

    let glob = demo.join("*.parquet");
    let out = tokio::process::Command::new(&args.python)
        .arg("-c")
        .arg(DUCKDB)
        .arg(glob.to_string_lossy().as_ref())
        .arg(from.timestamp_micros().to_string())
        .arg(to.timestamp_micros().to_string())
        .arg(re1)
        .arg(re2)
        .arg(args.whole_rows.to_string())
        .output()
        .await
        .with_context(|| format!("running {} -c (is duckdb installed?)", args.python))?;
    if !out.status.success() {
        bail!("duckdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    let duck_rows: u64 = words.next().context("duckdb printed nothing")?.parse()?;
    let duck_secs: f64 = words.next().context("duckdb printed no time")?.parse()?;
    table.push(Figure {
        what: format!(
            "whole result, 90-day regex query: {rows} rows ({status}) read over HTTP vs DuckDB {duck_rows} rows, ORDER BY ts DESC, COPY to JSON"
        ),
        ours: format!("{:.2} s", ours.as_secs_f64()),
        baseline: format!("{duck_secs:.2} s"),
        ratio: format!("{:.2}×", ours.as_secs_f64() / duck_secs.max(1e-9)),
        target: "≤ 1.5×".into(),
    });
    Ok(())
}
