//! The checkpointer: copies the WAL into the database file beside the writer.

use std::time::Duration;

use sqlx::{Connection, SqliteConnection};
use tokio::sync::watch;
use tracing::{debug, warn};

/// How long the checkpointer lets commits gather before copying them from
/// the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Copies committed pages from the WAL into the database file on a
/// connection of its own, off the writer's path.
///
/// With SQLite's default, the connection whose commit takes the WAL past
/// 1,000 pages checkpoints right there: it copies the pages and fsyncs the
/// database before its commit returns. Under a submission storm that was
/// about nine times a second, each 20-35 ms, and every submission of the
/// batch, and of the batches queued behind it, waited (docs/perf-history.md,
/// the audit checkpoints round).
/// A `PASSIVE` checkpoint here runs beside the writer instead. It cannot
/// restart the WAL while commits keep coming (that needs every frame copied
/// and none added meanwhile), so the writer's own checkpoint stays as a
/// backstop, at `WAL_BACKSTOP_PAGES`; by then this one has copied nearly
/// everything, and the writer's is short.
pub(super) struct Checkpointer {
    /// Told of every commit; dropping it stops the task.
    committed: watch::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Checkpointer {
    pub(super) fn start(mut conn: SqliteConnection) -> Checkpointer {
        let (committed, mut commits) = watch::channel(());
        let task = tokio::spawn(async move {
            // Ends when the writer is gone, or at the first failure: the
            // writer's own checkpoints still bound the WAL.
            while commits.changed().await.is_ok() {
                tokio::time::sleep(CHECKPOINT_EVERY).await;
                commits.mark_unchanged();
                let started = std::time::Instant::now();
                let outcome: Result<(i64, i64, i64), _> =
                    sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                        .fetch_one(&mut conn)
                        .await;
                match outcome {
                    Ok((busy, wal_pages, copied)) => debug!(
                        busy,
                        wal_pages,
                        copied,
                        micros = started.elapsed().as_micros() as u64,
                        "audit WAL checkpointed"
                    ),
                    Err(e) => {
                        warn!(error = %e, "audit checkpointer stopped; the writer checkpoints by itself from now on");
                        break;
                    }
                }
            }
            if let Err(e) = conn.close().await {
                warn!(error = %e, "could not close the audit checkpointer's connection");
            }
        });
        Checkpointer { committed, task }
    }

    pub(super) fn committed(&self) {
        self.committed.send_replace(());
    }

    /// Stops the task once its current round is over: a round already
    /// waiting out `CHECKPOINT_EVERY` still checkpoints, so the last
    /// commits are copied too.
    pub(super) async fn stop(self) {
        drop(self.committed);
        let _ = self.task.await;
    }
}
