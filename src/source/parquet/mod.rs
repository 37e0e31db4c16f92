//! A source over a set of Parquet files (a directory or a `*` pattern),
//! queried with DataFusion. Opening reads only the files' footers: the shared
//! schema and each file's time range. Files whose time ranges overlap are
//! grouped into disjoint *segments*, so a query can run segment by segment in
//! time order and deliver its first rows without scanning every file.

mod error;
mod exec;
mod index;
mod layout;
mod page_cache;
mod parts;
mod regex_match;
#[cfg(test)]
mod tests;
mod translate;
mod window;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;

use self::exec::{CHANNEL_BATCHES, Job};
use self::layout::{Segment, read_layout};
use self::page_cache::PageCache;
use self::parts::{
    FIRST_WINDOWS, Part, Selectivity, WINDOW_ROWS, WindowRows, first_windows, row_windows,
};
use self::translate::{column, time_compare, translate};
use self::window::DirectRead;
use super::stream::spawn_row_stream;
use super::{
    AwaitingFirstRows, Lane, QueryRuntime, QuerySource, RowStream, SourceError, SourceQuery,
    schema_version,
};
use crate::filter::{CompareOp, Order, RegexCache, Schema};

/// A [`QuerySource`] over Parquet files.
pub struct ParquetSource {
    id: String,
    schema: Schema,
    schema_version: String,
    /// The files' Arrow schema, given to DataFusion so it does not re-infer it.
    arrow_schema: SchemaRef,
    time_type: DataType,
    /// Ascending by time.
    segments: Vec<Segment>,
    ctx: SessionContext,
    /// Whether time windows are read without the planner (`window`); off
    /// only in tests that compare the two paths.
    direct_windows: bool,
    /// The size of directly read windows.
    window_rows: WindowRows,
    /// Pages those reads decoded, shared by concurrent jobs.
    pages: Arc<PageCache>,
    /// Where queries run.
    runtime: QueryRuntime,
    /// Compiled filter regexes; the app shares its own.
    regexes: RegexCache,
}

pub use crate::config::DEFAULT_PAGE_CACHE_BYTES;

impl std::fmt::Debug for ParquetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSource")
            .field("id", &self.id)
            .field("schema", &self.schema)
            .field("segments", &self.segments.len())
            .finish_non_exhaustive()
    }
}

impl ParquetSource {
    /// Opens `location`: a directory (its `*.parquet` files, not recursive) or
    /// a path whose file name contains `*` wildcards. Reads only the footers.
    /// Queries run on `runtime`.
    pub async fn open(
        location: &str,
        time_column: &str,
        runtime: &QueryRuntime,
    ) -> Result<ParquetSource, SourceError> {
        let (location, time_column) = (location.to_owned(), time_column.to_owned());
        let layout = tokio::task::spawn_blocking(move || read_layout(&location, &time_column))
            .await
            .map_err(|e| SourceError::Internal(format!("open task failed: {e}")))??;
        Ok(ParquetSource {
            id: layout.id,
            schema_version: schema_version(&layout.schema),
            schema: layout.schema,
            arrow_schema: layout.arrow_schema,
            time_type: layout.time_type,
            segments: layout.segments,
            ctx: SessionContext::new_with_config(engine_config()?),
            direct_windows: true,
            window_rows: WINDOW_ROWS,
            pages: Arc::new(PageCache::new(DEFAULT_PAGE_CACHE_BYTES)),
            runtime: runtime.clone(),
            regexes: RegexCache::default(),
        })
    }

    /// Keeps at most `bytes` of decoded pages for the windows first chunks
    /// wait for (0: none).
    pub fn with_page_cache_bytes(mut self, bytes: usize) -> ParquetSource {
        self.pages = Arc::new(PageCache::new(bytes));
        self
    }

    /// Takes compiled regexes from `regexes` (by default, its own cache).
    pub fn with_regexes(mut self, regexes: RegexCache) -> ParquetSource {
        self.regexes = regexes;
        self
    }

    /// What a query over `segments` (in the order results come) runs, in
    /// order. The first segment, where a first chunk comes from, is cut into
    /// windows: by rows when it is read directly and its pages are in time
    /// order (`row_windows`), else by time. The others are whole segments,
    /// cut into windows only when they start, by the matches seen so far
    /// (`exec`, `later_windows`).
    fn parts(&self, segments: Vec<Segment>, range: (i64, i64), asc: bool) -> Vec<Part> {
        let mut parts = Vec::with_capacity(segments.len() + FIRST_WINDOWS as usize);
        let mut segments = segments.into_iter();
        if let Some(first) = segments.next() {
            let by_rows = self
                .direct_windows
                .then(|| row_windows(&first, range, asc, self.window_rows))
                .flatten();
            parts.extend(by_rows.unwrap_or_else(|| first_windows(&first, range.0, range.1, asc)));
        }
        parts.extend(segments.map(|segment| Part {
            segment,
            window: None,
        }));
        parts
    }

