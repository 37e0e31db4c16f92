//! A running query: its parts (time windows, or whole segments) run in
//! time order on the query runtime, each read directly (see `window`) or
//! planned and executed by DataFusion, and their rows go out in batches.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::logical_expr::{Expr, SortExpr};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::StreamExt;
use tokio::sync::{SemaphorePermit, mpsc};
use tokio_util::task::AbortOnDropHandle;

use super::page_cache::PageCache;
use super::parts::{Part, Selectivity, later_windows};
use super::translate::{column, time_compare};
use super::window::{self, DirectRead, WindowRead};
use crate::filter::CompareOp;
use crate::source::rows::batch_to_rows;
use crate::source::stream::{Sent, joined, spawn_producer};
use crate::source::{AwaitingFirstRows, Lane, QueryRuntime, Row, SourceError};

/// Batches buffered between the query task and the consumer: enough to keep
/// the engine busy, few enough that an abandoned query wastes little work.
pub(super) const CHANNEL_BATCHES: usize = 4;

/// Batches a window read directly hands over at a time: its rows wait in
/// its sorted window, so a deeper channel would only hold them twice.
const WINDOW_CHANNEL_BATCHES: usize = 1;

/// Parts a query past its first chunk runs ahead of the one it sends from.
const READ_AHEAD: usize = 2;

/// Upper bound for the offsets/fetch handed to DataFusion; keeps its
/// `skip + fetch` arithmetic far from overflow. Larger limits are enforced here.
const MAX_ENGINE_ROWS: u64 = 1 << 40;

/// Rows per batch sent from a directly read window past the first chunk:
/// few enough that a reader of the query waits little for the next ones.
const SEND_ROWS: usize = 1024;

/// Rows a new query sends before its work counts as bulk: a first chunk's
/// worth (the default chunk is 10 rows). Until then every part it starts
/// runs in the prompt lane and takes no bulk permit, so a first chunk that
/// needs more than the first window (a sparse filter, a range ending just
/// after midnight) does not queue behind the long queries' bulk work. It
/// is also the batch a window sends until then. Both go by the rows the
/// query's driver has received, so a window may send one batch more
/// before it sees them.
const PROMPT_ROWS: u64 = 10;

/// Everything a running query owns, so its stream can be `'static`.
pub(super) struct Job {
    pub(super) ctx: SessionContext,
    pub(super) arrow_schema: SchemaRef,
    /// The query's `[from_us, to_us)` and direction.
    pub(super) range: (i64, i64),
    pub(super) asc: bool,
    /// Matches a window of a later segment aims at.
    pub(super) window_matches: usize,
    /// Rows the windows read directly matched and scanned so far.
    pub(super) selectivity: Selectivity,
    pub(super) time: String,
    pub(super) time_type: DataType,
    pub(super) filter: Expr,
    /// Columns fed to the sort: the output fields plus the time column.
    pub(super) sort_input: Vec<String>,
    pub(super) sort: Vec<SortExpr>,
    /// The output columns, or `None` when they equal `sort_input`.
    pub(super) output: Option<Vec<String>>,
    pub(super) skip: u64,
    pub(super) limit: u64,
    /// How time windows are read without the planner; `None` = planned.
    pub(super) direct: Option<DirectRead>,
    pub(super) pages: Arc<PageCache>,
    /// Taken when the query starts, released by its first part's first
    /// batch (or with the job): bulk work yields until then.
    pub(super) waiting_for_first_rows: Mutex<Option<AwaitingFirstRows>>,
    pub(super) runtime: QueryRuntime,
    /// Rows sent to the consumer so far.
    pub(super) sent: AtomicU64,
}

type Batch = Sent<Vec<Row>>;

impl Job {
    /// Whether the query still works towards its first chunk: a new query
    /// (nothing skipped) that has sent fewer than `PROMPT_ROWS` rows.
    fn prompt(&self) -> bool {
        self.skip == 0 && self.sent.load(Ordering::Relaxed) < PROMPT_ROWS
    }

