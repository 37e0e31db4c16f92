//! Many instances act as one service: two API processes and two worker
//! processes (the real binary) on one Kafka, Redis and Postgres. A worker is
//! killed mid-job; the other takes the job over and the reader sees every
//! row once, in order. After the TTL every offset is back in the pool.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chrono::{Duration as Days, Utc};
use futures::StreamExt;
use pseudostream::filter::{self, Limits, Order};
use pseudostream::source::{QuerySource, SourceQuery};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::support::*;

const KEY: &str = "key-scale-out-1";
const DAYS: u32 = 2;
const ROWS_PER_DAY: u32 = 15_000;

struct Stack {
    env: Vec<(String, String)>,
}

impl Stack {
    async fn new(data: &Path) -> Stack {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let schema = format!("ps_test_{}", &id[..12]);
        let database = std::env::var("PSEUDOSTREAM_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let pool = sqlx::PgPool::connect(&database)
            .await
            .expect("Postgres for the scale-out test");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&pool)
            .await
            .unwrap();
        let redis = std::env::var("PSEUDOSTREAM_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let kafka = std::env::var("PSEUDOSTREAM_TEST_KAFKA_BROKERS")
            .unwrap_or_else(|_| "127.0.0.1:9092".into());
        let env = [
            ("PSEUDOSTREAM_SOURCE", data.to_string_lossy().into_owned()),
            (
                "PSEUDOSTREAM_DATA_DIR",
                scratch_dir().to_string_lossy().into_owned(),
            ),
            ("PSEUDOSTREAM_API_KEYS", format!("{KEY}=sam:acme:ops")),
            ("PSEUDOSTREAM_REDIS_URL", redis),
            ("PSEUDOSTREAM_REDIS_PREFIX", format!("ps-test-{id}")),
            ("PSEUDOSTREAM_KAFKA_BROKERS", kafka),
            ("PSEUDOSTREAM_KAFKA_TOPIC", format!("ps-test-{id}")),
            ("PSEUDOSTREAM_KAFKA_PARTITIONS", "4".into()),
            (
                "PSEUDOSTREAM_DATABASE_URL",
                format!("{database}?options=-c%20search_path%3D{schema}"),
            ),
            ("PSEUDOSTREAM_WORKER_LEASE", "2s".into()),
            ("PSEUDOSTREAM_RESULT_TTL", "60s".into()),
            ("PSEUDOSTREAM_EXPIRY_INTERVAL", "200ms".into()),
            ("PSEUDOSTREAM_RATE_LIMIT", "0/1s".into()),
            ("PSEUDOSTREAM_WORKERS", "1".into()),
            ("PSEUDOSTREAM_OFFSET_POOL_SIZE", "50".into()),
            ("PSEUDOSTREAM_LISTEN", "127.0.0.1:0".into()),
            ("RUST_LOG", "warn".into()),
        ];
        Stack {
            env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pseudostream"));
        command
            .args(args)
            .envs(self.env.iter().cloned())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Starts an API-only process and returns it with its base URL.
    async fn api(&self) -> (Child, String) {
        self.start(&["serve", "--no-workers"]).await
    }

    /// Starts a worker-only process and returns it with the base URL of its
    /// health, readiness and metrics.
    async fn worker(&self) -> (Child, String) {
        self.start(&["worker"]).await
    }

    /// Spawns the binary and reads the URL its first line ends with.
    async fn start(&self, args: &[&str]) -> (Child, String) {
        start_binary(&mut self.command(args)).await
    }
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = http.get(url).bearer_auth(KEY).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

async fn submit(http: &reqwest::Client, base: &str, body: Value) -> Value {
    let r = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json().await.unwrap()
}

async fn read_all(http: &reqwest::Client, base: &str, job_id: &str) -> Vec<Value> {
    let mut chunks: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {job_id} did not finish"
        );
        let url = format!(
            "{base}/v1/jobs/{job_id}/chunks?from={}&limit=1000&wait=5",
            chunks.len()
        );
        let (status, page) = get(http, &url).await;
        assert_eq!(status, 200, "{page}");
        for chunk in page["chunks"].as_array().unwrap() {
            assert_eq!(
                chunk["chunkSeq"].as_u64().unwrap(),
                chunks.len() as u64,
                "no gaps, no repeats"
            );
            chunks.push(chunk.clone());
        }
        if chunks.last().is_some_and(|c| c["isLast"] == true) {
            return chunks;
        }
    }
}

#[tokio::test]
#[ignore = "needs Kafka (PSEUDOSTREAM_TEST_KAFKA_BROKERS), Redis and Postgres"]
async fn two_apis_and_two_workers_act_as_one_service() {
    let data = scratch_dir();
    let today = Utc::now().date_naive();
    pseudostream::demo::generate(&data, today, DAYS, ROWS_PER_DAY, 7, &|_, _| {}).unwrap();
    let from = (today - Days::days(DAYS as i64 - 1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let to = (today + Days::days(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let range = json!({ "from": from.to_rfc3339(), "to": to.to_rfc3339() });

    let stack = Stack::new(&data).await;
    let (_api1, base1) = stack.api().await;
    let (_api2, base2) = stack.api().await;
    let http = reqwest::Client::new();

    // One worker first, so we know who runs the long job.
    let (mut first_worker, _) = stack.worker().await;
    let long = submit(
        &http,
        &base1,
        json!({ "filter": "", "timeRange": range, "order": "asc" }),
    )
    .await;
    let long_id = long["jobId"].as_str().unwrap().to_owned();
    wait_until(
        "the long job is well under way",
        Duration::from_secs(120),
        || async {
            get(&http, &format!("{base2}/v1/jobs/{long_id}")).await.1["chunks"]
                .as_u64()
                .unwrap_or(0)
                >= 50
        },
    )
    .await;
    let (_second_worker, second_worker_url) = stack.worker().await;
    first_worker.start_kill().unwrap();
    first_worker.wait().await.unwrap();

    // More jobs, spread over both APIs, while the survivor takes over.
    let mut others = Vec::new();
    for (n, status) in [200, 201, 404, 500, 503].iter().enumerate() {
        let base = if n % 2 == 0 { &base1 } else { &base2 };
        let body = json!({ "filter": format!("status = {status}"), "timeRange": range });
        others.push((submit(&http, base, body).await, *status));
    }

    // The short jobs first: they finish while the long one still runs.
    let mut offsets = HashSet::new();
    offsets.insert(long["offset"].as_u64().unwrap());
    for (job, status) in &others {
        let base = if offsets.len() % 2 == 0 {
            &base1
        } else {
            &base2
        };
        let chunks = read_all(&http, base, job["jobId"].as_str().unwrap()).await;
        assert_eq!(chunks.last().unwrap()["status"], "completed");
        for row in chunks.iter().flat_map(|c| c["rows"].as_array().unwrap()) {
            assert_eq!(row["status"], *status);
        }
        assert!(
            offsets.insert(job["offset"].as_u64().unwrap()),
            "two live jobs never share an offset"
        );
    }

    let chunks = read_all(&http, &base2, &long_id).await;
    let last = chunks.last().unwrap();
    assert_eq!(last["status"], "completed");
    assert_eq!(chunks.iter().filter(|c| c["isLast"] == true).count(), 1);
    let got: Vec<Value> = chunks
        .iter()
        .flat_map(|c| c["rows"].as_array().unwrap().clone())
        .collect();
    assert_eq!(got.len() as u32, DAYS * ROWS_PER_DAY, "every row once");

    // A worker process answers probes and scrapes, with what it ran.
    let probe = |path: &str| format!("{second_worker_url}{path}");
    assert_eq!(get(&http, &probe("/healthz")).await.0, 200);
    assert_eq!(get(&http, &probe("/readyz")).await.0, 200);
    let metrics = body_text(http.get(probe("/metrics"))).await;
    assert!(
        metrics.contains("pseudostream_jobs_finished_total{status=\"completed\"}"),
        "{metrics}"
    );
    assert_eq!(
        get(&http, &probe("/v1/jobs")).await.0,
        404,
        "no API on a worker"
    );

    // The same rows a direct query gives, in the same order.
    let source = open_parquet(&data.to_string_lossy(), "ts").await;
    let compiled = filter::compile(
        "",
        source.schema(),
        &Limits::default(),
        &filter::RegexCache::default(),
    )
    .unwrap();
    let query = SourceQuery {
        predicate: compiled.predicate().clone(),
        from_us: from.timestamp_micros(),
        to_us: to.timestamp_micros(),
        fields: vec![],
        order: Order::Asc,
        skip: 0,
        limit: u64::MAX,
    };
    let direct: Vec<Value> = source
        .query(query)
        .await
        .unwrap()
        .map(|r| Value::Object(r.unwrap().fields()))
        .collect()
        .await;
    assert!(got == direct, "rows differ from a direct query");

    // After the TTL, every offset returns to the pool.
    wait_until(
        "every offset is free again",
        Duration::from_secs(60),
        || async {
            let (_, ready) = get(&http, &format!("{base1}/readyz")).await;
            ready["offsets"]["leased"] == 0
        },
    )
    .await;
    let (_, audit) = get(&http, &format!("{base2}/v1/audit?user=sam")).await;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 6, "every submission audited once");
    assert!(entries.iter().all(|e| e["status"] == "expired"), "{audit}");
}
