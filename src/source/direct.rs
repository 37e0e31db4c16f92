//! A job's first time windows read straight from the Parquet files, without
//! DataFusion's planner.
//!
//! A first window is a thin slice of the newest (or oldest) day: a page or
//! two of rows. Planning it through DataFusion (listing, schema checks, a
//! dozen optimiser passes, a physical plan) cost more CPU than reading it,
//! and a hundred concurrent jobs each plan four of them before their first
//! chunk. Here each file's footer and page index are read once, when the
//! source opens; a window then takes just the pages whose time range
//! overlaps it, decoded once for all jobs ([`PageCache`]), evaluates the
//! filter (the same DataFusion expression, made physical without a plan),
//! and sorts in memory with Arrow's kernels.
//!
//! The result is the one DataFusion gives for the same part: same filter,
//! same sort keys and options (see `Job::segment_frame`); the source's tests
//! run both paths.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::{
    SortColumn, SortOptions, cast, concat_batches, filter_record_batch, lexsort_to_indices,
    take_record_batch,
};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};
use datafusion::parquet::file::metadata::PageIndexPolicy;
use datafusion::physical_expr::PhysicalExpr;
use tokio::sync::OnceCell;

use super::SourceError;
use super::files::{io_err, parquet_err, saturating_micros};

/// Rows decoded per batch while reading a window.
const READ_BATCH_ROWS: usize = 8192;

/// One Parquet file with its footer and page index, read when the source opened.
pub(super) struct IndexedFile {
    pub(super) path: PathBuf,
    /// Size and modification time at open: a file rewritten since is read
    /// through DataFusion, which reads its footer afresh.
    len: u64,
    modified: Option<SystemTime>,
    pub(super) meta: ArrowReaderMetadata,
    /// The time column's range per page, in file order.
    time_spans: Vec<TimeSpan>,
}

/// Where a page's rows are, and the range of its times.
struct TimeSpan {
    run: PageRun,
    min_us: Option<i64>,
    max_us: Option<i64>,
}

impl std::fmt::Debug for IndexedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexedFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl IndexedFile {
    /// Reads the footer and, where the file has one, the page index, and
    /// notes the time range of each page of the `time` column.
    pub(super) fn open(path: &Path, time: &str) -> Result<IndexedFile, SourceError> {
        let file = File::open(path).map_err(io_err(path))?;
        let stat = file.metadata().map_err(io_err(path))?;
        // Files written without a page index are read by row group.
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let meta = ArrowReaderMetadata::load(&file, options).map_err(parquet_err(path))?;
        let mut indexed = IndexedFile {
            path: path.to_owned(),
            len: stat.len(),
            modified: stat.modified().ok(),
            meta,
            time_spans: Vec::new(),
        };
        indexed.time_spans = indexed.time_spans(time)?;
        Ok(indexed)
    }

    /// The file, if it is still the one whose footer we hold.
    fn reopen(&self) -> Result<Option<File>, SourceError> {
        let file = File::open(&self.path).map_err(io_err(&self.path))?;
        let stat = file.metadata().map_err(io_err(&self.path))?;
        let same = stat.len() == self.len && stat.modified().ok() == self.modified;
        Ok(same.then_some(file))
    }

