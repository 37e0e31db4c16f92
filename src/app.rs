//! Builds the service from `Config` — every backend constructed once, chosen
//! by configuration alone, and passed down — and runs it with a written
//! shutdown order.
//!
//! Shutdown order: (1) stop admitting (submissions get 503, long-polls
//! return); (2) cancel workers: embedded, each closes its job with a last
//! chunk; distributed, each leaves its job for another worker to resume; (3)
//! join them within the grace period, then abort, and stop the query
//! runtime; (4) let the HTTP server finish in-flight requests; (5) flush the
//! result topic, write the last rejection counts (the submissions turned
//! away until then, the shutdown's own 503s included) and close the audit
//! log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::keys::{ApiKeys, KeyRing};
use crate::api::{self, AppState};
use crate::audit::AuditLog;
use crate::audit::outbox::AuditOutbox;
use crate::audit::postgres::PostgresAuditLog;
use crate::audit::rejections::RejectionTally;
use crate::audit::sqlite::SqliteAuditLog;
use crate::config::Config;
use crate::coord::limiter::LocalRateLimiter;
use crate::coord::policy::{Policy, TimeoutAndRetry};
use crate::coord::queue::{LocalJobQueue, StoreThenQueue};
use crate::coord::redis::{RedisChunkIndex, RedisCoordination, RedisJobQueue, RedisRateLimiter};
use crate::filter::{Limits, RegexCache};
use crate::jobs::{Backends, Hooks, JobSettings, Jobs};
use crate::model::{Principal, Role};
use crate::results::ResultTopic;
use crate::results::cache::CachedResultTopic;
use crate::results::kafka::KafkaResultTopic;
use crate::results::memory::MemoryResultLog;
use crate::results::spill::SpillFiles;
use crate::source::QuerySource;
use crate::source::postgres::PostgresSource;
use crate::source::{ParquetSource, QueryRuntime};
use crate::worker;

/// How often the audit trail is pruned to its retention.
const AUDIT_PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);

/// Which parts of the service this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub api: bool,
    pub workers: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        api: true,
        workers: true,
    };
}

