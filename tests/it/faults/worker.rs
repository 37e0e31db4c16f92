//! Worker faults: a worker frozen past its lease, then resumed (scenario
//! 2). The workers are real processes (the binary's `worker`), so SIGSTOP
//! freezes everything of one, its heartbeat and its Kafka producer
//! included; the API runs in the test, on the same Redis, Postgres and
//! topic.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use pseudostream::config::Config;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::harness::*;
use crate::support::{ALICE, Server, body_text, scratch_dir, start_binary, wait_until};

/// Days of generated data, and rows a day: a job long enough (10,000
/// chunks of 10 rows) to be frozen mid-way and taken over before it ends.
const DAYS: u32 = 2;
const ROWS_PER_DAY: u32 = 50_000;

/// A `pseudostream worker` process with what it logged so far.
struct WorkerProcess {
    child: Child,
    /// The base URL of its `/healthz`, `/readyz` and `/metrics`.
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl WorkerProcess {
    async fn start(config: &Config) -> WorkerProcess {
        let (mut child, url) = start_binary(
            Command::new(env!("CARGO_BIN_EXE_pseudostream"))
                .arg("worker")
                .envs(worker_env(config))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true),
        )
        .await;
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut errors = BufReader::new(child.stderr.take().unwrap()).lines();
        let kept = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = errors.next_line().await {
                kept.lock().unwrap().push(line);
            }
        });
        WorkerProcess { child, url, log }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// Whether it runs a job now, as its `/metrics` say.
    async fn runs_a_job(&self, http: &reqwest::Client) -> bool {
        let metrics = body_text(http.get(format!("{}/metrics", self.url))).await;
        let running = metrics
            .lines()
            .find(|l| l.starts_with("pseudostream_jobs_running "))
            .expect("the jobs_running gauge");
        running != "pseudostream_jobs_running 0"
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // A failed scenario shows what the worker said.
        if std::thread::panicking() {
            for line in self.log.lock().unwrap().iter().rev().take(40).rev() {
                eprintln!("worker {}: {line}", self.url);
            }
        }
        // A frozen process must be thawed to die of the kill on drop.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    }
}