    /// Each page's (each row group's, without a page index) rows and time
    /// range in µs, read from the footer once. Empty when `time` is not a
    /// timestamp column: the source refuses such a file before reading it.
    fn time_spans(&self, time: &str) -> Result<Vec<TimeSpan>, SourceError> {
        let err = |e| parquet_err(&self.path)(e);
        let unit = match self
            .meta
            .schema()
            .field_with_name(time)
            .map(|f| f.data_type())
        {
            Ok(DataType::Timestamp(unit, _)) => *unit,
            _ => return Ok(Vec::new()),
        };
        let micros = |v: Option<i64>| v.map(|v| saturating_micros(v, unit));
        let meta = self.meta.metadata();
        let row_groups = meta.row_groups();
        let converter =
            StatisticsConverter::try_new(time, self.meta.schema(), self.meta.parquet_schema())
                .map_err(err)?;
        let rg_mins = raw_values(&converter.row_group_mins(row_groups.iter()).map_err(err)?)?;
        let rg_maxes = raw_values(&converter.row_group_maxes(row_groups.iter()).map_err(err)?)?;
        let mut spans = Vec::new();
        for (i, rg) in row_groups.iter().enumerate() {
            let rows = usize::try_from(rg.num_rows()).unwrap_or(0);
            let whole = TimeSpan {
                run: PageRun {
                    row_group: i,
                    first_row: 0,
                    rows,
                },
                min_us: micros(rg_mins[i]),
                max_us: micros(rg_maxes[i]),
            };
            let (Some(column_index), Some(offset_index)) =
                (meta.column_index(), meta.offset_index())
            else {
                spans.push(whole);
                continue;
            };
            let mins = converter
                .data_page_mins(column_index, offset_index, [&i])
                .map_err(err)?;
            let maxes = converter
                .data_page_maxes(column_index, offset_index, [&i])
                .map_err(err)?;
            let counts = converter
                .data_page_row_counts(offset_index, row_groups, [&i])
                .map_err(err)?;
            let Some(counts) = counts.filter(|c| c.len() == mins.len() && c.null_count() == 0)
            else {
                spans.push(whole);
                continue;
            };
            let (mins, maxes) = (raw_values(&mins)?, raw_values(&maxes)?);
            let mut first_row = 0;
            for (page, count) in counts.values().iter().enumerate() {
                let rows = usize::try_from(*count).unwrap_or(0);
                spans.push(TimeSpan {
                    run: PageRun {
                        row_group: i,
                        first_row,
                        rows,
                    },
                    min_us: micros(mins[page]),
                    max_us: micros(maxes[page]),
                });
                first_row += rows;
            }
        }
        Ok(spans)
    }

    /// The rows whose time may lie in `[from_us, to_us)`, as runs of
    /// consecutive pages whose time range overlaps it. A superset: the
    /// filter decides row by row.
    fn runs(&self, from_us: i64, to_us: i64) -> Vec<PageRun> {
        let mut runs: Vec<PageRun> = Vec::new();
        let mut joins_last = false;
        for span in &self.time_spans {
            // A missing bound may be anything.
            let overlaps = span.run.rows > 0
                && span.min_us.is_none_or(|v| v < to_us)
                && span.max_us.is_none_or(|v| v >= from_us);
            if !overlaps {
                joins_last = false;
                continue;
            }
            match runs.last_mut() {
                Some(last) if joins_last && last.row_group == span.run.row_group => {
                    last.rows += span.run.rows;
                }
                _ => runs.push(span.run.clone()),
            }
            joins_last = true;
        }
        runs
    }

    /// Decodes a run's rows of the root columns `roots` (ascending).
    fn decode(
        &self,
        file: &File,
        run: &PageRun,
        roots: &[usize],
    ) -> Result<Vec<RecordBatch>, SourceError> {
        let err = |e| parquet_err(&self.path)(e);
        let file = file.try_clone().map_err(io_err(&self.path))?;
        let mut selectors = Vec::with_capacity(2);
        if run.first_row > 0 {
            selectors.push(RowSelector::skip(run.first_row));
        }
        selectors.push(RowSelector::select(run.rows));
        let mask = ProjectionMask::roots(self.meta.parquet_schema(), roots.iter().copied());
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
            .with_projection(mask)
            .with_row_groups(vec![run.row_group])
            .with_row_selection(RowSelection::from(selectors))
            .with_batch_size(READ_BATCH_ROWS)
            .build()
            .map_err(err)?;
        reader
            .map(|batch| {
                batch.map_err(|e| SourceError::Parquet {
                    file: self.path.display().to_string(),
                    message: e.to_string(),
                })
            })
            .collect()
    }
}

/// Consecutive rows of one row group, whole pages.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PageRun {
    row_group: usize,
    /// Within the row group.
    first_row: usize,
    rows: usize,
}

/// Which decoded rows: a run of pages of one version of a file, some columns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PageKey {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    run: PageRun,
    roots: Vec<usize>,
}

type Decoded = Arc<[RecordBatch]>;