/// A started service.
pub struct RunningApp {
    /// Where the process listens: the API, or in a worker-only process its
    /// health, readiness and metrics. Always set; an `Option` for callers
    /// written when workers did not listen.
    pub addr: Option<SocketAddr>,
    pub jobs: Arc<Jobs>,
    /// What the API's handlers reach, for routes served beside the API
    /// through the same middleware (the bench's baseline route).
    pub state: Arc<AppState>,
    /// Cancel to shut down; then await `done`.
    pub shutdown: CancellationToken,
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// The development key printed when no keys are configured.
pub struct DevKey(pub String);

/// Logs to stderr at `default` unless `RUST_LOG` says otherwise: JSON when
/// stdout is not a terminal (collectors), readable lines when it is.
pub fn init_logging(default: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stdout().is_terminal() {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}

/// Builds every backend, binds the listener and starts serving.
pub async fn start(config: Config, roles: Roles) -> anyhow::Result<(RunningApp, Option<DevKey>)> {
    start_with_hooks(config, roles, Hooks::default()).await
}

/// `start`, with test hooks.
pub async fn start_with_hooks(
    config: Config,
    roles: Roles,
    hooks: Hooks,
) -> anyhow::Result<(RunningApp, Option<DevKey>)> {
    if roles != Roles::ALL && config.redis_url.is_none() {
        anyhow::bail!(
            "running the API and the workers in separate processes needs the distributed queue: set PSEUDOSTREAM_REDIS_URL"
        );
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    // One cache of compiled regexes for submission, workers and the source.
    let regexes = RegexCache::default();
    let mut backends = build_backends(&config, roles, &regexes).await?;
    // Progress and expiry updates that fail wait in an outbox until they land.
    let outbox = Arc::new(AuditOutbox::new(
        backends.audit.clone(),
        config.backend_timeout,
    ));
    backends.audit = outbox.clone();
    let audit = backends.audit.clone();
    let results = backends.results.clone();
    let settings = JobSettings {
        chunk_rows: config.chunk_rows.max(1),
        result_ttl: config.result_ttl,
        max_rows: config.max_rows.max(1),
        max_time_range: config.max_time_range,
        max_wait: config.max_wait,
        max_staleness: config.max_staleness,
        filter_limits: Limits::default(),
        full_retry_after: Duration::from_secs(5),
        stream_buffer: config.stream_buffer.max(1),
    };
    // Submissions turned away are counted in memory and written in bulk.
    let rejections = Arc::new(RejectionTally::new(audit.clone(), config.backend_timeout));
    let jobs = Jobs::new(backends, settings, hooks, regexes, rejections.clone());

    let (keys, dev_key) = api_keys(&config.api_keys, config.api_keys_file.clone())?;
    let reloaded_keys = keys.clone();
    // Every process listens: the API's routes, or for a worker-only
    // process its health, readiness and metrics (for probes and scrapes).
    let traffic = match (&config.traffic_topic, &config.kafka_brokers) {
        (Some(topic), Some(brokers)) if roles.api => Some(
            api::traffic::TrafficRecorder::start(
                brokers,
                topic,
                config.traffic_queue,
                jobs.metrics.clone(),
            )
            .await
            .context("starting the traffic topic")?,
        ),
        (Some(_), None) => anyhow::bail!(
            "PSEUDOSTREAM_TRAFFIC_TOPIC needs PSEUDOSTREAM_KAFKA_BROKERS: the traffic goes to Kafka"
        ),
        _ => None,
    };
    let state = Arc::new(AppState {
        jobs: jobs.clone(),
        keys,
        traffic,
        streams: api::stream::Streams::new(config.max_streams, config.stream_heartbeat),
    });
    let router = if roles.api {
        api::router(state.clone(), api::guard::BodyLimits::of(&config))
    } else {
        api::ops_router(state.clone())
    };
    let limits = api::server::ListenerLimits::of(&config);
    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "binding {}; set PSEUDOSTREAM_LISTEN to another address",
            config.listen
        )
    })?;
    let addr = listener.local_addr()?;
    let closed = jobs.admission_closed.clone();
    let server = Some((
        addr,
        tokio::spawn(api::server::serve(listener, router, limits, closed)),
    ));

    let shutdown = CancellationToken::new();
    tokio::spawn(reloaded_keys.watch(shutdown.clone()));
    let mut workers = if roles.workers {
        worker::spawn(&jobs, config.workers.max(1), &shutdown)
    } else {
        tokio::task::JoinSet::new()
    };
    let expiry = tokio::spawn(
        jobs.clone()
            .run_expiry(config.expiry_interval, shutdown.clone()),
    );
    tokio::spawn(outbox.run(jobs.metrics.clone(), shutdown.clone()));
    tokio::spawn(
        rejections
            .clone()
            .run(config.rejection_flush, shutdown.clone()),
    );
    tokio::spawn(crate::audit::retention::run(
        audit.clone(),
        config.audit_retention,
        AUDIT_PRUNE_EVERY,
        shutdown.clone(),
    ));
    let addr = server.as_ref().map(|(addr, _)| *addr);

    let done = {
        let jobs = jobs.clone();
        let shutdown = shutdown.clone();
        let grace = config.shutdown_grace;
        tokio::spawn(async move {
            shutdown.cancelled().await;
            info!("shutting down: no new jobs");
            jobs.admission_closed.cancel();
            let drain = async { while workers.join_next().await.is_some() {} };
            if tokio::time::timeout(grace, drain).await.is_err() {
                warn!(
                    ?grace,
                    "workers did not finish within the grace period; aborting them"
                );
                workers.abort_all();
            }
            jobs.backends.query_runtime.shutdown();
            let _ = expiry.await;
            if let Some((_, server)) = server {
                match tokio::time::timeout(grace, server).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(error = %e, "HTTP server task failed"),
                    Err(_) => warn!("HTTP connections still open after the grace period; closing"),
                }
            }
            results.close().await;
            rejections.close().await;
            audit.close().await;
            info!("shut down");
            Ok(())
        })
    };
    Ok((
        RunningApp {
            addr,
            jobs,
            state,
            shutdown,
            done,
        },
        dev_key,
    ))
}