    /// Whether `part` is a time window read without the planner (unless
    /// its files changed since the source opened).
    fn reads_directly(&self, part: &Part) -> bool {
        self.direct.is_some() && part.window.is_some()
    }

    /// A bulk permit when the query is past its first chunk, else none.
    async fn permit_unless_prompt(&self) -> Option<SemaphorePermit<'_>> {
        if self.prompt() {
            None
        } else {
            Some(self.runtime.bulk_permit().await)
        }
    }

    /// The part's filter: the job's, narrowed to the part's window.
    fn part_filter(&self, part: &Part) -> Expr {
        match part.window {
            Some((from, to)) => time_compare(&self.time, CompareOp::Ge, from, &self.time_type)
                .and(time_compare(&self.time, CompareOp::Lt, to, &self.time_type))
                .and(self.filter.clone()),
            None => self.filter.clone(),
        }
    }

    async fn segment_frame(
        &self,
        part: &Part,
    ) -> Result<datafusion::dataframe::DataFrame, SourceError> {
        let opts = ParquetReadOptions::default()
            .schema(&self.arrow_schema)
            // The URLs are exact files (a pattern may match other extensions).
            .file_extension("");
        let df = self
            .ctx
            .read_parquet(part.segment.urls.clone(), opts)
            .await?;
        let df = df.filter(self.part_filter(part))?;
        let df = df.select(self.sort_input.iter().map(|n| column(n)))?;
        Ok(df.sort(self.sort.clone())?)
    }

    /// Runs the parts in order, sending batches of rows until the limit is
    /// reached or the receiver is gone. Returns early on the first error.
    ///
    /// Once nothing is left to skip, the next parts run ahead (filter and
    /// sort on the other core) while this one's rows go out: one while the
    /// query works towards its first chunk, `READ_AHEAD` after. A part
    /// yields its first rows only once it has scanned and sorted its whole
    /// range, so one part ahead, started when the current one yields, would
    /// leave a selective scan running one part at a time on one core. Each
    /// part holds a few batches of rows ready (a window read directly, its
    /// matches and one batch), and computes only under a bulk permit (as
    /// many as query threads, shared by every query).
    ///
    /// `parts` are the first segment's windows, then the other segments
    /// whole; a later segment is cut into windows when it starts
    /// (`start_part`).
    pub(super) async fn run(
        self: Arc<Self>,
        mut parts: Vec<Part>,
        tx: mpsc::Sender<Batch>,
    ) -> Result<(), SourceError> {
        let (mut skip_left, mut remaining) = (self.skip, self.limit);
        let mut ahead: VecDeque<(usize, PartRun)> = VecDeque::new();
        let mut n = 0;
        while n < parts.len() {
            if remaining == 0 {
                break;
            }
            let mut current = match ahead.pop_front() {
                Some((m, run)) if m == n => run,
                _ => {
                    ahead.clear();
                    self.start_part(&mut parts, n, skip_left, remaining)
                }
            };
            let read_ahead = skip_left == 0;
            let mut got: u64 = 0;
            loop {
                let next = current.rows.recv().await;
                // Started once this part has its first rows (or none), so
                // planning the next parts does not delay a first chunk.
                if read_ahead {
                    let depth = if self.prompt() { 1 } else { READ_AHEAD };
                    let mut m = ahead.back().map_or(n + 1, |(m, _)| m + 1);
                    while ahead.len() < depth && m < parts.len() {
                        ahead.push_back((m, self.start_part(&mut parts, m, 0, remaining)));
                        m += 1;
                    }
                }
                let Some(rows) = next else { break };
                let mut rows = rows?;
                let room = usize::try_from(remaining - got).unwrap_or(usize::MAX);
                rows.truncate(room);
                got += rows.len() as u64;
                self.sent.fetch_add(rows.len() as u64, Ordering::Relaxed);
                if !rows.is_empty() && tx.send(Ok(rows)).await.is_err() {
                    return Ok(()); // consumer gone: stop working
                }
                if got >= remaining {
                    break;
                }
            }
            // The part ended by itself: make sure it did not die silently.
            let counted = if got < remaining {
                current.finished().await?
            } else {
                None
            };
            remaining -= got;
            if got > 0 {
                // Rows came back, so this part had more matches than the skip.
                skip_left = 0;
            } else if skip_left > 0 {
                // Nothing came back: the whole part was skipped. A window
                // read directly counted its matches; a planned part's are
                // counted now (a scan, but no sort).
                let matched = match counted {
                    Some(matched) => matched,
                    None => self.count_matches(&parts[n]).await?,
                };
                skip_left = skip_left.saturating_sub(matched);
            }
            n += 1;
        }
        Ok(())
    }

    /// How many rows of `part` match, planned: for a part skipped whole
    /// that was not read directly.
    async fn count_matches(&self, part: &Part) -> Result<u64, SourceError> {
        let sorted = self.segment_frame(part).await?;
        let _permit = self.runtime.bulk_permit().await;
        // A whole segment's scan is bulk work, whoever drives it.
        let count = self.runtime.spawn(Lane::Bulk, sorted.count());
        Ok(joined(AbortOnDropHandle::new(count)).await?? as u64)
    }

    /// Starts part `n` of `parts` on its own task: its rows after `skip`,
    /// at most `fetch`; in the prompt lane while the query works towards
    /// its first chunk, else in bulk. A whole segment past the first is
    /// first cut into windows when the query's selectivity so far says it
    /// would hold more than a window's matches.
    fn start_part(
        self: &Arc<Self>,
        parts: &mut Vec<Part>,
        n: usize,
        skip: u64,
        fetch: u64,
    ) -> PartRun {
        if n > 0 && self.direct.is_some() && parts[n].window.is_none() {
            let cut = later_windows(
                &parts[n].segment,
                self.range,
                self.asc,
                &self.selectivity,
                self.window_matches,
            );
            if let Some(windows) = cut {
                parts.splice(n..=n, windows);
            }
        }
        let part = parts[n].clone();
        let job = Arc::clone(self);
        let lane = if self.prompt() {
            Lane::Prompt
        } else {
            Lane::Bulk
        };
        let capacity = if self.reads_directly(&part) {
            WINDOW_CHANNEL_BATCHES
        } else {
            CHANNEL_BATCHES
        };
        let matched = Arc::new(OnceLock::new());
        let counted = Arc::clone(&matched);
        let (rows, task) = spawn_producer(self.runtime.handle(lane), capacity, |tx| async move {
            job.produce_part(&part, n == 0, skip, fetch, &counted, &tx)
                .await
        });
        PartRun {
            rows,
            task,
            matched,
        }
    }

    /// Sends `part`'s rows after `skip`, at most `fetch`; notes in
    /// `matched` how many rows it matched when it knows (read directly).
    /// The query's `first` part ends its wait for first rows.
    async fn produce_part(
        &self,
        part: &Part,
        first: bool,
        skip: u64,
        fetch: u64,
        matched: &OnceLock<u64>,
        tx: &mpsc::Sender<Batch>,
    ) -> Result<(), SourceError> {
        // What the first chunk waits for runs at once; the rest is bulk
        // work and takes turns (see `QueryRuntime`). Asked again before
        // every batch: a part started for the first chunk goes on as bulk.
        // Released once its first batch is computed (the sort is done by
        // then), not while the batch waits for the consumer.
        let mut first = if first {
            self.waiting_for_first_rows
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
        } else {
            None
        };
        if let Some((sorted, count)) = self.read_window(part, skip, fetch).await? {
            let _ = matched.set(count);
            return self.send_sorted(&sorted, first, tx).await;
        }
        // Planning is CPU work too (DataFusion's optimiser passes cost about
        // as much as reading a first window), so bulk parts plan under a
        // permit as well, after the running first windows.
        let planning = self.permit_unless_prompt().await;
        let sorted = self.segment_frame(part).await?;
        let engine_skip = usize::try_from(skip.min(MAX_ENGINE_ROWS)).unwrap_or(usize::MAX);
        let engine_fetch = usize::try_from(fetch.min(MAX_ENGINE_ROWS)).unwrap_or(usize::MAX);
        // Offset and fetch on top of the sort let DataFusion use a TopK sort.
        let mut df = sorted.limit(engine_skip, Some(engine_fetch))?;
        if let Some(out) = &self.output {
            df = df.select(out.iter().map(|n| column(n)))?;
        }
        let mut stream = df.execute_stream().await?;
        drop(planning);
        loop {
            // Held while the engine computes a batch, not while the batch
            // waits for its consumer: a slow reader of one job must not
            // hold up the others.
            let permit = self.permit_unless_prompt().await;
            let Some(batch) = stream.next().await else {
                return Ok(());
            };
            let rows = batch_to_rows(&batch?)?;
            drop(permit);
            drop(first.take());
            if tx.send(Ok(rows)).await.is_err() {
                return Ok(()); // consumer gone: stop working
            }
        }
    }
}

