//! The fault suite's harness: private Redis and Postgres instances on free
//! ports (so no other test sees the fault), signals that kill or freeze
//! them, a server wired to them, and the one checker every scenario ends
//! with.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pseudostream::config::Config;
use pseudostream::jobs::Hooks;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;

use crate::support::{self, Server};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().unwrap().port()
}

/// Sends `signal` (`-STOP`, `-CONT`, `-KILL`) to a process.
pub async fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .await
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Waits until `ready` holds, for at most `within`.
async fn wait_for<F, Fut>(what: &str, within: Duration, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + within;
    while !ready().await {
        assert!(Instant::now() < end, "{what} did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Redis server of the test's own, keeping nothing on disk: a restart
/// loses every key, as a memory-only Redis in production does.
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        let mut redis = PrivateRedis {
            port: free_port(),
            child: None,
        };
        redis.launch().await;
        redis
    }

    async fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs (Debian's redis-server package)");
        self.child = Some(child);
        let port = self.port;
        wait_for(
            "the private Redis",
            Duration::from_secs(10),
            || async move { ping(port).await },
        )
        .await;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().and_then(Child::id).expect("running")
    }

    /// SIGKILL, and waits until the process is gone.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }

    /// Starts again on the same port, with no keys.
    pub async fn restart(&mut self) {
        self.launch().await;
    }

    pub async fn freeze(&self) {
        signal(self.pid(), "-STOP").await;
    }

    pub async fn thaw(&self) {
        signal(self.pid(), "-CONT").await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            // A frozen process must be thawed to die of the kill on drop.
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    }
}

async fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").await.is_ok()
        && tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut reply))
            .await
            .is_ok_and(|r| r.is_ok())
        && &reply == b"+PONG\r\n"
}

