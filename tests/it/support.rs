//! Starting a server for a test, an HTTP client with keys, `wait_until`, and
//! the Postgres fixtures (fresh schemas, loading a Parquet dataset).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use pseudostream::app::{self, RunningApp};
use pseudostream::config::{Config, RateLimit};
use pseudostream::jobs::Hooks;
use serde_json::{Value, json};

pub const ALICE: &str = "key-alice-0001";
pub const BOB: &str = "key-bob-000002";
pub const OLGA_OPS: &str = "key-olga-00003";
pub const ZED_OTHER_TENANT: &str = "key-zed-000004";
pub const ZOE_OTHER_TENANT_OPS: &str = "key-zoe-000005";

pub const DEMO_DAYS: u32 = 3;
pub const DEMO_ROWS_PER_DAY: u32 = 400;

/// A directory of the test's own that outlives it (a server or a child
/// process may still write there while the test unwinds).
pub fn scratch_dir() -> PathBuf {
    tempfile::tempdir().expect("temp dir").keep()
}

/// The body of the answer to `request`, as text.
pub async fn body_text(request: reqwest::RequestBuilder) -> String {
    let response = request.send().await.expect("an answer");
    response.text().await.expect("a body")
}

/// One small demo dataset for the whole test binary, generated once.
pub fn dataset() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir().join("demo");
        std::fs::create_dir_all(&dir).expect("dataset dir");
        pseudostream::demo::generate(
            &dir,
            chrono::Utc::now().date_naive(),
            DEMO_DAYS,
            DEMO_ROWS_PER_DAY,
            pseudostream::demo::DEMO_SEED,
            &|_, _| {},
        )
        .expect("demo data");
        dir
    })
}

/// The whole test dataset's time range, `{from, to}`: from its first day's
/// midnight to tomorrow's. Unlike `last: 7d`, it holds every row at any hour:
/// just after midnight UTC, the part of today's file already in the past
/// holds few rows, so a rare filter may match none of the last 7 days.
pub fn dataset_range() -> Value {
    let today = chrono::Utc::now().date_naive();
    let midnight = |day: chrono::NaiveDate| {
        day.and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    json!({
        "from": midnight(today - chrono::Days::new(u64::from(DEMO_DAYS) - 1)),
        "to": midnight(today + chrono::Days::new(1)),
    })
}

/// Test settings: small dataset, no rate limit, ephemeral port.
pub fn config() -> Config {
    let mut config = Config::defaults();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.source = Some(dataset().to_string_lossy().into_owned());
    config.data_dir = scratch_dir();
    config.api_keys = format!(
        "{ALICE}=alice:acme:query,{BOB}=bob:acme:query,{OLGA_OPS}=olga:acme:ops,{ZED_OTHER_TENANT}=zed:globex:query,{ZOE_OTHER_TENANT_OPS}=zoe:globex:ops"
    );
    config.rate_limit = RateLimit {
        count: 0,
        per: Duration::from_secs(1),
    };
    config.workers = 2;
    config.shutdown_grace = Duration::from_secs(2);
    config
}

pub struct Server {
    pub app: RunningApp,
    pub base: String,
    pub http: reqwest::Client,
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(config(), Hooks::default()).await
    }

    pub async fn start_with(config: Config, hooks: Hooks) -> Server {
        Server::start_roles(config, app::Roles::ALL, hooks).await
    }

    /// A server with the API only: the jobs it admits run in other
    /// processes.
    pub async fn start_api(config: Config) -> Server {
        let roles = app::Roles {
            api: true,
            workers: false,
        };
        Server::start_roles(config, roles, Hooks::default()).await
    }

    async fn start_roles(config: Config, roles: app::Roles, hooks: Hooks) -> Server {
        let (app, _) = app::start_with_hooks(config, roles, hooks)
            .await
            .expect("server starts");
        let base = format!("http://{}", app.addr.expect("the API role listens"));
        Server {
            app,
            base,
            // Idle connections are dropped before the server's own idle
            // limit (its 10 s header timeout) closes them under a request.
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        }
    }

    /// A server whose workers take a permit of the returned gate before
    /// publishing each chunk: `permits` chunks pass, then every job is held
    /// until the test adds more.
    pub async fn start_gated(permits: usize) -> (Server, std::sync::Arc<tokio::sync::Semaphore>) {
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(permits));
        let hooks = Hooks {
            chunk_gate: Some(gate.clone()),
            ..Hooks::default()
        };
        (Server::start_with(config(), hooks).await, gate)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        decode(response).await
    }

    pub async fn post(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("request");
        decode(response).await
    }

    pub async fn delete(&self, key: &str, path: &str) -> (u16, Value) {
        let response = self
            .http
            .delete(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        decode(response).await
    }

    /// Submits `filter` over the last 7 days and returns the 202 body.
    pub async fn submit(&self, key: &str, filter: &str) -> Value {
        let (status, body) = self
            .post(
                key,
                "/v1/jobs",
                json!({ "filter": filter, "timeRange": { "last": "7d" } }),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body
    }

    /// Reads every chunk of a job until `isLast`, checking the sequence.
    pub async fn read_all(&self, key: &str, job_id: &str) -> Vec<Value> {
        let mut chunks: Vec<Value> = Vec::new();
        let mut next = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {job_id} did not finish"
            );
            let (status, page) = self
                .get(key, &format!("/v1/jobs/{job_id}/chunks?from={next}&wait=5"))
                .await;
            assert_eq!(status, 200, "{page}");
            for chunk in page["chunks"].as_array().unwrap() {
                assert_eq!(
                    chunk["chunkSeq"].as_u64().unwrap(),
                    chunks.len() as u64,
                    "gap or repeat"
                );
                chunks.push(chunk.clone());
            }
            next = page["next"].as_u64().unwrap();
            if chunks.last().is_some_and(|c| c["isLast"] == true) {
                return chunks;
            }
        }
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        body_text(self.http.get(self.url("/metrics"))).await
    }

    pub async fn stop(self) {
        self.app.shutdown.cancel();
        self.app.done.await.expect("join").expect("clean shutdown");
    }
}

