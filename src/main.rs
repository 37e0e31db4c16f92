//! The `pseudostream` command: `serve` (the default), `worker`, `explain`,
//! `gen-data`, `migrate`, and the client of a running service, `query` and
//! `jobs`. The load generator is its own binary, `pseudostream-bench`
//! (bench/).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pseudostream::app::Roles;
use pseudostream::audit::postgres::PostgresAuditLog;
use pseudostream::config::Config;
use pseudostream::{app, client, explain};

#[derive(Parser)]
#[command(
    name = "pseudostream",
    version,
    about = "Pseudo-streaming query jobs over operational event data"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API and the workers (what the binary does with no subcommand).
    Serve {
        /// Run only the API; workers run elsewhere (`pseudostream worker`),
        /// which needs the distributed queue (PSEUDOSTREAM_REDIS_URL).
        #[arg(long)]
        no_workers: bool,
    },
    /// Run only workers (no HTTP API), against the distributed backends.
    Worker,
    /// Print a filter's canonical form and fingerprint.
    Explain(explain::ExplainArgs),
    /// Write the demo dataset (one Parquet file per day) into a directory.
    GenData {
        /// Target directory.
        #[arg(long, default_value = "./pseudostream-data/demo")]
        dir: PathBuf,
        #[arg(long, default_value_t = pseudostream::demo::DEMO_DAYS)]
        days: u32,
        #[arg(long, default_value_t = pseudostream::demo::DEMO_ROWS_PER_DAY)]
        rows_per_day: u32,
    },
    /// Apply pending Postgres audit migrations (to `--database-url`) and exit.
    /// Connecting the Postgres audit log applies them too; this rolls them
    /// out ahead of a deploy, with a role allowed to change the schema.
    Migrate,
    /// Submit a query to a running service and print its rows as they
    /// arrive (a client: talks HTTP to `--server`).
    Query(client::QueryArgs),
    /// List your jobs on a running service: those you started and the live
    /// ones you joined by dedup.
    Jobs(client::JobsArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // The client's commands speak for themselves on stderr; no server logs.
    if !matches!(cli.command, Some(Command::Query(_) | Command::Jobs(_))) {
        app::init_logging("info,tower_http=warn");
    }
    let done = match cli.command.unwrap_or(Command::Serve { no_workers: false }) {
        Command::Serve { no_workers } => {
            let roles = Roles {
                api: true,
                workers: !no_workers,
            };
            serve(cli.config, roles).await
        }
        Command::Worker => {
            serve(
                cli.config,
                Roles {
                    api: false,
                    workers: true,
                },
            )
            .await
        }
        Command::Explain(args) => explain::run(&cli.config, &args).await,
        Command::GenData {
            dir,
            days,
            rows_per_day,
        } => app::ensure_demo_data(&dir, days, rows_per_day).await,
        Command::Migrate => {
            let url = cli
                .config
                .database_url
                .as_deref()
                .context("migrate needs --database-url (or PSEUDOSTREAM_DATABASE_URL)")?;
            PostgresAuditLog::migrate(url)
                .await
                .context("applying the Postgres audit migrations")?;
            println!("audit migrations applied");
            Ok(())
        }
        Command::Query(args) => return Ok(client::run(client::query::run(args)).await),
        Command::Jobs(args) => return Ok(client::run(client::jobs::run(args)).await),
    };
    done.map(|()| ExitCode::SUCCESS)
}

async fn serve(config: Config, roles: Roles) -> anyhow::Result<()> {
    let (running, dev_key) = app::start(config, roles).await?;
    match running.addr {
        Some(addr) if roles.api => println!("pseudostream listening on http://{addr}"),
        Some(addr) => {
            println!("pseudostream worker running; /healthz, /readyz and /metrics on http://{addr}")
        }
        None => println!("pseudostream worker running"),
    }
    if let (Some(key), Some(addr), true) = (dev_key, running.addr, roles.api) {
        println!(
            "development API key (user dev, tenant dev, role ops): {}",
            key.0
        );
        println!(
            "  try: curl -s -H 'Authorization: Bearer {}' http://{addr}/v1/jobs",
            key.0
        );
    }
    shutdown_signal().await;
    running.shutdown.cancel();
    running.done.await.context("shutdown task")??;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
