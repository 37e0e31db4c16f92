//! Every setting in one struct: a command-line flag, a `PSEUDOSTREAM_*`
//! environment variable and a default, documented in the README.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Settings for `serve` (and the future `worker`). Durations accept
/// humantime strings such as `5m`, `90d` or `250ms`.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "PSEUDOSTREAM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Parquet files to query: a directory or a glob such as `data/*.parquet`.
    /// When unset, the demo dataset under the data directory is used (and
    /// generated on first start).
    #[arg(long, env = "PSEUDOSTREAM_SOURCE")]
    pub source: Option<String>,

    /// Column that orders results and bounds the time range.
    #[arg(long, env = "PSEUDOSTREAM_TIME_COLUMN", default_value = "ts")]
    pub time_column: String,

    /// Where the demo dataset and the embedded audit database live.
    #[arg(
        long,
        env = "PSEUDOSTREAM_DATA_DIR",
        default_value = "./pseudostream-data"
    )]
    pub data_dir: PathBuf,

    /// API keys as comma-separated `key=user:tenant:role` entries (role is
    /// `query` or `ops`). When empty, a development key is generated and printed.
    #[arg(
        long,
        env = "PSEUDOSTREAM_API_KEYS",
        default_value = "",
        hide_env_values = true
    )]
    pub api_keys: String,

    /// A file of API keys, one `key=user:tenant:role` (or
    /// `sha256:<hex of the key's SHA-256>=user:tenant:role`) a line, `#`
    /// comments allowed; read again on SIGHUP and whenever it changes, so a
    /// key is added or revoked without a restart. Adds to `API_KEYS`.
    #[arg(long, env = "PSEUDOSTREAM_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// Number of result offsets (the fixed pool dashboards embed).
    #[arg(long, env = "PSEUDOSTREAM_OFFSET_POOL_SIZE", default_value_t = 1000)]
    pub offset_pool_size: u32,

    /// Rows per result chunk.
    #[arg(long, env = "PSEUDOSTREAM_CHUNK_ROWS", default_value_t = 10)]
    pub chunk_rows: usize,

    /// How long a finished job's result stays readable.
    #[arg(long, env = "PSEUDOSTREAM_RESULT_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub result_ttl: Duration,

    /// Admission rate for new jobs, per user of a tenant, as `N/PERIOD` (e.g. `1/5s`).
    /// Deduplicated submissions are free. `0/1s` disables the limit.
    #[arg(long, env = "PSEUDOSTREAM_RATE_LIMIT", default_value = "1/5s", value_parser = parse_rate)]
    pub rate_limit: RateLimit,

    /// Row cap per job; the last chunk says `truncated` when it was hit.
    #[arg(long, env = "PSEUDOSTREAM_MAX_ROWS", default_value_t = 500_000)]
    pub max_rows: u64,

    /// Longest time range a query may span.
    #[arg(long, env = "PSEUDOSTREAM_MAX_TIME_RANGE", default_value = "90d", value_parser = humantime::parse_duration)]
    pub max_time_range: Duration,

    /// How old a live job of a relative range (`last 7d`) may be and still
    /// be shared with a new submission of the same query: its resolved end
    /// at most this long ago. A request's `maxStaleness` overrides it; `0`
    /// always starts a fresh job.
    #[arg(long, env = "PSEUDOSTREAM_MAX_STALENESS", default_value = "60s", value_parser = humantime::parse_duration)]
    pub max_staleness: Duration,

    /// Concurrent query workers in this process. A queued job has no first
    /// chunk until a worker takes it, so this is sized above the number of
    /// long queries expected at once (they share the CPU either way).
    #[arg(long, env = "PSEUDOSTREAM_WORKERS", default_value_t = 128)]
    pub workers: usize,

    /// Threads that run jobs (workers and their queries), at a lower OS
    /// priority than the API's; also how many jobs scan past their first
    /// window at once. 0 = one per CPU.
    #[arg(long, env = "PSEUDOSTREAM_QUERY_THREADS", default_value_t = 0)]
    pub query_threads: usize,

    /// Memory the embedded result log may hold; past it, chunks go to spill
    /// files on the disk (or, with `RESULT_DISK` = 0, new jobs get 503).
    #[arg(long, env = "PSEUDOSTREAM_RESULT_MEMORY", default_value = "1073741824")]
    pub result_memory_bytes: u64,

    /// Disk the embedded result log may fill with chunks past
    /// `RESULT_MEMORY` (unlinked files under `DATA_DIR/results`, freed as
    /// results expire); above it new jobs get 503. 0 = no spill files.
    #[arg(long, env = "PSEUDOSTREAM_RESULT_DISK", default_value = "8589934592")]
    pub result_disk_bytes: u64,

    /// Decoded Parquet pages kept in memory and shared by concurrent jobs'
    /// first windows (the newest pages, which dashboards all read first).
    #[arg(long, env = "PSEUDOSTREAM_PAGE_CACHE", default_value_t = DEFAULT_PAGE_CACHE_BYTES)]
    pub page_cache_bytes: usize,

    /// Longest `wait` a chunk long-poll may ask for (kept well under the
    /// dashboard gateway's 60 s timeout).
    #[arg(long, env = "PSEUDOSTREAM_MAX_WAIT", default_value = "25s", value_parser = humantime::parse_duration)]
    pub max_wait: Duration,

    /// Push streams (Server-Sent Events and WebSocket) this instance serves
    /// at once; one more is answered 503 with `Retry-After`. Each is also a
    /// connection, counted against `MAX_CONNECTIONS`.
    #[arg(long, env = "PSEUDOSTREAM_MAX_STREAMS", default_value_t = 10_000)]
    pub max_streams: usize,

    /// Chunks a push stream may have waiting for its client; a client that
    /// falls this far behind the job gets an error event and is dropped
    /// (it may resume with `Last-Event-ID`).
    #[arg(long, env = "PSEUDOSTREAM_STREAM_BUFFER", default_value_t = 1024)]
    pub stream_buffer: usize,

    /// How often an idle push stream sends a heartbeat (an SSE comment, a
    /// WebSocket ping), well under the dashboard gateway's 60 s idle timeout.
    #[arg(long, env = "PSEUDOSTREAM_STREAM_HEARTBEAT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub stream_heartbeat: Duration,

    /// How long shutdown waits for workers to flush before aborting them.
    #[arg(long, env = "PSEUDOSTREAM_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// How often the expiry sweep runs.
    #[arg(long, env = "PSEUDOSTREAM_EXPIRY_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub expiry_interval: Duration,

    /// Largest accepted request body, in bytes. A request declaring more is
    /// refused (413) before its body is read.
    #[arg(long, env = "PSEUDOSTREAM_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Time a client has to send a request's head (line and headers); also
    /// how long a keep-alive connection may sit idle between requests.
    #[arg(long, env = "PSEUDOSTREAM_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// Time a client has to send a request's whole body, counted from its
    /// head (408 past it).
    #[arg(long, env = "PSEUDOSTREAM_BODY_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,

    /// Connections the API holds open at once; one more is answered 503
    /// and closed. Each takes a file descriptor of the process's limit.
    #[arg(long, env = "PSEUDOSTREAM_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Redis for coordination (dedup, offsets, job state, queue, rate limit),
    /// e.g. `redis://127.0.0.1:6379`. Unset: in-process coordination.
    #[arg(long, env = "PSEUDOSTREAM_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key, so several deployments can share a server.
    #[arg(
        long,
        env = "PSEUDOSTREAM_REDIS_PREFIX",
        default_value = "pseudostream"
    )]
    pub redis_prefix: String,

    /// How long one call to Redis or the Postgres audit log may take
    /// (retries included; reads of a few round trips get twice this) before
    /// the request answers 503 with `Retry-After`. Redis answers in well
    /// under a millisecond; this bounds what a frozen or unreachable
    /// backend costs each request.
    #[arg(long, env = "PSEUDOSTREAM_BACKEND_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub backend_timeout: Duration,

    /// How long a distributed worker may stay silent (no heartbeat) before
    /// another worker takes its job over and resumes it. Worker processes
    /// look for such jobs every third of a lease.
    #[arg(long, env = "PSEUDOSTREAM_WORKER_LEASE", default_value = "15s", value_parser = humantime::parse_duration)]
    pub worker_lease: Duration,

    /// Kafka bootstrap servers for the result topic, e.g. `127.0.0.1:9092`.
    /// Unset: the in-process result log. Requires `PSEUDOSTREAM_REDIS_URL`.
    #[arg(long, env = "PSEUDOSTREAM_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// The result topic; created at start-up when missing (compacted).
    #[arg(
        long,
        env = "PSEUDOSTREAM_KAFKA_TOPIC",
        default_value = "pseudostream.results"
    )]
    pub kafka_topic: String,

    /// Partitions of a newly created result topic; offset N goes to partition N mod this.
    #[arg(long, env = "PSEUDOSTREAM_KAFKA_PARTITIONS", default_value_t = 16)]
    pub kafka_partitions: i32,

    /// How the producer compresses the result topic's batches: none, gzip,
    /// snappy or lz4. lz4 sends the broker about a quarter of the bytes and
    /// shortens whole results, but it costs CPU on librdkafka's broker
    /// thread, which also sends every first chunk, and first chunks were
    /// slower with it (docs/PERFORMANCE.md); off by default, for them.
    #[arg(long, env = "PSEUDOSTREAM_KAFKA_COMPRESSION", value_enum, default_value_t = Compression::None)]
    pub kafka_compression: Compression,

    /// A Kafka topic to record every HTTP exchange to (HTTP Types JSON,
    /// no bodies or secrets), for audit and abuse spotting. Needs
    /// `KAFKA_BROKERS`; created when missing. Unset: nothing is recorded.
    #[arg(long, env = "PSEUDOSTREAM_TRAFFIC_TOPIC")]
    pub traffic_topic: Option<String>,

    /// Exchanges queued for the traffic topic at most; past it they are
    /// dropped (and counted in `pseudostream_traffic_dropped_total`), never
    /// waited for.
    #[arg(long, env = "PSEUDOSTREAM_TRAFFIC_QUEUE", default_value_t = 10_000)]
    pub traffic_queue: usize,

    /// Postgres for the audit log, e.g. `postgres://user@host/db`. Unset:
    /// SQLite in the data directory.
    #[arg(long, env = "PSEUDOSTREAM_DATABASE_URL")]
    pub database_url: Option<String>,

    /// How long audit rows are kept (submissions by submission time,
    /// rejection counts by minute); older ones are deleted in batches once
    /// an hour. `0` keeps them forever.
    #[arg(long, env = "PSEUDOSTREAM_AUDIT_RETENTION", default_value = "400d", value_parser = humantime::parse_duration)]
    pub audit_retention: Duration,

    /// How often the counts of submissions turned away (429, 503) are
    /// added to the audit's `audit_rejections`, per minute, user and reason
    /// (never a write per rejection); once more at shutdown. At least 10ms.
    #[arg(long, env = "PSEUDOSTREAM_REJECTION_FLUSH", default_value = "10s", value_parser = humantime::parse_duration)]
    pub rejection_flush: Duration,

    /// With a `postgres://` source: the table or view to query.
    #[arg(long, env = "PSEUDOSTREAM_SOURCE_TABLE", default_value = "events")]
    pub source_table: String,

    /// Rows per day of the generated demo dataset.
    #[arg(long, env = "PSEUDOSTREAM_DEMO_ROWS_PER_DAY", default_value_t = DEMO_ROWS_PER_DAY)]
    pub demo_rows_per_day: u32,

    /// Days in the generated demo dataset, ending today (UTC).
    #[arg(long, env = "PSEUDOSTREAM_DEMO_DAYS", default_value_t = DEMO_DAYS)]
    pub demo_days: u32,
}