async fn decode(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// Spawns the binary (`command`, with stdout piped) and waits for the
/// address its first line ends with; returns the process and that URL.
pub async fn start_binary(
    command: &mut tokio::process::Command,
) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = command.spawn().expect("spawn the binary");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the process starts within a minute")
        .unwrap()
        .expect("the process prints its address");
    let url = line.rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://"), "{line}");
    (child, url)
}

/// Polls `predicate` until it holds or `deadline` passes; no fixed sleeps.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut predicate: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    while !predicate().await {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn rows(chunks: &[Value]) -> Vec<Value> {
    chunks
        .iter()
        .flat_map(|c| c["rows"].as_array().unwrap().clone())
        .collect()
}

/// Opens a Parquet source outside a server, on a query runtime of its own.
pub async fn open_parquet(
    location: &str,
    time_column: &str,
) -> pseudostream::source::ParquetSource {
    let runtime = pseudostream::source::QueryRuntime::new(2).expect("query runtime threads");
    pseudostream::source::ParquetSource::open(location, time_column, &runtime)
        .await
        .expect("open parquet")
}

// ---- Postgres fixtures (for the tests marked `#[ignore = "needs Postgres ..."]`)

/// The test database: `PSEUDOSTREAM_TEST_DATABASE_URL`, or the local default.
pub fn pg_url() -> String {
    std::env::var("PSEUDOSTREAM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema name no other test uses: each test gets its own namespace.
pub fn fresh_schema_name() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("ps_test_{}", &id[..12])
}

/// An administrative connection to the test database; panics loudly when
/// there is none, since the test was asked to run against Postgres.
pub async fn pg_admin() -> sqlx::PgPool {
    let url = pg_url();
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to the test Postgres at {url}: {e}; start one or set PSEUDOSTREAM_TEST_DATABASE_URL"
            )
        })
}

/// Drops a test schema and everything in it.
pub async fn drop_schema(schema: &str) {
    let admin = pg_admin().await;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&admin)
        .await
        .expect("drop test schema");
    admin.close().await;
}