/// Decoded pages, shared by the windows of all jobs. Dashboards look at the
/// newest data, and relative ranges end on the same minute, so concurrent
/// jobs read the same few pages: each is decompressed and decoded once,
/// and every job filters and sorts its own copy of the references.
/// Bounded by bytes, oldest first out. Concurrent misses on one key decode
/// once; the others wait for that result.
pub(super) struct PageCache {
    budget_bytes: usize,
    state: Mutex<PageCacheState>,
}

#[derive(Default)]
struct PageCacheState {
    entries: HashMap<PageKey, Arc<OnceCell<Decoded>>>,
    /// Decoded entries, oldest first, with their sizes.
    order: VecDeque<(PageKey, usize)>,
    bytes: usize,
}

impl PageCache {
    pub(super) fn new(budget_bytes: usize) -> PageCache {
        PageCache {
            budget_bytes,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PageCacheState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn get_or_decode(
        &self,
        key: PageKey,
        decode: impl FnOnce() -> Result<Vec<RecordBatch>, SourceError>,
    ) -> Result<Decoded, SourceError> {
        let cell = Arc::clone(self.lock().entries.entry(key.clone()).or_default());
        let mut decoded_here = None;
        let got = cell
            .get_or_try_init(|| async {
                let batches: Decoded = decode()?.into();
                decoded_here = Some(batches.iter().map(|b| b.get_array_memory_size()).sum());
                Ok(batches)
            })
            .await
            .cloned();
        let mut state = self.lock();
        match (&got, decoded_here) {
            (Ok(_), Some(bytes)) => {
                state.order.push_back((key, bytes));
                state.bytes += bytes;
                while state.bytes > self.budget_bytes {
                    let Some((old, size)) = state.order.pop_front() else {
                        break;
                    };
                    state.entries.remove(&old);
                    state.bytes -= size;
                }
            }
            // A failed decode leaves nothing behind; the next read tries again.
            (Err(_), _)
                if state
                    .entries
                    .get(&key)
                    .is_some_and(|c| Arc::ptr_eq(c, &cell) && c.get().is_none()) =>
            {
                state.entries.remove(&key);
            }
            _ => {}
        }
        got
    }
}

/// The raw (in the column's own unit) values of a timestamp statistics array.
fn raw_values(a: &dyn Array) -> Result<Vec<Option<i64>>, SourceError> {
    let ints = cast(a, &DataType::Int64).map_err(|e| SourceError::Engine(e.to_string()))?;
    Ok(ints.as_primitive::<Int64Type>().iter().collect())
}

/// What a window read needs besides its files.
pub(super) struct WindowRead<'a> {
    /// Columns read, in this order; `schema` describes them.
    pub(super) schema: &'a SchemaRef,
    /// `[from_us, to_us)`.
    pub(super) window: (i64, i64),
    /// The part's whole filter (job filter and window bounds) over `schema`.
    pub(super) filter: &'a Arc<dyn PhysicalExpr>,
}

/// The matching rows of `files` in the window, unsorted, as one batch;
/// `None` when a file changed since the source opened (the caller then
/// plans the part instead).
pub(super) async fn read_window(
    files: &[Arc<IndexedFile>],
    read: &WindowRead<'_>,
    cache: &PageCache,
) -> Result<Option<RecordBatch>, SourceError> {
    let mut matched = Vec::new();
    for indexed in files {
        let Some(file) = indexed.reopen()? else {
            return Ok(None);
        };
        let file_schema = indexed.meta.schema();
        // Root `i` of a flat Parquet schema is Arrow field `i`.
        let mut roots = Vec::with_capacity(read.schema.fields().len());
        for f in read.schema.fields() {
            match file_schema.index_of(f.name()) {
                Ok(i) => roots.push(i),
                Err(_) => return Ok(None),
            }
        }
        let mut sorted_roots = roots.clone();
        sorted_roots.sort_unstable();
        // The reader yields columns in file order; put them in ours.
        let order: Vec<usize> = roots
            .iter()
            .map(|r| sorted_roots.binary_search(r).unwrap_or_default())
            .collect();
        for run in indexed.runs(read.window.0, read.window.1) {
            let key = PageKey {
                path: indexed.path.clone(),
                len: indexed.len,
                modified: indexed.modified,
                run: run.clone(),
                roots: sorted_roots.clone(),
            };
            let decoded = cache
                .get_or_decode(key, || indexed.decode(&file, &run, &sorted_roots))
                .await?;
            for batch in decoded.iter() {
                let batch = RecordBatch::try_new(
                    Arc::clone(read.schema),
                    order.iter().map(|&i| Arc::clone(batch.column(i))).collect(),
                )
                .map_err(arrow_err)?;
                let keep = read.filter.evaluate(&batch)?.into_array(batch.num_rows())?;
                let keep = keep.as_boolean_opt().ok_or_else(|| {
                    SourceError::Engine(format!(
                        "filter gave {} instead of booleans",
                        keep.data_type()
                    ))
                })?;
                // Nulls (unknown) do not match, as in a plan's filter.
                let kept = filter_record_batch(&batch, keep).map_err(arrow_err)?;
                if kept.num_rows() > 0 {
                    matched.push(kept);
                }
            }
        }
    }
    concat_batches(read.schema, &matched)
        .map(Some)
        .map_err(arrow_err)
}

fn arrow_err(e: datafusion::arrow::error::ArrowError) -> SourceError {
    SourceError::Engine(e.to_string())
}

/// A sort key: a column of the batch and its direction.
pub(super) struct SortKey {
    pub(super) column: usize,
    pub(super) options: SortOptions,
}

impl SortKey {
    pub(super) fn new(column: usize, ascending: bool) -> SortKey {
        SortKey {
            column,
            // Nulls last, in either direction, as the planned sort.
            options: SortOptions {
                descending: !ascending,
                nulls_first: false,
            },
        }
    }
}

/// Rows `skip..skip + fetch` of `batch` in `keys` order, as columns `output`.
pub(super) fn sort_window(
    batch: &RecordBatch,
    keys: &[SortKey],
    skip: usize,
    fetch: usize,
    output: &[usize],
) -> Result<RecordBatch, SourceError> {
    let end = skip.saturating_add(fetch).min(batch.num_rows());
    if skip >= end {
        return batch
            .project(output)
            .map(|b| b.slice(0, 0))
            .map_err(arrow_err);
    }
    let columns: Vec<SortColumn> = keys
        .iter()
        .map(|k| SortColumn {
            values: Arc::clone(batch.column(k.column)),
            options: Some(k.options),
        })
        .collect();
    // Only the first `end` positions are ordered: a top-k, as with a limit
    // on the planned sort.
    let indices = lexsort_to_indices(&columns, Some(end)).map_err(arrow_err)?;
    let indices = indices.slice(skip, end - skip);
    let projected = batch.project(output).map_err(arrow_err)?;
    take_record_batch(&projected, &indices).map_err(arrow_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::demo;
    use chrono::NaiveDate;
    use datafusion::arrow::datatypes::TimeUnit;

    /// One demo day of 5,000 rows: three pages of the time column.
    fn demo_day() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        demo::generate(dir.path(), day, 1, 5_000, demo::DEMO_SEED, &|_, _| {}).unwrap();
        let path = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "parquet"))
            .unwrap();
        (dir, path)
    }

    fn selected(runs: &[PageRun]) -> usize {
        runs.iter().map(|r| r.rows).sum()
    }

    #[test]
    fn a_window_selects_only_the_pages_it_overlaps() {
        let (_dir, path) = demo_day();
        let file = IndexedFile::open(&path, "ts").unwrap();
        let meta = file.meta.metadata();
        assert!(
            meta.offset_index().is_some(),
            "the demo files carry a page index"
        );
        let rows = usize::try_from(meta.file_metadata().num_rows()).unwrap();
        let all = file.runs(i64::MIN, i64::MAX);
        assert_eq!(all.len(), 1, "one run of every page: {all:?}");
        assert_eq!(selected(&all), rows);
        // The day's last ten minutes lie in its last page only.
        let day_end = NaiveDate::from_ymd_opt(2026, 11, 2)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros();
        let last = file.runs(day_end - 600_000_000, day_end);
        let (n, first_page) = (selected(&last), 2048);
        assert!(
            n > 0 && n <= rows - 2 * first_page,
            "selected {n} of {rows}"
        );
        assert_eq!(last[0].first_row + n, rows);
        assert!(file.runs(day_end, i64::MAX).is_empty());
    }

    #[test]
    fn a_rewritten_file_is_not_read_with_its_old_footer() {
        let (_dir, path) = demo_day();
        let file = Arc::new(IndexedFile::open(&path, "ts").unwrap());
        assert!(file.reopen().unwrap().is_some());
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(file.reopen().unwrap().is_none());
    }

    #[tokio::test]
    async fn the_page_cache_decodes_once_and_stays_in_budget() {
        use datafusion::arrow::array::Int64Array;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let batch = |n: i64| {
            RecordBatch::try_from_iter([(
                "n",
                Arc::new(Int64Array::from(vec![n; 1000])) as Arc<dyn Array>,
            )])
            .unwrap()
        };
        let size = batch(0).get_array_memory_size();
        let cache = Arc::new(PageCache::new(size * 2));
        let key = |row_group: usize| PageKey {
            path: PathBuf::from("/f.parquet"),
            len: 1,
            modified: None,
            run: PageRun {
                row_group,
                first_row: 0,
                rows: 1000,
            },
            roots: vec![0],
        };
        let decodes = Arc::new(AtomicUsize::new(0));
        let get = |rg: usize| {
            let (cache, decodes) = (Arc::clone(&cache), Arc::clone(&decodes));
            async move {
                cache
                    .get_or_decode(key(rg), || {
                        decodes.fetch_add(1, Ordering::SeqCst);
                        // Long enough for the other readers to find it in flight.
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        Ok(vec![batch(rg as i64)])
                    })
                    .await
                    .unwrap()
            }
        };
        let together = futures::future::join_all((0..8).map(|_| tokio::spawn(get(0)))).await;
        assert!(together.into_iter().all(|d| d.unwrap()[0] == batch(0)));
        assert_eq!(decodes.load(Ordering::SeqCst), 1);
        get(1).await;
        get(2).await; // over budget: the oldest (0) goes
        assert_eq!(decodes.load(Ordering::SeqCst), 3);
        get(2).await;
        get(1).await;
        assert_eq!(decodes.load(Ordering::SeqCst), 3);
        get(0).await;
        assert_eq!(decodes.load(Ordering::SeqCst), 4);
        assert!(cache.lock().bytes <= size * 2);
        // A failed decode is not kept: the next read decodes again.
        let failed = cache
            .get_or_decode(key(9), || Err(SourceError::Engine("disk".into())))
            .await;
        assert!(failed.is_err());
        assert!(!cache.lock().entries.contains_key(&key(9)));
    }

    #[test]
    fn sorting_keeps_nulls_last_both_ways_and_pages_by_skip() {
        use datafusion::arrow::array::{Int64Array, TimestampMicrosecondArray};
        use datafusion::arrow::datatypes::{Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMicrosecondArray::from(vec![
                    Some(2),
                    None,
                    Some(1),
                    Some(2),
                ])),
                Arc::new(Int64Array::from(vec![Some(5), Some(0), Some(9), None])),
            ],
        )
        .unwrap();
        let ns = |b: RecordBatch| -> Vec<Option<i64>> {
            b.column(0).as_primitive::<Int64Type>().iter().collect()
        };
        let desc = [SortKey::new(0, false), SortKey::new(1, true)];
        let all = sort_window(&batch, &desc, 0, usize::MAX, &[1]).unwrap();
        assert_eq!(ns(all), [Some(5), None, Some(9), Some(0)]);
        let page = sort_window(&batch, &desc, 1, 2, &[1]).unwrap();
        assert_eq!(ns(page), [None, Some(9)]);
        let asc = [SortKey::new(0, true), SortKey::new(1, true)];
        let all = sort_window(&batch, &asc, 0, usize::MAX, &[1]).unwrap();
        assert_eq!(ns(all), [Some(9), Some(5), None, Some(0)]);
        assert_eq!(sort_window(&batch, &asc, 9, 1, &[1]).unwrap().num_rows(), 0);
    }
}