impl Job {
    /// `part`'s rows after `skip`, at most `fetch`, and how many rows it
    /// matched in all, read directly when it is a time window and its files
    /// are unchanged; `None` otherwise.
    async fn read_window(
        &self,
        part: &Part,
        skip: u64,
        fetch: u64,
    ) -> Result<Option<(RecordBatch, u64)>, SourceError> {
        let (Some(direct), Some(window)) = (&self.direct, part.window) else {
            return Ok(None); // not `reads_directly`
        };
        let permit = self.permit_unless_prompt().await;
        // Pages a first chunk waits for are shared through the cache (many
        // dashboards ask for the newest rows); bulk reads stream through
        // once and would only evict them.
        let pages = permit.is_none().then_some(&*self.pages);
        let filter = self
            .ctx
            .create_physical_expr(self.part_filter(part), &direct.df_schema)?;
        let read = WindowRead {
            schema: &direct.schema,
            window,
            filter: &filter,
        };
        let Some((matched, scanned)) =
            window::read_window(&part.segment.files, &read, pages).await?
        else {
            tracing::debug!("a source file changed since it was opened; planning the window");
            return Ok(None);
        };
        let count = matched.num_rows() as u64;
        self.selectivity.add(count, scanned);
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        let fetch = usize::try_from(fetch).unwrap_or(usize::MAX);
        let sorted = window::sort_window(&matched, &direct.sort_keys, skip, fetch, &direct.output)?;
        Ok(Some((sorted, count)))
    }
}