/// A Postgres cluster of the test's own, made by `initdb` as the `postgres`
/// user (Postgres refuses to run as root) in a temporary directory.
pub struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    pub async fn start() -> PrivatePostgres {
        let dir = tempfile::Builder::new()
            .prefix("pseudostream-pg-")
            .tempdir()
            .unwrap()
            .keep();
        let status = Command::new("chown")
            .args(["postgres", &dir.to_string_lossy()])
            .status()
            .await
            .unwrap();
        assert!(status.success(), "chown the Postgres directory");
        let data = dir.join("data");
        as_postgres(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "--auth=trust",
                "-U",
                "postgres",
            ],
        )
        .await;
        let postgres = PrivatePostgres {
            dir,
            port: free_port(),
        };
        postgres.launch().await;
        postgres
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    async fn launch(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.to_string_lossy()
        );
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        as_postgres(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-o",
                &options,
                "-l",
                &log.to_string_lossy(),
                "-w",
                "start",
            ],
        )
        .await;
    }

    /// `pg_ctl stop -m immediate`: the server dies without a checkpoint,
    /// dropping every connection, as a crash would.
    pub async fn stop(&self) {
        let data = self.dir.join("data");
        as_postgres(
            "pg_ctl",
            &["-D", &data.to_string_lossy(), "-m", "immediate", "stop"],
        )
        .await;
    }

    pub async fn start_again(&self) {
        self.launch().await;
    }

    /// An administrative connection, for faults made with SQL.
    pub async fn admin(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url()).await.unwrap()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--", "pg_ctl", "-D"])
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a Postgres tool as the `postgres` user (the suite runs as root).
async fn as_postgres(tool: &str, args: &[&str]) {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--", tool])
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{tool} runs: {e}"));
    assert!(
        output.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A tansu broker of the test's own, in memory, on a free port: one the
/// test may freeze without touching the shared broker. It may advertise
/// another port (a proxy's), so that clients go through that.
pub struct PrivateBroker {
    port: u16,
    advertised: u16,
    child: Child,
}

impl PrivateBroker {
    pub async fn start() -> PrivateBroker {
        let port = free_port();
        PrivateBroker::start_advertising(port, port).await
    }

    /// A broker on `port` that tells clients to connect to `advertised`.
    pub async fn start_advertising(port: u16, advertised: u16) -> PrivateBroker {
        let child = PrivateBroker::launch(port, advertised).await;
        PrivateBroker {
            port,
            advertised,
            child,
        }
    }

    async fn launch(port: u16, advertised: u16) -> Child {
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised_url = format!("tcp://127.0.0.1:{advertised}");
        let tansu = std::env::var("HOME")
            .map(|home| format!("{home}/.cargo/bin/tansu"))
            .ok()
            .filter(|path| std::path::Path::new(path).exists())
            .unwrap_or_else(|| "tansu".into());
        let child = Command::new(tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised_url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("tansu runs (.ci/kafka.sh installs it)");
        wait_for(
            "the private broker",
            Duration::from_secs(10),
            || async move { TcpStream::connect(("127.0.0.1", port)).await.is_ok() },
        )
        .await;
        child
    }

    /// SIGKILL, then a new broker on the same port: in memory, it has lost
    /// every topic and record.
    pub async fn restart_empty(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
        self.child = PrivateBroker::launch(self.port, self.advertised).await;
    }

    /// Where clients connect: the advertised port.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    pub async fn freeze(&self) {
        signal(self.child.id().expect("running"), "-STOP").await;
    }

    pub async fn thaw(&self) {
        signal(self.child.id().expect("running"), "-CONT").await;
    }

    /// Every record's key in `topic`, read from each partition's beginning
    /// with a plain consumer, as a connector reading Kafka would.
    pub fn keys(&self, topic: &str, partitions: i32) -> Vec<String> {
        use rdkafka::consumer::Consumer;
        use rdkafka::error::KafkaError;
        use rdkafka::message::Message;
        let mut keys = Vec::new();
        for partition in 0..partitions {
            let consumer = crate::kafka_results::plain_consumer(&self.address(), topic, partition);
            let end = Instant::now() + Duration::from_secs(20);
            loop {
                assert!(
                    Instant::now() < end,
                    "no end of partition {partition} in time"
                );
                match consumer.poll(Duration::from_millis(500)) {
                    None => continue,
                    Some(Err(KafkaError::PartitionEOF(_))) => break,
                    Some(Err(e)) => panic!("consumer error: {e}"),
                    Some(Ok(m)) => {
                        keys.push(String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned())
                    }
                }
            }
            drop(consumer.unassign());
        }
        keys
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    }
}

/// Every copy of the job's chunks in the topic, read with a plain consumer
/// as a connector would: seq -> (attempt, position) of each copy, in the
/// order they landed.
pub async fn copies_in_topic(config: &Config, job_id: &str) -> BTreeMap<u64, Vec<(u32, i64)>> {
    let (topic, partitions) = (config.kafka_topic.clone(), config.kafka_partitions);
    let raw = tokio::task::spawn_blocking(move || {
        (0..partitions)
            .flat_map(|p| crate::kafka_results::read_partition(&topic, p))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let mut copies: BTreeMap<u64, Vec<(u32, i64)>> = BTreeMap::new();
    for m in raw {
        if m.job.as_deref() != Some(job_id) || m.value.is_none() {
            continue;
        }
        let seq = m.seq.expect("chunkSeq header");
        let attempt = m.attempt.expect("attempt header");
        let value = m.value.as_ref().unwrap();
        assert_eq!(value["attempt"], attempt, "header and chunk agree");
        copies.entry(seq).or_default().push((attempt, m.position));
    }
    copies
}

/// The broker every distributed test shares; no scenario here faults it.
pub fn kafka_brokers() -> String {
    std::env::var("PSEUDOSTREAM_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A server on the private Redis and Postgres (and the shared broker, on a
/// topic of its own): short leases, so takeovers happen within a test.
pub fn distributed_config(redis: &PrivateRedis, postgres: &PrivatePostgres) -> Config {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut config = support::config();
    config.redis_url = Some(redis.url());
    config.redis_prefix = format!("ps-fault-{id}");
    config.database_url = Some(postgres.url());
    config.kafka_brokers = Some(kafka_brokers());
    config.kafka_topic = format!("ps-fault-{id}");
    config.kafka_partitions = 2;
    config.worker_lease = Duration::from_secs(2);
    config.result_ttl = Duration::from_secs(120);
    config
}

/// How many chunks a job of `gated_server` publishes before it waits.
const GATE_OPEN_FOR: usize = 2;

/// A server whose jobs publish two chunks, then wait for the gate's
/// permits: a test injects its fault while a job is under way.
pub async fn gated_server(config: Config) -> (Server, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(GATE_OPEN_FOR));
    let hooks = Hooks {
        chunk_gate: Some(gate.clone()),
        ..Hooks::default()
    };
    (Server::start_with(config, hooks).await, gate)
}

/// Submits `filter` to a `gated_server` and waits until its job has
/// published the chunks the gate let through.
pub async fn submit_streaming(server: &Server, filter: &str) -> String {
    let job = timed_submit(server, filter).await.job_id();
    support::wait_until("the job is streaming", Duration::from_secs(30), || async {
        let (_, view) = server.get(support::ALICE, &format!("/v1/jobs/{job}")).await;
        view["chunks"].as_u64() == Some(GATE_OPEN_FOR as u64)
    })
    .await;
    job
}

/// What one request got and how long it took.
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub took: Duration,
    pub body: Value,
}

impl Answer {
    /// A refusal as the outage must give: 503, with `Retry-After`, fast.
    pub fn assert_fast_503(&self, within: Duration) {
        assert_eq!(self.status, 503, "{}", self.body);
        assert!(self.retry_after.is_some(), "503 without Retry-After");
        assert!(
            self.took <= within,
            "the 503 took {:?}, more than {within:?}",
            self.took
        );
    }

    pub fn job_id(&self) -> String {
        assert_eq!(self.status, 202, "{}", self.body);
        self.body["jobId"].as_str().unwrap().to_owned()
    }
}

/// Submits `filter` over the whole dataset with a client that gives up
/// after 30 s, so a hang shows as a slow answer instead of a stuck test.
pub async fn timed_submit(server: &Server, filter: &str) -> Answer {
    let started = Instant::now();
    let response = server
        .http
        .post(server.url("/v1/jobs"))
        .bearer_auth(support::ALICE)
        .timeout(Duration::from_secs(30))
        .json(&json!({ "filter": filter, "timeRange": support::whole_dataset() }))
        .send()
        .await;
    let took = started.elapsed();
    match response {
        Ok(r) => {
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Answer {
                status,
                retry_after,
                took,
                body: r.json().await.unwrap_or_default(),
            }
        }
        Err(_) => Answer {
            status: 0,
            retry_after: None,
            took,
            body: Value::Null,
        },
    }
}

/// Submits until one is admitted, each refusal a fast 503, and fails if
/// none is within `within` of `since` (when the backend came back). Returns
/// the admitted job and how long after `since` it was admitted.
pub async fn admitted_within(
    server: &Server,
    filter: &str,
    since: Instant,
    within: Duration,
) -> (String, Duration) {
    loop {
        let answer = timed_submit(server, filter).await;
        if answer.status == 202 {
            return (answer.job_id(), since.elapsed());
        }
        answer.assert_fast_503(Duration::from_secs(3));
        assert!(
            since.elapsed() <= within,
            "no job admitted within {within:?} of the backend coming back; the last answer: {}",
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The checker every scenario ends with: the job's chunks run 0..n with no
/// gap or repeat and exactly one `isLast` (the last), the attempt each
/// carries never goes backwards, its rows are those of a direct query of
/// the dataset (when the job completed), its status is final, and its audit
/// row says the same status.
pub async fn check_job(server: &Server, postgres: &PrivatePostgres, job_id: &str) {
    check_job_in(server, postgres, job_id, support::dataset()).await;
}

/// `check_job` for a server on the dataset in `data`; returns the chunks
/// as served.
pub async fn check_job_in(
    server: &Server,
    postgres: &PrivatePostgres,
    job_id: &str,
    data: &std::path::Path,
) -> Vec<Value> {
    let chunks = server.read_all(support::ALICE, job_id).await;
    let lasts = chunks.iter().filter(|c| c["isLast"] == true).count();
    assert_eq!(lasts, 1, "exactly one isLast");
    let attempts: Vec<u64> = chunks
        .iter()
        .map(|c| c["attempt"].as_u64().expect("every chunk says its attempt"))
        .collect();
    assert!(attempts[0] >= 1, "attempts count from 1");
    assert!(
        attempts.is_sorted(),
        "a chunk of an older attempt after a newer one's: {attempts:?}"
    );
    let last = chunks.last().unwrap();
    let status = last["status"].as_str().unwrap().to_owned();
    let (code, job) = server
        .get(support::ALICE, &format!("/v1/jobs/{job_id}"))
        .await;
    assert_eq!(code, 200, "{job}");
    assert_eq!(job["status"], status.as_str(), "the job says how it ended");
    if status == "completed" {
        let direct = support::direct_rows(data, &job).await;
        assert!(
            support::rows(&chunks) == direct,
            "rows differ from a direct query"
        );
    } else {
        assert_eq!(status, "failed", "{last}");
        assert!(last["error"].is_string(), "a failed job says why: {last}");
    }
    let admin = postgres.admin().await;
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let audited: Option<(String,)> =
            sqlx::query_as("SELECT status FROM audit_submissions WHERE job_id = $1::uuid")
                .bind(job_id)
                .fetch_optional(&admin)
                .await
                .unwrap();
        let audited = audited.map(|r| r.0).unwrap_or_default();
        if audited == status {
            break;
        }
        assert!(
            Instant::now() < end,
            "the audit row says {audited:?}, the job {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin.close().await;
    chunks
}
