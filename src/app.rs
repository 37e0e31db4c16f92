//! Builds the service from `Config` — every backend constructed once and
//! passed down — and runs it with a written shutdown order.
//!
//! Shutdown order: (1) stop admitting (submissions get 503, long-polls
//! return); (2) cancel workers, each closing its job with a last chunk; (3)
//! join them within the grace period, then abort; (4) let the HTTP server
//! finish in-flight requests; (5) close the audit database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::auth::ApiKeys;
use crate::api::{self, AppState};
use crate::audit::AuditLog;
use crate::audit::sqlite::SqliteAuditLog;
use crate::config::Config;
use crate::coord::limiter::LocalRateLimiter;
use crate::coord::memory::MemoryCoordinator;
use crate::coord::queue::LocalJobQueue;
use crate::filter::Limits;
use crate::jobs::{Backends, Hooks, JobSettings, Jobs, Principal, Role};
use crate::results::memory::MemoryResultLog;
use crate::source::QuerySource;
use crate::source::files::ParquetSource;
use crate::worker;

/// A started service.
pub struct RunningApp {
    pub addr: SocketAddr,
    pub jobs: Arc<Jobs>,
    /// Cancel to shut down; then await `done`.
    pub shutdown: CancellationToken,
    pub done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// The development key printed when no keys are configured.
pub struct DevKey(pub String);

/// Builds every backend, binds the listener and starts serving.
pub async fn start(config: Config) -> anyhow::Result<(RunningApp, Option<DevKey>)> {
    start_with_hooks(config, Hooks::default()).await
}

/// `start`, with test hooks.
pub async fn start_with_hooks(
    config: Config,
    hooks: Hooks,
) -> anyhow::Result<(RunningApp, Option<DevKey>)> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let source = open_source(&config).await?;
    let audit = Arc::new(
        SqliteAuditLog::open(&config.data_dir.join("audit.db"))
            .await
            .context("opening the audit database")?,
    );
    let interrupted = audit.record_interrupted(Utc::now()).await?;
    if interrupted > 0 {
        warn!(
            interrupted,
            "jobs left unfinished by the last run are marked failed in the audit log"
        );
    }
    let backends = Backends {
        coordinator: Arc::new(MemoryCoordinator::new(config.offset_pool_size)),
        queue: Arc::new(LocalJobQueue::new(config.offset_pool_size as usize)),
        limiter: Arc::new(LocalRateLimiter::new(config.rate_limit)),
        results: Arc::new(MemoryResultLog::new(config.result_memory_bytes)),
        audit: audit.clone(),
        source,
    };
    let settings = JobSettings {
        chunk_rows: config.chunk_rows.max(1),
        result_ttl: config.result_ttl,
        max_rows: config.max_rows.max(1),
        max_time_range: config.max_time_range,
        max_wait: config.max_wait,
        filter_limits: Limits::default(),
        full_retry_after: std::time::Duration::from_secs(5),
    };
    let jobs = Jobs::new(backends, settings, hooks);

    let (keys, dev_key) = api_keys(&config.api_keys)?;
    let state = Arc::new(AppState {
        jobs: jobs.clone(),
        keys,
    });
    let router = api::router(state, config.max_body_bytes);
    let listener = TcpListener::bind(config.listen).await.with_context(|| {
        format!(
            "binding {}; set PSEUDOSTREAM_LISTEN to another address",
            config.listen
        )
    })?;
    let addr = listener.local_addr()?;

    let shutdown = CancellationToken::new();
    let mut workers = worker::spawn(&jobs, config.workers.max(1), &shutdown);
    let expiry = tokio::spawn(
        jobs.clone()
            .run_expiry(config.expiry_interval, shutdown.clone()),
    );

    let done = {
        let jobs = jobs.clone();
        let shutdown = shutdown.clone();
        let grace = config.shutdown_grace;
        tokio::spawn(async move {
            let server = {
                let closed = jobs.admission_closed.clone();
                tokio::spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(closed.cancelled_owned())
                        .await
                })
            };
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
            let _ = expiry.await;
            match tokio::time::timeout(grace, server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!(error = %e, "HTTP server stopped with an error"),
                Ok(Err(e)) => warn!(error = %e, "HTTP server task failed"),
                Err(_) => warn!("HTTP connections still open after the grace period; closing"),
            }
            audit.close().await;
            info!("shut down");
            Ok(())
        })
    };
    Ok((
        RunningApp {
            addr,
            jobs,
            shutdown,
            done,
        },
        dev_key,
    ))
}

async fn open_source(config: &Config) -> anyhow::Result<Arc<dyn QuerySource>> {
    let location = match &config.source {
        Some(location) => location.clone(),
        None => {
            let dir = config.data_dir.join("demo");
            ensure_demo_data(&dir, config.demo_days, config.demo_rows_per_day).await?;
            dir.to_string_lossy().into_owned()
        }
    };
    let source = ParquetSource::open(&location, &config.time_column)
        .await
        .with_context(|| format!("opening the source {location}"))?;
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
        crate::source::demo::generate(
            &dir,
            end_day,
            days,
            rows_per_day,
            crate::source::demo::DEMO_SEED,
            &progress,
        )?;
        bar.finish_and_clear();
        anyhow::Ok(())
    })
    .await??;
    Ok(())
}

fn api_keys(configured: &str) -> anyhow::Result<(ApiKeys, Option<DevKey>)> {
    let mut keys =
        ApiKeys::parse(configured).map_err(|e| anyhow::anyhow!("PSEUDOSTREAM_API_KEYS: {e}"))?;
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