/// Copies a Parquet dataset into a new table `schema.table` with the matching
/// Postgres types (time → timestamptz, string → text, integer → bigint,
/// float → double precision, boolean → boolean), via batched multi-row
/// INSERTs whose every value is a bind parameter. Reads the data with
/// `ParquetSource` (an unfiltered ascending query), so what is loaded is
/// exactly what the Parquet source returns. Returns the number of rows.
pub async fn load_parquet_into_postgres(
    pool: &sqlx::PgPool,
    dir: &std::path::Path,
    time_column: &str,
    schema: &str,
    table: &str,
) -> u64 {
    use futures::TryStreamExt;
    use pseudostream::filter::FieldType;
    use pseudostream::source::{QuerySource, SourceQuery};

    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let src = open_parquet(dir.to_str().expect("utf-8 path"), time_column).await;
    let fields = src.schema().fields.clone();
    let relation = format!("{}.{}", quote(schema), quote(table));
    let columns: Vec<String> = fields
        .iter()
        .map(|(name, ty)| {
            let pg = match ty {
                FieldType::Time => "timestamptz",
                FieldType::String => "text",
                FieldType::Integer => "bigint",
                FieldType::Float => "double precision",
                FieldType::Boolean => "boolean",
            };
            format!("{} {pg}", quote(name))
        })
        .collect();
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote(schema)))
        .execute(pool)
        .await
        .expect("create schema");
    sqlx::query(&format!("CREATE TABLE {relation} ({})", columns.join(", ")))
        .execute(pool)
        .await
        .expect("create table");

    let rows: Vec<pseudostream::source::Row> = src
        .query(SourceQuery::everything())
        .await
        .expect("query parquet")
        .try_collect()
        .await
        .expect("read parquet");
    let rows: Vec<serde_json::Map<String, Value>> =
        rows.iter().map(pseudostream::source::Row::fields).collect();
    let names: Vec<String> = fields.iter().map(|(n, _)| quote(n)).collect();
    // Well below the protocol's 65535 parameters per statement.
    let per_batch = (60_000 / fields.len().max(1)).min(1000);
    for batch in rows.chunks(per_batch) {
        let mut tuples = Vec::with_capacity(batch.len());
        let mut n = 0;
        for _ in batch {
            let ps: Vec<String> = fields
                .iter()
                .map(|_| {
                    n += 1;
                    format!("${n}")
                })
                .collect();
            tuples.push(format!("({})", ps.join(", ")));
        }
        let sql = format!(
            "INSERT INTO {relation} ({}) VALUES {}",
            names.join(", "),
            tuples.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for row in batch {
            for (name, ty) in &fields {
                let v = &row[name];
                q = match ty {
                    FieldType::Time => q.bind(v.as_str().map(|s| {
                        chrono::DateTime::parse_from_rfc3339(s)
                            .expect("rfc 3339 time")
                            .with_timezone(&chrono::Utc)
                    })),
                    FieldType::String => q.bind(v.as_str().map(str::to_owned)),
                    FieldType::Integer => q.bind(v.as_i64()),
                    FieldType::Float => q.bind(v.as_f64()),
                    FieldType::Boolean => q.bind(v.as_bool()),
                };
            }
        }
        q.execute(pool).await.expect("insert batch");
    }
    rows.len() as u64
}

/// A time range covering the whole test dataset, as a submission's `timeRange`.
pub fn whole_dataset() -> Value {
    let today = chrono::Utc::now().date_naive();
    let day = |d: chrono::NaiveDate| d.and_hms_opt(0, 0, 0).unwrap().and_utc().to_rfc3339();
    json!({
        "from": day(today - chrono::Days::new(u64::from(DEMO_DAYS))),
        "to": day(today + chrono::Days::new(1)),
    })
}

/// The rows a direct query of the dataset in `data` (the test dataset, or
/// a test's own) gives for `job` (a job as `GET /v1/jobs/{id}` shows it:
/// its filter, time range, fields and order).
pub async fn direct_rows(data: &std::path::Path, job: &Value) -> Vec<Value> {
    use futures::StreamExt;
    use pseudostream::source::{QuerySource, SourceQuery};
    let source = open_parquet(&data.to_string_lossy(), "ts").await;
    let compiled = pseudostream::filter::compile(
        job["filter"].as_str().unwrap(),
        source.schema(),
        &pseudostream::filter::Limits::default(),
        &pseudostream::filter::RegexCache::default(),
    )
    .unwrap();
    let time = |name: &str| {
        chrono::DateTime::parse_from_rfc3339(job["timeRange"][name].as_str().unwrap())
            .unwrap()
            .timestamp_micros()
    };
    let query = SourceQuery {
        predicate: compiled.predicate().clone(),
        from_us: time("from"),
        to_us: time("to"),
        fields: serde_json::from_value(job["fields"].clone()).unwrap(),
        order: serde_json::from_value(job["order"].clone()).unwrap(),
        skip: 0,
        limit: job["maxRows"].as_u64().unwrap(),
    };
    source
        .query(query)
        .await
        .unwrap()
        .map(|r| Value::Object(r.unwrap().fields()))
        .collect()
        .await
}