/// Picks each backend from the configuration: the distributed one when its
/// URL is set, the embedded one otherwise.
async fn build_backends(
    config: &Config,
    roles: Roles,
    regexes: &RegexCache,
) -> anyhow::Result<Backends> {
    let query_runtime =
        QueryRuntime::new(config.query_threads).context("starting the query runtime")?;
    let source = open_source(config, &query_runtime, regexes).await?;
    let audit: Arc<dyn AuditLog> = match &config.database_url {
        Some(url) => Arc::new(
            PostgresAuditLog::connect(url, config.backend_timeout)
                .await
                .context("connecting the Postgres audit log")?,
        ),
        None => {
            let sqlite = SqliteAuditLog::open(&config.data_dir.join("audit.db"))
                .await
                .context("opening the audit database")?;
            // Embedded jobs live in memory: those open at the last stop are gone.
            let interrupted = sqlite.record_interrupted(Utc::now()).await?;
            if interrupted > 0 {
                warn!(
                    interrupted,
                    "jobs left unfinished by the last run are marked failed in the audit log"
                );
            }
            Arc::new(sqlite)
        }
    };
    let pool = config.offset_pool_size;
    let policy = Policy::with_timeout(config.backend_timeout);
    let (coordination, queue, limiter): (
        crate::coord::Coordination,
        Arc<dyn crate::coord::JobQueue>,
        Arc<dyn crate::coord::RateLimiter>,
    ) = match &config.redis_url {
        Some(url) => {
            let prefix = &config.redis_prefix;
            let consumer = format!("{}-{}", hostname(), std::process::id());
            (
                RedisCoordination::connect(url, prefix, pool)
                    .await
                    .context("connecting Redis")?
                    .into_coordination(policy),
                Arc::new(TimeoutAndRetry::with_policy(
                    RedisJobQueue::connect(url, prefix, &consumer, config.worker_lease)
                        .await
                        .context("connecting the Redis job queue")?,
                    policy,
                )),
                Arc::new(TimeoutAndRetry::with_policy(
                    RedisRateLimiter::connect(url, prefix, config.rate_limit)
                        .await
                        .context("connecting the Redis rate limiter")?,
                    policy,
                )),
            )
        }
        None => (
            crate::coord::memory::coordination(pool),
            Arc::new(LocalJobQueue::new(pool as usize)),
            Arc::new(LocalRateLimiter::new(config.rate_limit)),
        ),
    };
    let results: Arc<dyn ResultTopic> = match (&config.kafka_brokers, &config.redis_url) {
        (Some(brokers), Some(redis)) => {
            let index = RedisChunkIndex::connect(redis, &config.redis_prefix)
                .await
                .context("connecting the Redis chunk index")?;
            let kafka = KafkaResultTopic::connect(
                brokers,
                &config.kafka_topic,
                config.kafka_partitions,
                config.kafka_compression,
                Arc::new(TimeoutAndRetry::with_policy(index, policy)),
            )
            .await
            .context("connecting the Kafka result topic")?;
            // Published chunks never change: pollers are served from memory,
            // and a process that serves what it publishes keeps it as it goes.
            let budget = usize::try_from(config.result_memory_bytes / 4).unwrap_or(usize::MAX);
            Arc::new(CachedResultTopic::new(
                Arc::new(kafka),
                budget,
                roles == Roles::ALL,
            ))
        }
        (Some(_), None) => anyhow::bail!(
            "PSEUDOSTREAM_KAFKA_BROKERS needs PSEUDOSTREAM_REDIS_URL too: Redis records where each chunk landed in Kafka"
        ),
        (None, _) if config.result_disk_bytes == 0 => {
            Arc::new(MemoryResultLog::new(config.result_memory_bytes))
        }
        (None, _) => {
            let dir = config.data_dir.join("results");
            let files = SpillFiles::new(&dir).with_context(|| {
                format!("creating the result spill directory {}", dir.display())
            })?;
            Arc::new(MemoryResultLog::with_spill(
                config.result_memory_bytes,
                files,
                config.result_disk_bytes,
            ))
        }
    };
    let intake = coordination.intake.unwrap_or_else(|| {
        Arc::new(StoreThenQueue {
            store: coordination.job_store.clone(),
            queue: queue.clone(),
        })
    });
    Ok(Backends {
        dedup: coordination.dedup,
        offsets: coordination.offsets,
        job_store: coordination.job_store,
        idempotency: coordination.idempotency,
        queue,
        intake,
        limiter,
        results,
        audit,
        source,
        query_runtime,
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".into())
}

async fn open_source(
    config: &Config,
    runtime: &QueryRuntime,
    regexes: &RegexCache,
) -> anyhow::Result<Arc<dyn QuerySource>> {
    if let Some(url) = config
        .source
        .as_deref()
        .filter(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
    {
        let source = PostgresSource::open(url, &config.source_table, &config.time_column)
            .await
            .with_context(|| format!("opening the Postgres source table {}", config.source_table))?
            .with_regexes(regexes.clone());
        info!(
            source = source.id(),
            fields = source.schema().fields.len(),
            "source ready"
        );
        return Ok(Arc::new(source));
    }
    let location = match &config.source {
        Some(location) => location.clone(),
        None => {
            let dir = config.data_dir.join("demo");
            ensure_demo_data(&dir, config.demo_days, config.demo_rows_per_day).await?;
            dir.to_string_lossy().into_owned()
        }
    };
    let source = ParquetSource::open(&location, &config.time_column, runtime)
        .await
        .with_context(|| format!("opening the source {location}"))?
        .with_page_cache_bytes(config.page_cache_bytes)
        .with_regexes(regexes.clone());
    info!(
        source = source.id(),
        fields = source.schema().fields.len(),
        "source ready"
    );
    Ok(Arc::new(source))
}
/// Generates the demo dataset unless it is complete; shows a progress bar
/// on a terminal and logs progress otherwise.
pub async fn ensure_demo_data(dir: &Path, days: u32, rows_per_day: u32) -> anyhow::Result<()> {
    let dir: PathBuf = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        let end_day = Utc::now().date_naive();
        let total = u64::from(days) * u64::from(rows_per_day);
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {human_pos}/{human_len} rows ({eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message("generating demo data");
        let logged = std::sync::atomic::AtomicU64::new(0);
        let progress = |done: u64, total: u64| {
            bar.set_position(done);
            // Without a terminal the bar is hidden; log every tenth instead.
            let tenth = (done * 10) / total.max(1);
            if bar.is_hidden() && tenth > logged.swap(tenth, std::sync::atomic::Ordering::Relaxed) {
                info!(done, total, "generating demo data");
            }
        };
        crate::demo::generate(
            &dir,
            end_day,
            days,
            rows_per_day,
            crate::demo::DEMO_SEED,
            &progress,
        )?;
        bar.finish_and_clear();
        anyhow::Ok(())
    })
    .await??;
    Ok(())
}

fn api_keys(
    configured: &str,
    file: Option<PathBuf>,
) -> anyhow::Result<(Arc<KeyRing>, Option<DevKey>)> {
    let configured =
        ApiKeys::parse(configured).map_err(|e| anyhow::anyhow!("PSEUDOSTREAM_API_KEYS: {e}"))?;
    let keys = Arc::new(KeyRing::new(configured, file).map_err(|e| anyhow::anyhow!(e))?);
    if !keys.is_empty() {
        return Ok((keys, None));
    }
    let key = format!("dev-{}", uuid::Uuid::new_v4().simple());
    let dev = Principal {
        user: "dev".into(),
        tenant: "dev".into(),
        role: Role::Ops,
    };
    keys.insert(&key, dev);
    Ok((keys, Some(DevKey(key))))
}
