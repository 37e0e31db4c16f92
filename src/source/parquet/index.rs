//! One Parquet file as the source opened it: its footer, its page index,
//! and the time range of each page, so a time window can pick the pages it
//! overlaps without reading the file again (see `window`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};
use datafusion::parquet::file::metadata::PageIndexPolicy;

use super::error::{arrow_err, io_err, parquet_err};
use crate::source::SourceError;
use crate::source::rows::to_micros;

/// Rows decoded per batch while reading a window.
const READ_BATCH_ROWS: usize = 8192;

/// One Parquet file with its footer and page index, read when the source opened.
pub(super) struct IndexedFile {
    pub(super) path: PathBuf,
    /// Size and modification time at open: a file rewritten since is read
    /// through DataFusion, which reads its footer afresh.
    pub(super) len: u64,
    pub(super) modified: Option<SystemTime>,
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

impl TimeSpan {
    /// Whether the page has rows whose time may lie in `[from_us, to_us)`;
    /// a missing bound may be anything.
    fn overlaps(&self, from_us: i64, to_us: i64) -> bool {
        self.run.rows > 0
            && self.min_us.is_none_or(|v| v < to_us)
            && self.max_us.is_none_or(|v| v >= from_us)
    }
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
    pub(super) fn reopen(&self) -> Result<Option<File>, SourceError> {
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
    pub(super) fn runs(&self, from_us: i64, to_us: i64) -> Vec<PageRun> {
        let mut runs: Vec<PageRun> = Vec::new();
        let mut joins_last = false;
        for span in &self.time_spans {
            if !span.overlaps(from_us, to_us) {
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

    /// The pages whose time may lie in `[from_us, to_us)`, as (first time,
    /// last time, rows); `None` unless the file's pages are in time order.
    pub(super) fn ordered_pages(&self, from_us: i64, to_us: i64) -> Option<Vec<PageTimes>> {
        if !time_ordered(&self.time_spans) {
            return None;
        }
        let pages = self
            .time_spans
            .iter()
            .filter(|s| s.overlaps(from_us, to_us));
        // In time order, every page with rows has both bounds.
        pages
            .map(|span| {
                Some(PageTimes {
                    min_us: span.min_us?,
                    max_us: span.max_us?,
                    rows: span.run.rows,
                })
            })
            .collect()
    }

    /// Decodes a run's rows of the root columns `roots` (ascending), a
    /// batch at a time.
    pub(super) fn read_run(
        &self,
        file: &File,
        run: &PageRun,
        roots: &[usize],
    ) -> Result<impl Iterator<Item = Result<RecordBatch, SourceError>> + use<'_>, SourceError> {
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
        Ok(reader.map(|batch| batch.map_err(parquet_err(&self.path))))
    }
}

/// A page's time range, both ends included, and its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PageTimes {
    pub(super) min_us: i64,
    pub(super) max_us: i64,
    pub(super) rows: usize,
}

/// Whether `spans` (in file order) all have both bounds and never go back
/// in time. Empty pages are ignored.
fn time_ordered(spans: &[TimeSpan]) -> bool {
    let mut last_max = i64::MIN;
    for span in spans.iter().filter(|s| s.run.rows > 0) {
        let (Some(min_us), Some(max_us)) = (span.min_us, span.max_us) else {
            return false;
        };
        if min_us < last_max {
            return false;
        }
        last_max = max_us;
    }
    true
}

/// Consecutive rows of one row group, whole pages.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct PageRun {
    pub(super) row_group: usize,
    /// Within the row group.
    pub(super) first_row: usize,
    pub(super) rows: usize,
}

/// The raw (in the column's own unit) values of a timestamp statistics array.
pub(super) fn raw_values(a: &dyn Array) -> Result<Vec<Option<i64>>, SourceError> {
    let ints = cast(a, &DataType::Int64).map_err(arrow_err)?;
    Ok(ints.as_primitive::<Int64Type>().iter().collect())
}

pub(super) fn saturating_micros(v: i64, unit: TimeUnit) -> i64 {
    to_micros(v, unit).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::demo;
    use chrono::NaiveDate;

    /// One demo day of 5,000 rows: three pages of the time column.
    fn demo_day() -> (tempfile::TempDir, PathBuf) {
        demo_file(5_000)
    }

    /// The file of one demo day of `rows` rows, in pages of 2,048 rows.
    pub(in crate::source::parquet) fn demo_file(rows: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        demo::generate(dir.path(), day, 1, rows, demo::DEMO_SEED, &|_, _| {}).unwrap();
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
    fn pages_are_in_time_order_only_when_none_goes_back() {
        let span = |min: Option<i64>, max: Option<i64>, rows: usize| TimeSpan {
            run: PageRun {
                row_group: 0,
                first_row: 0,
                rows,
            },
            min_us: min,
            max_us: max,
        };
        // Equal times may span two pages; an empty page has no bounds.
        let ordered = [
            span(Some(1), Some(5), 10),
            span(None, None, 0),
            span(Some(5), Some(9), 10),
        ];
        assert!(time_ordered(&ordered));
        assert!(!time_ordered(&[
            span(Some(1), Some(5), 10),
            span(Some(4), Some(9), 10)
        ]));
        assert!(!time_ordered(&[span(Some(1), None, 10)]));
        let (_dir, path) = demo_day();
        let file = IndexedFile::open(&path, "ts").unwrap();
        let pages = file.ordered_pages(i64::MIN, i64::MAX).unwrap();
        assert_eq!(pages.iter().map(|p| p.rows).sum::<usize>(), 5_000);
        assert_eq!(pages.len(), 3);
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
}