/// Decoded Parquet pages kept for first windows when no budget is given:
/// a few dozen pages of the newest day, the ones concurrent dashboards all
/// read first.
pub const DEFAULT_PAGE_CACHE_BYTES: usize = 64 << 20;

/// `PSEUDOSTREAM_BACKEND_TIMEOUT`'s default, for backends built without a `Config`.
pub const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Rows per day of the generated demo dataset.
pub const DEMO_ROWS_PER_DAY: u32 = 60_000;

/// Days in the generated demo dataset, ending today (UTC).
pub const DEMO_DAYS: u32 = 90;

/// How the producer compresses the result topic's record batches. Chunks are
/// JSON rows, which compress several times over, so the broker receives,
/// stores and replicates a fraction of the bytes. Consumers decompress
/// transparently. (zstd is not offered: the bundled librdkafka is built
/// without it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
}

impl Compression {
    /// The value of librdkafka's `compression.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
        }
    }
}

/// `count` new jobs per `per`, per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

impl RateLimit {
    pub fn is_disabled(&self) -> bool {
        self.count == 0
    }
}

fn parse_rate(text: &str) -> Result<RateLimit, String> {
    let (count, per) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not a rate; write it as N/PERIOD, e.g. 1/5s"))?;
    let count = count
        .trim()
        .parse::<u32>()
        .map_err(|e| format!("rate count `{count}`: {e}"))?;
    let per =
        humantime::parse_duration(per.trim()).map_err(|e| format!("rate period `{per}`: {e}"))?;
    if per.is_zero() {
        return Err("the rate period must be longer than zero".into());
    }
    Ok(RateLimit { count, per })
}

impl Config {
    /// Defaults as the CLI would give them with no flags or environment,
    /// for tests and embedding.
    pub fn defaults() -> Config {
        Config::from_args(["pseudostream"]).expect("the defaults parse")
    }

    /// The settings the given command line (with the environment) gives.
    pub fn from_args<const N: usize>(args: [&str; N]) -> Result<Config, clap::Error> {
        use clap::Parser;
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            config: Config,
        }
        Only::try_parse_from(args).map(|only| only.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_batches_are_uncompressed_unless_configured_otherwise() {
        assert_eq!(Config::defaults().kafka_compression, Compression::None);
        let lz4 = Config::from_args(["pseudostream", "--kafka-compression", "lz4"]).unwrap();
        assert_eq!(lz4.kafka_compression, Compression::Lz4);
        assert!(Config::from_args(["pseudostream", "--kafka-compression", "zstd"]).is_err());
    }

    #[test]
    fn parses_rates() {
        assert_eq!(
            parse_rate("1/5s").unwrap(),
            RateLimit {
                count: 1,
                per: Duration::from_secs(5)
            }
        );
        assert!(parse_rate("5s").is_err());
        assert!(parse_rate("1/0s").is_err());
    }
}