/// The settings of `config` a worker process needs, as its environment.
fn worker_env(config: &Config) -> Vec<(String, String)> {
    let some = |v: &Option<String>| v.clone().expect("set by distributed_config");
    [
        ("PSEUDOSTREAM_SOURCE", some(&config.source)),
        (
            "PSEUDOSTREAM_DATA_DIR",
            scratch_dir().to_string_lossy().into_owned(),
        ),
        ("PSEUDOSTREAM_REDIS_URL", some(&config.redis_url)),
        ("PSEUDOSTREAM_REDIS_PREFIX", config.redis_prefix.clone()),
        ("PSEUDOSTREAM_KAFKA_BROKERS", some(&config.kafka_brokers)),
        ("PSEUDOSTREAM_KAFKA_TOPIC", config.kafka_topic.clone()),
        (
            "PSEUDOSTREAM_KAFKA_PARTITIONS",
            config.kafka_partitions.to_string(),
        ),
        ("PSEUDOSTREAM_DATABASE_URL", some(&config.database_url)),
        (
            "PSEUDOSTREAM_WORKER_LEASE",
            format!("{}ms", config.worker_lease.as_millis()),
        ),
        (
            "PSEUDOSTREAM_OFFSET_POOL_SIZE",
            config.offset_pool_size.to_string(),
        ),
        ("PSEUDOSTREAM_WORKERS", "1".into()),
        ("PSEUDOSTREAM_LISTEN", "127.0.0.1:0".into()),
        // Warnings, and the worker's own news: which job it started.
        ("RUST_LOG", "warn,pseudostream::worker=info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A dataset of its own, larger than the suite's, so a job runs for a while.
fn long_dataset() -> PathBuf {
    let data = scratch_dir();
    let today = Utc::now().date_naive();
    pseudostream::demo::generate(&data, today, DAYS, ROWS_PER_DAY, 7, &|_, _| {}).unwrap();
    data
}

/// The job's record as stored in Redis.
async fn stored_record(config: &Config, job_id: &str) -> Value {
    let client = ::redis::Client::open(config.redis_url.clone().unwrap()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let json: String = ::redis::cmd("GET")
        .arg(format!("{}:job:{job_id}", config.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    serde_json::from_str(&json).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault suite: needs redis-server, initdb and pg_ctl, runuser, and Kafka"]
async fn a_worker_frozen_past_its_lease_is_fenced_off_when_it_resumes() {
    let redis = PrivateRedis::start().await;
    let postgres = PrivatePostgres::start().await;
    let data = long_dataset();
    let mut config = distributed_config(&redis, &postgres);
    config.source = Some(data.to_string_lossy().into_owned());
    // Only the worker processes run jobs.
    let server = Server::start_api(config.clone()).await;

    let http = reqwest::Client::new();
    let (a, b) = (
        WorkerProcess::start(&config).await,
        WorkerProcess::start(&config).await,
    );
    let job = timed_submit(&server, "").await.job_id();
    let chunks = async || {
        let (_, record) = server.get(ALICE, &format!("/v1/jobs/{job}")).await;
        record["chunks"].as_u64().unwrap_or(0)
    };
    // The worker that took the job (the other waits on the queue).
    // The worker that took the job says so in its log (the other waits on
    // the queue).
    let end = Instant::now() + Duration::from_secs(30);
    let a_runs_it = loop {
        if a.logged("job started") {
            break true;
        }
        if b.logged("job started") {
            break false;
        }
        assert!(Instant::now() < end, "no worker took the job");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let (frozen, taking_over) = if a_runs_it { (a, b) } else { (b, a) };
    // Frozen a few batches in, most likely while it waits for a batch's
    // acknowledgement: chunks past the counted ones are in flight.
    wait_until("the job is under way", Duration::from_secs(60), || async {
        chunks().await >= 100
    })
    .await;
    signal(frozen.pid(), "-STOP").await;
    eprintln!("frozen a worker at {} chunks", chunks().await);

    // Past the lease, the other worker takes the job over as attempt 2 and
    // moves it on while the first stays frozen.
    wait_until(
        "another worker took the job over",
        Duration::from_secs(30),
        || async { stored_record(&config, &job).await["attempt"] == 2 },
    )
    .await;
    // Only the current attempt counts chunks: once the last one counted is
    // attempt 2's, the job moved on.
    let last_counted_attempt = async || {
        let from = chunks().await.saturating_sub(1);
        let url = format!("/v1/jobs/{job}/chunks?from={from}&limit=1");
        let (_, page) = server.get(ALICE, &url).await;
        page["chunks"][0]["attempt"].as_u64().unwrap_or(0)
    };
    wait_until(
        "the job moves on under attempt 2",
        Duration::from_secs(30),
        || async { last_counted_attempt().await == 2 },
    )
    .await;
    signal(frozen.pid(), "-CONT").await;
    eprintln!("resumed the frozen worker at {} chunks", chunks().await);

    // The resumed worker finds it was taken over and stops without
    // finishing the job or moving it on.
    wait_until(
        "the resumed worker stops",
        Duration::from_secs(30),
        || async { frozen.logged("another worker took the job over") },
    )
    .await;
    assert!(!frozen.runs_a_job(&http).await);

    let served = check_job_in(&server, &postgres, &job, &data).await;
    let last = served.last().unwrap();
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(last["attempt"], 2, "the attempt that took over ended it");
    assert_eq!(served[0]["attempt"], 1, "the first attempt's chunks stay");
    assert_eq!(stored_record(&config, &job).await["attempt"], 2);
    assert!(
        !taking_over.logged("another worker took the job over"),
        "the current attempt was never fenced"
    );

    // The topic read directly: every seq's served copy is the newest
    // attempt's, wherever the older copies landed, and so is its last copy
    // (what compaction keeps): a late stale copy is followed by the newest
    // attempt's copy written again.
    let copies = copies_in_topic(&config, &job).await;
    assert_eq!(copies.len(), served.len(), "every seq is in the topic");
    let (mut both, mut stale_after, mut written_again) = (0, 0, 0);
    for (chunk, (seq, copies)) in served.iter().zip(&copies) {
        assert_eq!(chunk["chunkSeq"], *seq);
        let newest = copies.iter().map(|(a, _)| *a).max().unwrap();
        assert_eq!(chunk["attempt"], newest, "seq {seq}: copies {copies:?}");
        // What compaction keeps, the last copy, is the newest attempt's.
        let last = copies.iter().max_by_key(|(_, at)| *at).unwrap();
        assert_eq!(last.0, newest, "seq {seq}: copies {copies:?}");
        if copies.iter().any(|(a, _)| *a < newest) {
            both += 1;
            // Measured from the newest attempt's first copy.
            let current = copies.iter().find(|(a, _)| *a == newest).unwrap().1;
            stale_after += copies
                .iter()
                .filter(|(a, at)| *a < newest && *at > current)
                .count();
            written_again += copies.iter().filter(|(a, _)| *a == newest).count() - 1;
        }
    }
    let by = |attempt: u64| served.iter().filter(|c| c["attempt"] == attempt).count();
    eprintln!(
        "frozen worker: {} chunks served from attempt 1, {} from attempt 2; {both} seqs written by both (the stale copy landed after the current one for {stale_after}; the current one written again after it: {written_again})",
        by(1),
        by(2)
    );
    drop(taking_over);
    server.stop().await;
}