    /// Number of time-disjoint file groups (for diagnostics and tests).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

/// DataFusion's settings: its defaults but one partition per plan,
/// overridden by any `DATAFUSION_*` environment variable (e.g.
/// `DATAFUSION_EXECUTION_TARGET_PARTITIONS=2`).
///
/// One partition: a query already runs `READ_AHEAD` parts at once (`exec`),
/// and a service runs many queries, so a second partition per part buys
/// one query's scan little speed and costs every query memory: at 10× rows
/// a day, a selective scan held 5.3 MiB with two partitions and 1.1 MiB
/// with one, for a scan 7 % slower alone (docs/PERFORMANCE.md, target 7).
fn engine_config() -> Result<SessionConfig, SourceError> {
    const PARTITIONS: &str = "DATAFUSION_EXECUTION_TARGET_PARTITIONS";
    let config = SessionConfig::from_env().map_err(|e| {
        SourceError::Internal(format!("bad DATAFUSION_* environment variable: {e}"))
    })?;
    Ok(if std::env::var_os(PARTITIONS).is_some() {
        config
    } else {
        config.with_target_partitions(1)
    })
}

#[async_trait::async_trait]
impl QuerySource for ParquetSource {
    fn schema(&self) -> &Schema {
        &self.schema
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn schema_version(&self) -> &str {
        &self.schema_version
    }

    /// Rows are sorted by time in `q.order`, then by the other returned fields
    /// ascending with nulls last. The time column is always sorted on but only
    /// returned if `q.fields` is empty or names it. Rows whose time is null
    /// never match a time range, so they are never returned.
    async fn query(&self, q: SourceQuery) -> Result<RowStream, SourceError> {
        let output = super::output_fields(&self.schema, &q.fields)?;
        let predicate = translate(&q.predicate, &self.arrow_schema, &self.regexes)?;
        let mut segments: Vec<Segment> = if q.limit == 0 || q.from_us >= q.to_us {
            Vec::new()
        } else {
            self.segments
                .iter()
                .filter(|s| s.max_us >= q.from_us && s.min_us < q.to_us)
                .cloned()
                .collect()
        };
        if segments.is_empty() {
            // No file holds a row of the range: answer once the request is
            // checked (above), without a plan or a task. Such queries are
            // cheap to send, so storms of them (a dashboard scrolled back
            // past the data) must not cost a query.
            return Ok(futures::stream::empty().boxed());
        }
        let time = self.schema.time_column.clone();
        let filter = time_compare(&time, CompareOp::Ge, q.from_us, &self.time_type)
            .and(time_compare(&time, CompareOp::Lt, q.to_us, &self.time_type))
            .and(predicate);

        let mut sort_input = output.clone();
        let output = if output.contains(&time) {
            None
        } else {
            sort_input.push(time.clone());
            Some(output)
        };
        let asc = q.order == Order::Asc;
        let mut sort = vec![column(&time).sort(asc, false)];
        sort.extend(
            sort_input
                .iter()
                .filter(|n| **n != time)
                .map(|n| column(n).sort(true, false)),
        );

        if !asc {
            segments.reverse();
        }
        let parts = self.parts(segments, (q.from_us, q.to_us), asc);
        let direct = if self.direct_windows {
            Some(DirectRead::new(
                &self.arrow_schema,
                &filter,
                &sort_input,
                output.as_ref().unwrap_or(&sort_input),
                &time,
                asc,
            )?)
        } else {
            None
        };
        let job = Job {
            // A resumed job (rows skipped) had its first chunk long ago: it
            // neither waits for first rows nor makes bulk work yield to it.
            waiting_for_first_rows: Mutex::new(
                (q.skip == 0).then(|| AwaitingFirstRows::start(&self.runtime)),
            ),
            runtime: self.runtime.clone(),
            sent: AtomicU64::new(0),
            direct,
            pages: Arc::clone(&self.pages),
            ctx: self.ctx.clone(),
            arrow_schema: Arc::clone(&self.arrow_schema),
            range: (q.from_us, q.to_us),
            asc,
            window_matches: self.window_rows.max,
            selectivity: Selectivity::default(),
            time: time.clone(),
            time_type: self.time_type.clone(),
            filter,
            sort_input,
            sort,
            output,
            skip: q.skip,
            limit: q.limit,
        };
        let job = Arc::new(job);
        // The driver only passes batches on: it runs in the prompt lane, so
        // a first window's rows are not queued behind bulk work.
        Ok(spawn_row_stream(
            self.runtime.handle(Lane::Prompt),
            CHANNEL_BATCHES,
            |tx| job.run(parts, tx),
        ))
    }
}