impl Job {
    /// Sends a sorted window's rows in batches; past the first chunk they
    /// are encoded under a bulk permit.
    async fn send_sorted(
        &self,
        sorted: &RecordBatch,
        mut first: Option<AwaitingFirstRows>,
        tx: &mpsc::Sender<Batch>,
    ) -> Result<(), SourceError> {
        let mut at = 0;
        while at < sorted.num_rows() {
            // A first chunk's rows go out alone: a window matches up to a
            // few thousand rows, and encoding them all first would make the
            // first chunk wait for them.
            let batch = if self.prompt() {
                PROMPT_ROWS as usize
            } else {
                SEND_ROWS
            };
            let len = batch.min(sorted.num_rows() - at);
            let permit = self.permit_unless_prompt().await;
            let rows = batch_to_rows(&sorted.slice(at, len))?;
            drop(permit);
            drop(first.take());
            at += len;
            if tx.send(Ok(rows)).await.is_err() {
                return Ok(()); // consumer gone: stop working
            }
        }
        Ok(())
    }
}

/// One part running on its own task; dropping it stops the task.
struct PartRun {
    rows: mpsc::Receiver<Batch>,
    task: AbortOnDropHandle<()>,
    /// How many rows the part matched, once it knows.
    matched: Arc<OnceLock<u64>>,
}

impl PartRun {
    /// Joins the finished task, so a panic is an error, not a short result;
    /// then how many rows it matched, if it knows.
    async fn finished(self) -> Result<Option<u64>, SourceError> {
        joined(self.task).await?;
        Ok(self.matched.get().copied())
    }
}
