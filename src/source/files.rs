//! A source over a set of Parquet files (a directory or a `*` pattern),
//! queried with DataFusion. Opening reads only the files' footers: the shared
//! schema and each file's time range. Files whose time ranges overlap are
//! grouped into disjoint *segments*, so a query can run segment by segment in
//! time order and deliver its first rows without scanning every file.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Int64Type, Schema as ArrowSchema, SchemaRef, TimeUnit,
};
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, SortExpr};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::direct::{self, IndexedFile, PageCache, SortKey, WindowRead};
use super::engine;
use super::rows::{batch_to_rows, to_micros};
use super::translate::{column, field_type, time_compare, translate};
use super::{QuerySource, Row, RowStream, SourceError, SourceQuery};
use crate::filter::{CompareOp, Order, RegexCache, Schema};

/// Batches buffered between the query task and the consumer: enough to keep
/// the engine busy, few enough that an abandoned query wastes little work.
const CHANNEL_BATCHES: usize = 4;

/// Upper bound for the offsets/fetch handed to DataFusion; keeps its
/// `skip + fetch` arithmetic far from overflow. Larger limits are enforced here.
const MAX_ENGINE_ROWS: u64 = 1 << 40;

/// Files whose time ranges overlap, queried together; segments are disjoint.
#[derive(Debug, Clone)]
struct Segment {
    min_us: i64,
    max_us: i64,
    /// `file://` URLs: DataFusion would read glob characters in plain paths.
    urls: Vec<String>,
    /// The same files with their footers, for reading windows directly.
    files: Vec<Arc<IndexedFile>>,
}

/// What the footer of one file says.
struct FileInfo {
    path: PathBuf,
    indexed: Arc<IndexedFile>,
    schema: SchemaRef,
    /// Time range in µs, `None` when the file has no non-null time value.
    range: Option<(i64, i64)>,
}

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
    /// Whether time windows are read without the planner (`direct`); off
    /// only in tests that compare the two paths.
    direct_windows: bool,
    /// Pages those reads decoded, shared by concurrent jobs.
    pages: Arc<PageCache>,
    /// Compiled filter regexes; the app shares its own.
    regexes: RegexCache,
}

/// Decoded pages kept for the direct window reads unless the source is
/// given another budget: a few dozen pages of the newest day, the ones
/// concurrent dashboards all read first.
pub const DEFAULT_PAGE_CACHE_BYTES: usize = 64 << 20;

impl std::fmt::Debug for ParquetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSource")
            .field("id", &self.id)
            .field("schema", &self.schema)
            .field("segments", &self.segments.len())
            .finish_non_exhaustive()
    }
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SourceError + '_ {
    move |source| SourceError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub(super) fn parquet_err(
    path: &Path,
) -> impl FnOnce(datafusion::parquet::errors::ParquetError) -> SourceError + '_ {
    move |e| SourceError::Parquet {
        file: path.display().to_string(),
        message: e.to_string(),
    }
}

/// `*` matches any run of characters (including none); everything else is literal.
pub(crate) fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Position after the last `*` and the name position it was tried at, for backtracking.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi + 1, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Regular files in `dir` whose name satisfies `keep`; hidden files are
/// skipped, because writers (the demo generator among them) use them as temp files.
fn list_dir(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>, SourceError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') || !keep(name) {
            continue;
        }
        // Follows symlinks, so a link to a file counts as a file.
        if std::fs::metadata(&path).map_err(io_err(&path))?.is_file() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn canonical(path: &Path, location: &str) -> Result<PathBuf, SourceError> {
    path.canonicalize().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SourceError::NotFound {
                location: location.to_owned(),
            }
        } else {
            io_err(path)(e)
        }
    })
}

/// Resolves a location into the source id and its files, sorted by path.
fn resolve(location: &str) -> Result<(String, Vec<PathBuf>), SourceError> {
    let path = Path::new(location);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if parent.to_string_lossy().contains('*') {
        return Err(SourceError::BadLocation {
            location: location.to_owned(),
            reason: "`*` is only supported in the file name, not in directories".into(),
        });
    }
    let (id, files) = if name.contains('*') {
        let dir = canonical(parent, location)?;
        if !dir.is_dir() {
            return Err(SourceError::NotFound {
                location: location.to_owned(),
            });
        }
        let files = list_dir(&dir, |n| wildcard_match(name, n))?;
        (format!("files:{}", dir.join(name).display()), files)
    } else {
        let abs = canonical(path, location)?;
        let files = if abs.is_dir() {
            list_dir(&abs, |n| n.ends_with(".parquet"))?
        } else {
            // A single file is a degenerate pattern; accepting it costs nothing.
            vec![abs.clone()]
        };
        (format!("files:{}", abs.display()), files)
    };
    if files.is_empty() {
        return Err(SourceError::NoFiles {
            location: location.to_owned(),
        });
    }
    Ok((id, files))
}

/// A `file://` URL with everything but unreserved characters percent-encoded.
fn file_url(path: &Path) -> Result<String, SourceError> {
    let s = path.to_str().ok_or_else(|| SourceError::BadLocation {
        location: path.display().to_string(),
        reason: "file paths must be valid UTF-8".into(),
    })?;
    let mut url = String::from("file://");
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(char::from(b));
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(url)
}

/// Min and max (raw, in the column's unit) of the non-null values of an array.
fn raw_min_max(a: &ArrayRef) -> Result<Option<(i64, i64)>, SourceError> {
    let ints = cast(a, &DataType::Int64).map_err(|e| SourceError::Engine(e.to_string()))?;
    let ints = ints.as_primitive::<Int64Type>();
    let mut range: Option<(i64, i64)> = None;
    for v in ints.iter().flatten() {
        range = Some(range.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))));
    }
    Ok(range)
}

pub(super) fn saturating_micros(v: i64, unit: TimeUnit) -> i64 {
    to_micros(v, unit).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// Reads one file's footer: schema and time range (from row-group statistics,
/// or by scanning the time column once when statistics are missing).
fn read_footer(path: &Path, time_column: &str) -> Result<FileInfo, SourceError> {
    let indexed = Arc::new(IndexedFile::open(path, time_column)?);
    let file = File::open(path).map_err(io_err(path))?;
    let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, indexed.meta.clone());
    let schema = Arc::clone(builder.schema());
    let field = schema
        .field_with_name(time_column)
        .map_err(|_| SourceError::NoTimeColumn {
            column: time_column.to_owned(),
            file: path.display().to_string(),
            available: schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let DataType::Timestamp(unit, _) = field.data_type() else {
        return Err(SourceError::TimeColumnType {
            column: time_column.to_owned(),
            file: path.display().to_string(),
            found: field.data_type().to_string(),
        });
    };
    let unit = *unit;
    let metadata = Arc::clone(builder.metadata());
    let row_groups = metadata.row_groups();
    let converter = StatisticsConverter::try_new(time_column, &schema, builder.parquet_schema())
        .map_err(parquet_err(path))?;
    let mins = converter
        .row_group_mins(row_groups.iter())
        .map_err(parquet_err(path))?;
    let maxes = converter
        .row_group_maxes(row_groups.iter())
        .map_err(parquet_err(path))?;
    let complete = row_groups
        .iter()
        .enumerate()
        .all(|(i, rg)| rg.num_rows() == 0 || (mins.is_valid(i) && maxes.is_valid(i)));
    let raw = if complete {
        match (raw_min_max(&mins)?, raw_min_max(&maxes)?) {
            (Some((lo, _)), Some((_, hi))) => Some((lo, hi)),
            _ => None,
        }
    } else {
        tracing::debug!(file = %path.display(), "no time statistics; scanning the time column");
        let root = builder
            .parquet_schema()
            .root_schema()
            .get_fields()
            .iter()
            .position(|f| f.name() == time_column)
            .ok_or_else(|| SourceError::Parquet {
                file: path.display().to_string(),
                message: format!("time column {time_column:?} is not a top-level Parquet column"),
            })?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), [root]);
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(parquet_err(path))?;
        let mut range: Option<(i64, i64)> = None;
        for batch in reader {
            let batch = batch.map_err(|e| SourceError::Parquet {
                file: path.display().to_string(),
                message: e.to_string(),
            })?;
            if let Some((lo, hi)) = raw_min_max(batch.column(0))? {
                range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
            }
        }
        range
    };
    Ok(FileInfo {
        path: path.to_owned(),
        indexed,
        schema,
        range: raw.map(|(lo, hi)| (saturating_micros(lo, unit), saturating_micros(hi, unit))),
    })
}

/// Explains how `b` differs from `a` (names and types only), or `None` if it does not.
fn schema_difference(a: &ArrowSchema, b: &ArrowSchema) -> Option<String> {
    for fa in a.fields() {
        match b.field_with_name(fa.name()) {
            Err(_) => return Some(format!("column {:?} is missing", fa.name())),
            Ok(fb) if fb.data_type() != fa.data_type() => {
                return Some(format!(
                    "column {:?} is {} instead of {}",
                    fa.name(),
                    fb.data_type(),
                    fa.data_type()
                ));
            }
            Ok(_) => {}
        }
    }
    b.fields()
        .iter()
        .find(|fb| a.field_with_name(fb.name()).is_err())
        .map(|fb| format!("it has an extra column {:?}", fb.name()))
}

/// Groups files into time-disjoint segments. Ranges touching at one instant
/// are merged too, so all rows with equal timestamps are sorted together.
fn segments(files: &[FileInfo]) -> Result<Vec<Segment>, SourceError> {
    let mut ranged: Vec<(i64, i64, &FileInfo)> = files
        .iter()
        .filter_map(|f| f.range.map(|(lo, hi)| (lo, hi, f)))
        .collect();
    ranged.sort_by(|a, b| (a.0, a.1, &a.2.path).cmp(&(b.0, b.1, &b.2.path)));
    let mut out: Vec<Segment> = Vec::new();
    for (lo, hi, info) in ranged {
        let url = file_url(&info.path)?;
        let indexed = Arc::clone(&info.indexed);
        match out.last_mut() {
            Some(last) if lo <= last.max_us => {
                last.max_us = last.max_us.max(hi);
                last.urls.push(url);
                last.files.push(indexed);
            }
            _ => out.push(Segment {
                min_us: lo,
                max_us: hi,
                urls: vec![url],
                files: vec![indexed],
            }),
        }
    }
    Ok(out)
}

/// Shared with the Postgres source, so both give the same version for the same shape.
pub(crate) fn schema_version(schema: &Schema) -> String {
    let mut h = Sha256::new();
    h.update(format!("time_column={}\n", schema.time_column));
    for (name, ty) in &schema.fields {
        h.update(format!("{name}:{ty}\n"));
    }
    let mut s = hex::encode(h.finalize());
    s.truncate(16);
    s
}

fn open_blocking(location: &str, time_column: &str) -> Result<ParquetSource, SourceError> {
    let (id, paths) = resolve(location)?;
    let infos = paths
        .iter()
        .map(|p| read_footer(p, time_column))
        .collect::<Result<Vec<_>, _>>()?;
    let first = infos.first().ok_or_else(|| SourceError::NoFiles {
        location: location.to_owned(),
    })?;
    for other in &infos[1..] {
        if let Some(detail) = schema_difference(&first.schema, &other.schema) {
            return Err(SourceError::SchemaMismatch {
                file: other.path.display().to_string(),
                first: first.path.display().to_string(),
                detail,
            });
        }
    }
    let mut fields = Vec::new();
    for f in first.schema.fields() {
        match field_type(f.data_type()) {
            Some(t) => fields.push((f.name().clone(), t)),
            None => tracing::warn!(
                column = %f.name(),
                data_type = %f.data_type(),
                "column type not supported by filters; leaving it out of the schema"
            ),
        }
    }
    let schema = Schema {
        fields,
        time_column: time_column.to_owned(),
    };
    // Metadata is dropped: DataFusion strips it from file schemas too, and only
    // names and types matter for reading.
    let arrow_schema = Arc::new(ArrowSchema::new(first.schema.fields().clone()));
    let time_type = first
        .schema
        .field_with_name(time_column)
        .map(|f| f.data_type().clone())
        .map_err(|e| SourceError::Engine(e.to_string()))?;
    let segments = segments(&infos)?;
    Ok(ParquetSource {
        id,
        schema_version: schema_version(&schema),
        schema,
        arrow_schema,
        time_type,
        segments,
        ctx: SessionContext::new_with_config(engine_config()?),
        direct_windows: true,
        pages: Arc::new(PageCache::new(DEFAULT_PAGE_CACHE_BYTES)),
        regexes: RegexCache::default(),
    })
}

/// DataFusion's settings: its defaults, overridden by any `DATAFUSION_*`
/// environment variable (e.g. `DATAFUSION_EXECUTION_PARQUET_PUSHDOWN_FILTERS=true`).
fn engine_config() -> Result<SessionConfig, SourceError> {
    SessionConfig::from_env()
        .map_err(|e| SourceError::Engine(format!("bad DATAFUSION_* environment variable: {e}")))
}

/// How many time windows the first segment of a query is cut into, newest
/// (or oldest, ascending) first and growing by `FIRST_WINDOW_GROWTH` each:
/// the first chunk then waits for a small slice of a day instead of the whole
/// day, while files sorted by time let the page index skip the rest.
const FIRST_WINDOWS: u32 = 4;
const FIRST_WINDOW_GROWTH: i64 = 4;

/// One query of a job: a segment, optionally narrowed to `[from_us, to_us)`.
struct Part {
    segment: Segment,
    window: Option<(i64, i64)>,
}

/// Cuts `seg`, restricted to `[from_us, to_us)`, into windows that grow away
/// from the end results start at. Windows are half-open and disjoint, so
/// rows with equal times always fall in the same one and order is kept.
fn first_windows(seg: &Segment, from_us: i64, to_us: i64, asc: bool) -> Vec<Part> {
    let lo = seg.min_us.max(from_us);
    let hi = seg.max_us.saturating_add(1).min(to_us);
    let span = hi.saturating_sub(lo);
    let total: i64 = (0..FIRST_WINDOWS).map(|k| FIRST_WINDOW_GROWTH.pow(k)).sum();
    let unit = span / total;
    if unit < 1 {
        return vec![Part {
            segment: seg.clone(),
            window: None,
        }];
    }
    let mut parts = Vec::new();
    let mut covered = 0i64;
    for k in 0..FIRST_WINDOWS {
        let width = if k + 1 == FIRST_WINDOWS {
            span - covered
        } else {
            unit * FIRST_WINDOW_GROWTH.pow(k)
        };
        let window = if asc {
            (lo + covered, lo + covered + width)
        } else {
            (hi - covered - width, hi - covered)
        };
        covered += width;
        parts.push(Part {
            segment: seg.clone(),
            window: Some(window),
        });
    }
    parts
}

/// Everything a running query owns, so its stream can be `'static`.
struct Job {
    ctx: SessionContext,
    arrow_schema: SchemaRef,
    parts: Vec<Part>,
    time: String,
    time_type: DataType,
    filter: Expr,
    /// Columns fed to the sort: the output fields plus the time column.
    sort_input: Vec<String>,
    sort: Vec<SortExpr>,
    /// The output columns, or `None` when they equal `sort_input`.
    output: Option<Vec<String>>,
    skip: u64,
    limit: u64,
    /// How time windows are read without the planner; `None` = planned.
    direct: Option<DirectRead>,
    pages: Arc<PageCache>,
    /// Taken when the query starts, released by its first part's first
    /// batch (or with the job): bulk work yields until then.
    waiting_for_first_rows: std::sync::Mutex<Option<engine::AwaitingFirstRows>>,
}

/// What reading a job's time windows directly (see [`direct`]) needs:
/// the same columns, filter and sort as the planned query.
struct DirectRead {
    /// Columns read: `sort_input`, then those only the filter uses.
    schema: SchemaRef,
    df_schema: DFSchema,
    /// The planned sort's keys, as positions in `schema`.
    sort_keys: Vec<SortKey>,
    /// The output columns, as positions in `schema`.
    output: Vec<usize>,
}

impl DirectRead {
    fn new(
        arrow_schema: &ArrowSchema,
        filter: &Expr,
        sort_input: &[String],
        output: &[String],
        time: &str,
        asc: bool,
    ) -> Result<DirectRead, SourceError> {
        let mut columns: Vec<String> = sort_input.to_vec();
        let mut filter_only: Vec<String> = filter
            .column_refs()
            .into_iter()
            .map(|c| c.name.clone())
            .filter(|n| !columns.contains(n))
            .collect();
        filter_only.sort();
        filter_only.dedup();
        columns.extend(filter_only);
        let fields = columns
            .iter()
            .map(|n| arrow_schema.field_with_name(n).cloned())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SourceError::Engine(e.to_string()))?;
        let schema = Arc::new(ArrowSchema::new(fields));
        let position = |name: &str| columns.iter().position(|c| c == name);
        let mut sort_keys = Vec::with_capacity(sort_input.len());
        sort_keys.extend(position(time).map(|i| SortKey::new(i, asc)));
        sort_keys.extend(
            sort_input
                .iter()
                .filter(|n| *n != time)
                .filter_map(|n| position(n))
                .map(|i| SortKey::new(i, true)),
        );
        let output = output.iter().filter_map(|n| position(n)).collect();
        Ok(DirectRead {
            df_schema: DFSchema::try_from(schema.as_ref().clone())?,
            schema,
            sort_keys,
            output,
        })
    }
}

type Batch = Result<Vec<Row>, SourceError>;

impl Job {
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
    /// Once nothing is left to skip, the next part runs ahead (filter and
    /// sort on the other core) while this one's rows go out, so a long
    /// query keeps two parts busy; each holds at most `CHANNEL_BATCHES`
    /// batches of rows ready.
    async fn run(self: Arc<Self>, tx: mpsc::Sender<Batch>) -> Result<(), SourceError> {
        let (mut skip_left, mut remaining) = (self.skip, self.limit);
        let mut ahead: Option<(usize, PartRun)> = None;
        for n in 0..self.parts.len() {
            if remaining == 0 {
                break;
            }
            let mut current = match ahead.take() {
                Some((m, run)) if m == n => run,
                _ => self.start_part(n, skip_left, remaining),
            };
            let read_ahead = skip_left == 0 && n + 1 < self.parts.len();
            let mut got: u64 = 0;
            loop {
                let next = current.rows.recv().await;
                // Started once this part has its first rows (or none), so
                // planning the next part does not delay a first chunk.
                if read_ahead && ahead.is_none() {
                    ahead = Some((n + 1, self.start_part(n + 1, 0, remaining)));
                }
                let Some(rows) = next else { break };
                let mut rows = rows?;
                let room = usize::try_from(remaining - got).unwrap_or(usize::MAX);
                rows.truncate(room);
                got += rows.len() as u64;
                if !rows.is_empty() && tx.send(Ok(rows)).await.is_err() {
                    return Ok(()); // consumer gone: stop working
                }
                if got >= remaining {
                    break;
                }
            }
            if got < remaining {
                // The part ended by itself: make sure it did not die silently.
                current.finished().await?;
            }
            remaining -= got;
            if got > 0 {
                // Rows came back, so this part had more matches than the skip.
                skip_left = 0;
            } else if skip_left > 0 {
                // Nothing came back: the whole part was skipped; count its
                // matches (a scan, but no sort) to know how much skip is left.
                let sorted = self.segment_frame(&self.parts[n]).await?;
                let _permit = engine::bulk_permit().await;
                let matched = sorted.count().await? as u64;
                skip_left = skip_left.saturating_sub(matched);
            }
        }
        Ok(())
    }

    /// Starts part `n` on its own task: its rows after `skip`, at most `fetch`.
    fn start_part(self: &Arc<Self>, n: usize, skip: u64, fetch: u64) -> PartRun {
        let (tx, rows) = mpsc::channel(CHANNEL_BATCHES);
        let job = Arc::clone(self);
        let task = engine::spawn(async move {
            if let Err(e) = job.produce_part(n, skip, fetch, &tx).await {
                // The consumer may already be gone; then nobody needs the error.
                let _ = tx.send(Err(e)).await;
            }
        });
        PartRun {
            rows,
            task: TaskGuard(Some(task)),
        }
    }

    async fn produce_part(
        &self,
        n: usize,
        skip: u64,
        fetch: u64,
        tx: &mpsc::Sender<Batch>,
    ) -> Result<(), SourceError> {
        // The first window is what the first chunk waits for; the rest is
        // bulk work and takes turns (see `engine`).
        let bulk = n > 0;
        // Released once its first batch is computed (the sort is done by
        // then), not while the batch waits for the consumer.
        let mut first = if bulk {
            None
        } else {
            self.waiting_for_first_rows
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
        };
        if let Some(sorted) = self.read_window(n, skip, fetch, bulk).await? {
            return send_sorted(&sorted, bulk, first, tx).await;
        }
        // Planning is CPU work too (DataFusion's optimiser passes cost about
        // as much as reading a first window), so bulk parts plan under a
        // permit as well, after the running first windows.
        let planning = if bulk {
            Some(engine::bulk_permit().await)
        } else {
            None
        };
        let sorted = self.segment_frame(&self.parts[n]).await?;
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
            let permit = if bulk {
                Some(engine::bulk_permit().await)
            } else {
                None
            };
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
    /// Part `n`'s rows after `skip`, at most `fetch`, read directly when
    /// it is a time window and its files are unchanged; `None` otherwise.
    async fn read_window(
        &self,
        n: usize,
        skip: u64,
        fetch: u64,
        bulk: bool,
    ) -> Result<Option<RecordBatch>, SourceError> {
        let part = &self.parts[n];
        let (Some(direct), Some(window)) = (&self.direct, part.window) else {
            return Ok(None);
        };
        let _permit = if bulk {
            Some(engine::bulk_permit().await)
        } else {
            None
        };
        let filter = self
            .ctx
            .create_physical_expr(self.part_filter(part), &direct.df_schema)?;
        let read = WindowRead {
            schema: &direct.schema,
            window,
            filter: &filter,
        };
        let Some(matched) = direct::read_window(&part.segment.files, &read, &self.pages).await?
        else {
            tracing::debug!("a source file changed since it was opened; planning the window");
            return Ok(None);
        };
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        let fetch = usize::try_from(fetch).unwrap_or(usize::MAX);
        direct::sort_window(&matched, &direct.sort_keys, skip, fetch, &direct.output).map(Some)
    }
}

/// Rows per batch sent from a directly read window: small, so the first
/// chunk's rows are encoded and on their way before the rest.
const SEND_ROWS: usize = 1024;

/// Sends a sorted window's rows in batches; bulk parts encode under a permit.
async fn send_sorted(
    sorted: &RecordBatch,
    bulk: bool,
    mut first: Option<engine::AwaitingFirstRows>,
    tx: &mpsc::Sender<Batch>,
) -> Result<(), SourceError> {
    let mut at = 0;
    while at < sorted.num_rows() {
        let len = SEND_ROWS.min(sorted.num_rows() - at);
        let permit = if bulk {
            Some(engine::bulk_permit().await)
        } else {
            None
        };
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

/// One part running on its own task; dropping it stops the task.
struct PartRun {
    rows: mpsc::Receiver<Batch>,
    task: TaskGuard,
}

impl PartRun {
    /// Joins the finished task, so a panic is an error, not a short result.
    async fn finished(mut self) -> Result<(), SourceError> {
        match self.task.0.take() {
            Some(task) => match task.await {
                Err(e) if e.is_panic() => {
                    Err(SourceError::Engine(format!("query task panicked: {e}")))
                }
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }
}

/// Aborts the query task when the stream is dropped.
struct TaskGuard(Option<tokio::task::JoinHandle<()>>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// Wraps the task's channel as a row stream. When the channel closes, the task
/// is joined so a panic surfaces as an error rather than a silently short result.
fn row_stream(rx: mpsc::Receiver<Batch>, task: tokio::task::JoinHandle<()>) -> RowStream {
    let state = (rx, VecDeque::<Row>::new(), TaskGuard(Some(task)));
    futures::stream::unfold(state, |(mut rx, mut buf, mut guard)| async move {
        loop {
            if let Some(row) = buf.pop_front() {
                return Some((Ok(row), (rx, buf, guard)));
            }
            match rx.recv().await {
                Some(Ok(rows)) => buf.extend(rows),
                Some(Err(e)) => return Some((Err(e), (rx, buf, guard))),
                None => {
                    let handle = guard.0.take()?;
                    return match handle.await {
                        Err(e) if e.is_panic() => Some((
                            Err(SourceError::Engine(format!("query task panicked: {e}"))),
                            (rx, buf, guard),
                        )),
                        _ => None,
                    };
                }
            }
        }
    })
    .boxed()
}

impl ParquetSource {
    /// Opens `location`: a directory (its `*.parquet` files, not recursive) or
    /// a path whose file name contains `*` wildcards. Reads only the footers.
    pub async fn open(location: &str, time_column: &str) -> Result<ParquetSource, SourceError> {
        let (location, time_column) = (location.to_owned(), time_column.to_owned());
        tokio::task::spawn_blocking(move || open_blocking(&location, &time_column))
            .await
            .map_err(|e| SourceError::Engine(format!("open task failed: {e}")))?
    }

    /// Keeps at most `bytes` of decoded pages for first windows (0: none).
    pub fn with_page_cache_bytes(mut self, bytes: usize) -> ParquetSource {
        self.pages = Arc::new(PageCache::new(bytes));
        self
    }

    /// Takes compiled regexes from `regexes` (by default, its own cache).
    pub fn with_regexes(mut self, regexes: RegexCache) -> ParquetSource {
        self.regexes = regexes;
        self
    }

    /// Number of time-disjoint file groups (for diagnostics and tests).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
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
        let mut parts = Vec::with_capacity(segments.len() + FIRST_WINDOWS as usize);
        let mut segments = segments.into_iter();
        if let Some(first) = segments.next() {
            parts.extend(first_windows(&first, q.from_us, q.to_us, asc));
        }
        parts.extend(segments.map(|segment| Part {
            segment,
            window: None,
        }));
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
            waiting_for_first_rows: std::sync::Mutex::new(Some(engine::AwaitingFirstRows::start())),
            direct,
            pages: Arc::clone(&self.pages),
            ctx: self.ctx.clone(),
            arrow_schema: Arc::clone(&self.arrow_schema),
            parts,
            time: time.clone(),
            time_type: self.time_type.clone(),
            filter,
            sort_input,
            sort,
            output,
            skip: q.skip,
            limit: q.limit,
        };
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let job = Arc::new(job);
        let task = engine::spawn(async move {
            let err_tx = tx.clone();
            if let Err(e) = job.run(tx).await {
                // The consumer may already be gone; then nobody needs the error.
                let _ = err_tx.send(Err(e)).await;
            }
        });
        Ok(row_stream(rx, task))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::{FieldType, Predicate, Value};
    use crate::source::demo;
    use chrono::NaiveDate;
    use datafusion::arrow::array::{
        BooleanArray, Int32Array, ListArray, RecordBatch, StringArray, TimestampNanosecondArray,
    };
    use datafusion::arrow::datatypes::{Field, Int32Type};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
    use futures::TryStreamExt;
    use serde_json::Value as Json;

    const DAYS: u32 = 3;
    const ROWS: u32 = 500;

    fn end_day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()
    }

    fn gen_demo(dir: &Path) {
        demo::generate(dir, end_day(), DAYS, ROWS, demo::DEMO_SEED, &|_, _| {}).unwrap();
    }

    async fn demo_source() -> (tempfile::TempDir, ParquetSource) {
        let dir = tempfile::tempdir().unwrap();
        gen_demo(dir.path());
        let src = ParquetSource::open(dir.path().to_str().unwrap(), "ts")
            .await
            .unwrap();
        (dir, src)
    }

    fn query(predicate: Predicate) -> SourceQuery {
        SourceQuery {
            predicate,
            ..SourceQuery::everything()
        }
    }

    fn all() -> Predicate {
        Predicate::And(vec![])
    }

    /// A parsed row: tests look values up by name.
    type Fields = serde_json::Map<String, Json>;

    async fn run(src: &ParquetSource, q: SourceQuery) -> Vec<Fields> {
        let rows: Vec<Row> = src.query(q).await.unwrap().try_collect().await.unwrap();
        rows.iter().map(Row::fields).collect()
    }

    fn micros(v: &Json) -> i64 {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp_micros()
    }

    /// Independent evaluation of a predicate, SQL three-valued: `None` = unknown.
    fn eval(p: &Predicate, row: &Fields, schema: &Schema) -> Option<bool> {
        use std::cmp::Ordering;
        let cmp = |field: &str, v: &Value| -> Option<Ordering> {
            let x = row.get(field)?;
            if x.is_null() {
                return None;
            }
            match (schema.field_type(field)?, v) {
                (FieldType::String, Value::String(s)) => Some(x.as_str()?.cmp(s.as_str())),
                (FieldType::Integer, Value::Integer(i)) => Some(x.as_i64()?.cmp(i)),
                (FieldType::Float, Value::Float(f)) => x.as_f64()?.partial_cmp(f),
                (FieldType::Boolean, Value::Boolean(b)) => Some(x.as_bool()?.cmp(b)),
                (FieldType::Time, Value::Time(t)) => Some(micros(x).cmp(t)),
                _ => panic!("bad test predicate"),
            }
        };
        match p {
            Predicate::And(ps) => {
                let rs: Vec<_> = ps.iter().map(|p| eval(p, row, schema)).collect();
                if rs.contains(&Some(false)) {
                    Some(false)
                } else if rs.contains(&None) {
                    None
                } else {
                    Some(true)
                }
            }
            Predicate::Or(ps) => {
                let rs: Vec<_> = ps.iter().map(|p| eval(p, row, schema)).collect();
                if rs.contains(&Some(true)) {
                    Some(true)
                } else if rs.contains(&None) {
                    None
                } else {
                    Some(false)
                }
            }
            Predicate::Not(p) => eval(p, row, schema).map(|b| !b),
            Predicate::Compare { field, op, value } => {
                let o = cmp(field, value)?;
                Some(match op {
                    CompareOp::Eq => o == Ordering::Equal,
                    CompareOp::Ne => o != Ordering::Equal,
                    CompareOp::Lt => o == Ordering::Less,
                    CompareOp::Le => o != Ordering::Greater,
                    CompareOp::Gt => o == Ordering::Greater,
                    CompareOp::Ge => o != Ordering::Less,
                })
            }
            Predicate::In {
                field,
                negated,
                values,
            } => {
                let mut found = false;
                for v in values {
                    found |= cmp(field, v)? == Ordering::Equal;
                }
                Some(found != *negated)
            }
            Predicate::Regex {
                field,
                negated,
                pattern,
            } => {
                let s = row.get(field)?.as_str()?;
                Some(regex::Regex::new(pattern).unwrap().is_match(s) != *negated)
            }
            Predicate::Contains { field, needle } => {
                Some(row.get(field)?.as_str()?.contains(needle.as_str()))
            }
        }
    }

    fn cmp(field: &str, op: CompareOp, value: Value) -> Predicate {
        Predicate::Compare {
            field: field.into(),
            op,
            value,
        }
    }

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    #[tokio::test]
    async fn maps_schema_and_identity() {
        let (dir, src) = demo_source().await;
        let expected = [
            ("ts", FieldType::Time),
            ("service", FieldType::String),
            ("endpoint", FieldType::String),
            ("method", FieldType::String),
            ("status", FieldType::Integer),
            ("latency_ms", FieldType::Float),
            ("region", FieldType::String),
            ("customer", FieldType::String),
            ("bytes", FieldType::Integer),
            ("cached", FieldType::Boolean),
            ("message", FieldType::String),
        ];
        let got: Vec<(&str, FieldType)> = src
            .schema()
            .fields
            .iter()
            .map(|(n, t)| (n.as_str(), *t))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(src.schema().time_column, "ts");
        assert_eq!(src.schema_version().len(), 16);
        assert!(src.schema_version().chars().all(|c| c.is_ascii_hexdigit()));
        let canon = dir.path().canonicalize().unwrap();
        assert_eq!(src.id(), format!("files:{}", canon.display()));
        assert_eq!(src.segment_count(), DAYS as usize);
        // Same shape, same version, whatever the location.
        let again = ParquetSource::open(&format!("{}/*.parquet", dir.path().display()), "ts")
            .await
            .unwrap();
        assert_eq!(again.schema_version(), src.schema_version());
        assert_ne!(again.id(), src.id());
    }

    #[tokio::test]
    async fn orders_deterministically() {
        let (_dir, src) = demo_source().await;
        for order in [Order::Asc, Order::Desc] {
            let q = SourceQuery {
                order,
                ..query(all())
            };
            let a = run(&src, q.clone()).await;
            let b = run(&src, q).await;
            assert_eq!(a.len(), (DAYS * ROWS) as usize);
            assert_eq!(a, b);
            let ts: Vec<i64> = a.iter().map(|r| micros(&r["ts"])).collect();
            let sorted = ts.windows(2).all(|w| {
                if order == Order::Asc {
                    w[0] <= w[1]
                } else {
                    w[0] >= w[1]
                }
            });
            assert!(sorted, "{order:?} not sorted");
            assert!(a[0]["ts"].as_str().unwrap().ends_with('Z'));
            assert_eq!(
                a[0]["ts"].as_str().unwrap().len(),
                "2026-11-01T12:00:00.000000Z".len()
            );
        }
    }

    #[tokio::test]
    async fn a_range_before_every_file_is_empty_but_still_checked() {
        let (_dir, src) = demo_source().await;
        let full = run(&src, query(all())).await;
        let first = full.iter().map(|r| micros(&r["ts"])).min().unwrap();
        let before = SourceQuery {
            from_us: first - 86_400_000_000,
            to_us: first,
            ..query(all())
        };
        assert!(run(&src, before.clone()).await.is_empty());
        // No file is read, but the request is checked as for any range.
        let unknown = SourceQuery {
            fields: vec!["no_such_field".into()],
            ..before
        };
        assert!(src.query(unknown).await.is_err());
    }

    #[tokio::test]
    async fn time_range_is_half_open() {
        let (_dir, src) = demo_source().await;
        let full = run(&src, query(all())).await;
        let ts: Vec<i64> = full.iter().map(|r| micros(&r["ts"])).collect();
        let (from, to) = (ts[100], ts[1200]);
        let got = run(
            &src,
            SourceQuery {
                from_us: from,
                to_us: to,
                ..query(all())
            },
        )
        .await;
        let want: Vec<Fields> = full
            .iter()
            .filter(|r| (from..to).contains(&micros(&r["ts"])))
            .cloned()
            .collect();
        assert_eq!(got, want);
        assert_eq!(micros(&got[0]["ts"]), from);
        assert!(got.iter().all(|r| micros(&r["ts"]) != to));
        let empty = run(
            &src,
            SourceQuery {
                from_us: from,
                to_us: from,
                ..query(all())
            },
        )
        .await;
        assert!(empty.is_empty());
        let one = run(
            &src,
            SourceQuery {
                from_us: from,
                to_us: from + 1,
                ..query(all())
            },
        )
        .await;
        assert!(!one.is_empty() && one.iter().all(|r| micros(&r["ts"]) == from));
        let desc = run(
            &src,
            SourceQuery {
                from_us: from,
                to_us: to,
                order: Order::Desc,
                ..query(all())
            },
        )
        .await;
        assert_eq!(desc.len(), want.len());
    }

    #[tokio::test]
    async fn skip_and_limit_resume_across_segments() {
        let (_dir, src) = demo_source().await;
        let errors = cmp("status", CompareOp::Ge, Value::Integer(400));
        for predicate in [all(), errors] {
            for order in [Order::Asc, Order::Desc] {
                let base = SourceQuery {
                    order,
                    predicate: predicate.clone(),
                    ..query(all())
                };
                let full = run(&src, base.clone()).await;
                let n = full.len() as u64;
                let cases = [
                    (0, 10),
                    (495, 20),
                    (499, 2),
                    (500, 1),
                    (1000, 600),
                    (n / 3 + 1, n / 3),
                    (n - 1, 10),
                    (n, 5),
                    (n + 7, 5),
                    (10, 0),
                ];
                for (skip, limit) in cases {
                    let got = run(
                        &src,
                        SourceQuery {
                            skip,
                            limit,
                            ..base.clone()
                        },
                    )
                    .await;
                    let lo = (skip.min(n)) as usize;
                    let hi = (skip.saturating_add(limit).min(n)) as usize;
                    assert_eq!(
                        got,
                        full[lo..hi],
                        "{order:?} skip {skip} limit {limit} of {n}"
                    );
                }
                // Resuming chunk by chunk reproduces the whole result.
                let mut resumed = Vec::new();
                loop {
                    let chunk = run(
                        &src,
                        SourceQuery {
                            skip: resumed.len() as u64,
                            limit: 97,
                            ..base.clone()
                        },
                    )
                    .await;
                    if chunk.is_empty() {
                        break;
                    }
                    resumed.extend(chunk);
                }
                assert_eq!(resumed, full);
            }
        }
    }

    #[tokio::test]
    async fn predicates_match_independent_evaluation() {
        let (_dir, src) = demo_source().await;
        let full = run(&src, query(all())).await;
        let mut nonempty = 0;
        for p in sample_predicates(&full) {
            let want: Vec<Fields> = full
                .iter()
                .filter(|r| eval(&p, r, src.schema()) == Some(true))
                .cloned()
                .collect();
            let got = run(&src, query(p.clone())).await;
            assert_eq!(got.len(), want.len(), "{p:?}");
            assert_eq!(got, want, "{p:?}");
            nonempty += usize::from(!got.is_empty());
        }
        // The data set exercises nearly every predicate; the escaped ones match nothing.
        assert!(nonempty >= 28, "only {nonempty} predicates matched rows");
        // Unescaped, `t_0` would match `cust-0…`, `e%e` almost any message.
        assert!(
            full.iter()
                .any(|r| r["customer"].as_str().unwrap().contains("t-0"))
        );
    }

    /// Time windows read directly give exactly the planner's rows: for every
    /// sample predicate, both orders, field subsets that leave out the time
    /// column or name only filter-free columns, and skips and limits that
    /// fall inside the windows. Days of 5,000 rows span several pages.
    #[tokio::test]
    async fn direct_windows_match_the_planner() {
        let dir = tempfile::tempdir().unwrap();
        demo::generate(dir.path(), end_day(), 2, 5_000, demo::DEMO_SEED, &|_, _| {}).unwrap();
        let location = dir.path().to_str().unwrap();
        let direct = ParquetSource::open(location, "ts").await.unwrap();
        let mut planned = ParquetSource::open(location, "ts").await.unwrap();
        planned.direct_windows = false;
        let full = run(&direct, query(all())).await;
        assert_eq!(full, run(&planned, query(all())).await);
        let day_start = micros(&full[0]["ts"]);
        let shapes: [(Order, Vec<&str>, u64, u64); 5] = [
            (Order::Desc, vec![], 0, u64::MAX),
            (Order::Asc, vec![], 0, u64::MAX),
            (Order::Desc, vec!["status", "service"], 7, 300),
            (Order::Asc, vec!["message"], 0, 25),
            (Order::Desc, vec!["latency_ms", "ts", "cached"], 2_000, 40),
        ];
        for p in sample_predicates(&full) {
            for (order, fields, skip, limit) in &shapes {
                let q = SourceQuery {
                    predicate: p.clone(),
                    // Starts inside the first day, so the first window is cut mid-page.
                    from_us: day_start + 1_234_567,
                    to_us: i64::MAX,
                    fields: fields.iter().map(|f| f.to_string()).collect(),
                    order: *order,
                    skip: *skip,
                    limit: *limit,
                };
                let (got, want) = (run(&direct, q.clone()).await, run(&planned, q).await);
                assert_eq!(
                    got, want,
                    "{p:?} {order:?} {fields:?} skip {skip} limit {limit}"
                );
            }
        }
    }

    fn sample_predicates(full: &[Fields]) -> Vec<Predicate> {
        let t = micros(&full[700]["ts"]);
        let t2 = micros(&full[20]["ts"]);
        vec![
            cmp("service", CompareOp::Eq, s("payments")),
            cmp("service", CompareOp::Ne, s("payments")),
            cmp("service", CompareOp::Lt, s("d")),
            cmp("status", CompareOp::Ge, Value::Integer(400)),
            cmp("status", CompareOp::Eq, Value::Integer(200)),
            cmp("bytes", CompareOp::Le, Value::Integer(1000)),
            cmp("latency_ms", CompareOp::Gt, Value::Float(100.0)),
            cmp("latency_ms", CompareOp::Le, Value::Float(20.5)),
            cmp("cached", CompareOp::Eq, Value::Boolean(true)),
            cmp("cached", CompareOp::Ne, Value::Boolean(true)),
            cmp("ts", CompareOp::Ge, Value::Time(t)),
            cmp("ts", CompareOp::Gt, Value::Time(t)),
            cmp("ts", CompareOp::Lt, Value::Time(t)),
            cmp("ts", CompareOp::Le, Value::Time(t)),
            cmp("ts", CompareOp::Eq, Value::Time(t)),
            cmp("ts", CompareOp::Ne, Value::Time(t)),
            Predicate::In {
                field: "status".into(),
                negated: false,
                values: vec![Value::Integer(404), Value::Integer(500)],
            },
            Predicate::In {
                field: "status".into(),
                negated: true,
                values: vec![Value::Integer(200), Value::Integer(201)],
            },
            Predicate::In {
                field: "region".into(),
                negated: false,
                values: vec![s("eu-west-1"), s("us-east-1")],
            },
            Predicate::In {
                field: "ts".into(),
                negated: false,
                values: vec![Value::Time(t2), Value::Time(t)],
            },
            Predicate::In {
                field: "ts".into(),
                negated: true,
                values: vec![Value::Time(t2), Value::Time(t)],
            },
            Predicate::Regex {
                field: "endpoint".into(),
                negated: false,
                pattern: r"^/api/v2/.*\d+$".into(),
            },
            Predicate::Regex {
                field: "message".into(),
                negated: true,
                pattern: "timeout|created".into(),
            },
            Predicate::Contains {
                field: "message".into(),
                needle: "% on node_".into(),
            },
            Predicate::Contains {
                field: "message".into(),
                needle: "quota_per".into(),
            },
            Predicate::Contains {
                field: "customer".into(),
                needle: "t_0".into(),
            },
            Predicate::Contains {
                field: "message".into(),
                needle: "e%e".into(),
            },
            Predicate::Not(Box::new(cmp("method", CompareOp::Eq, s("GET")))),
            Predicate::And(vec![
                cmp("service", CompareOp::Eq, s("search")),
                cmp("cached", CompareOp::Eq, Value::Boolean(true)),
            ]),
            Predicate::Or(vec![
                cmp("status", CompareOp::Eq, Value::Integer(504)),
                cmp("latency_ms", CompareOp::Gt, Value::Float(500.0)),
            ]),
            Predicate::Not(Box::new(Predicate::Or(vec![
                cmp("region", CompareOp::Eq, s("us-east-1")),
                Predicate::And(vec![]),
            ]))),
            all(),
        ]
    }

    #[tokio::test]
    async fn selects_fields_but_sorts_by_time() {
        let (_dir, src) = demo_source().await;
        let full = run(
            &src,
            SourceQuery {
                order: Order::Desc,
                ..query(all())
            },
        )
        .await;
        let fields = vec!["status".to_string(), "service".to_string()];
        let got = run(
            &src,
            SourceQuery {
                fields: fields.clone(),
                order: Order::Desc,
                ..query(all())
            },
        )
        .await;
        assert_eq!(got.len(), full.len());
        assert!(
            got.iter()
                .all(|r| r.len() == 2 && r.contains_key("status") && r.contains_key("service"))
        );
        // Same time order: each row's projection agrees with the full row's
        // wherever timestamps are unique.
        let mismatches = got
            .iter()
            .zip(&full)
            .filter(|(g, f)| g["status"] != f["status"] || g["service"] != f["service"])
            .count();
        assert!(
            mismatches < full.len() / 20,
            "{mismatches} rows out of time order"
        );
        let err = src
            .query(SourceQuery {
                fields: vec!["nope".into()],
                ..query(all())
            })
            .await
            .err()
            .unwrap();
        assert!(matches!(err, SourceError::UnknownField { .. }), "{err}");
    }

    #[tokio::test]
    async fn first_row_arrives_and_drop_stops() {
        let (_dir, src) = demo_source().await;
        let full = run(
            &src,
            SourceQuery {
                order: Order::Desc,
                ..query(all())
            },
        )
        .await;
        let mut stream = src
            .query(SourceQuery {
                order: Order::Desc,
                ..query(all())
            })
            .await
            .unwrap();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.fields(), full[0]);
        drop(stream);
        // The source stays usable after an abandoned query.
        let again = run(
            &src,
            SourceQuery {
                limit: 3,
                ..query(all())
            },
        )
        .await;
        assert_eq!(again.len(), 3);
    }

    #[tokio::test]
    async fn glob_locations() {
        let dir = tempfile::tempdir().unwrap();
        gen_demo(dir.path());
        let pattern = format!("{}/events-2026-10-3*.parquet", dir.path().display());
        let src = ParquetSource::open(&pattern, "ts").await.unwrap();
        assert_eq!(src.segment_count(), 2);
        let rows = run(&src, query(all())).await;
        assert_eq!(rows.len(), 2 * ROWS as usize);
        assert!(
            rows.iter()
                .all(|r| r["ts"].as_str().unwrap().starts_with("2026-10-3"))
        );
        let none = format!("{}/nothing-*.parquet", dir.path().display());
        let err = ParquetSource::open(&none, "ts").await.unwrap_err();
        assert!(matches!(err, SourceError::NoFiles { .. }), "{err}");
        let bad = format!("{}/*/x.parquet", dir.path().display());
        let err = ParquetSource::open(&bad, "ts").await.unwrap_err();
        assert!(matches!(err, SourceError::BadLocation { .. }), "{err}");
    }

    #[tokio::test]
    async fn clear_errors_for_bad_locations_and_columns() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = ParquetSource::open(missing.to_str().unwrap(), "ts")
            .await
            .unwrap_err();
        assert!(matches!(err, SourceError::NotFound { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("missing") && msg.contains("does not exist") && msg.contains(".parquet"),
            "{msg}"
        );
        let err = ParquetSource::open(dir.path().to_str().unwrap(), "ts")
            .await
            .unwrap_err();
        assert!(matches!(err, SourceError::NoFiles { .. }), "{err}");

        gen_demo(dir.path());
        let err = ParquetSource::open(dir.path().to_str().unwrap(), "time")
            .await
            .unwrap_err();
        assert!(matches!(err, SourceError::NoTimeColumn { .. }), "{err}");
        let err = ParquetSource::open(dir.path().to_str().unwrap(), "status")
            .await
            .unwrap_err();
        assert!(matches!(err, SourceError::TimeColumnType { .. }), "{err}");

        write_odd_file(&dir.path().join("zz-odd.parquet"));
        let err = ParquetSource::open(dir.path().to_str().unwrap(), "ts")
            .await
            .unwrap_err();
        assert!(matches!(err, SourceError::SchemaMismatch { .. }), "{err}");
        assert!(err.to_string().contains("zz-odd.parquet"), "{err}");
    }

    #[tokio::test]
    async fn overlapping_files_share_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        gen_demo(dir.path());
        std::fs::copy(
            dir.path().join("events-2026-10-31.parquet"),
            dir.path().join("extra.parquet"),
        )
        .unwrap();
        let src = ParquetSource::open(dir.path().to_str().unwrap(), "ts")
            .await
            .unwrap();
        assert_eq!(src.segment_count(), DAYS as usize);
        for order in [Order::Asc, Order::Desc] {
            let full = run(
                &src,
                SourceQuery {
                    order,
                    ..query(all())
                },
            )
            .await;
            assert_eq!(full.len(), (DAYS + 1) as usize * ROWS as usize);
            let ts: Vec<i64> = full.iter().map(|r| micros(&r["ts"])).collect();
            assert!(ts.windows(2).all(|w| if order == Order::Asc {
                w[0] <= w[1]
            } else {
                w[0] >= w[1]
            }));
            let page = run(
                &src,
                SourceQuery {
                    order,
                    skip: 480,
                    limit: 600,
                    ..query(all())
                },
            )
            .await;
            assert_eq!(page, full[480..1080]);
        }
    }

    /// A file with another schema: nullable strings (one upper-case name), an
    /// Int32, nanosecond timestamps without zone, an unsupported list column,
    /// and no statistics.
    fn write_odd_file(path: &Path) {
        let schema = Arc::new(ArrowSchema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
            Field::new("Name", DataType::Utf8, true),
            Field::new("n", DataType::Int32, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new_list("tags", Field::new_list_field(DataType::Int32, true), true),
        ]));
        let ts = TimestampNanosecondArray::from(vec![
            Some(1_000_000_500),
            Some(1_000_001_000),
            Some(1_000_001_999),
            Some(2_000_000_000),
            None,
        ]);
        let name = StringArray::from(vec![Some("a_1"), None, Some("b%2"), Some("a_1"), Some("c")]);
        let n = Int32Array::from(vec![Some(1), Some(2), None, Some(-4), Some(5)]);
        let ok = BooleanArray::from(vec![Some(true), None, Some(false), Some(true), Some(true)]);
        let tags = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1)]); 5]);
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(ts),
                Arc::new(name),
                Arc::new(n),
                Arc::new(ok),
                Arc::new(tags),
            ],
        )
        .unwrap();
        let props = WriterProperties::builder()
            .set_statistics_enabled(EnabledStatistics::None)
            .build();
        let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    #[tokio::test]
    async fn nulls_units_and_exact_names() {
        let dir = tempfile::tempdir().unwrap();
        write_odd_file(&dir.path().join("odd.parquet"));
        let src = ParquetSource::open(dir.path().to_str().unwrap(), "ts")
            .await
            .unwrap();
        let names: Vec<&str> = src.schema().field_names().collect();
        assert_eq!(names, ["ts", "Name", "n", "ok"]);
        // The row with a null time never matches a time range.
        let full = run(&src, query(all())).await;
        assert_eq!(full.len(), 4);
        assert_eq!(full[0]["ts"], "1970-01-01T00:00:01.000000Z");
        assert_eq!(full[2]["ts"], "1970-01-01T00:00:01.000001Z");
        assert!(full[1]["Name"].is_null());

        let count = |p: Predicate| {
            let src = &src;
            async move { run(src, query(p)).await.len() }
        };
        let name_eq = cmp("Name", CompareOp::Eq, s("a_1"));
        assert_eq!(count(name_eq.clone()).await, 2);
        // SQL three-valued logic: `not` of a comparison with null is still unknown.
        assert_eq!(count(Predicate::Not(Box::new(name_eq))).await, 1);
        assert_eq!(count(cmp("Name", CompareOp::Ne, s("a_1"))).await, 1);
        assert_eq!(
            count(Predicate::Regex {
                field: "Name".into(),
                negated: true,
                pattern: "a".into()
            })
            .await,
            1
        );
        assert_eq!(
            count(Predicate::Contains {
                field: "Name".into(),
                needle: "%".into()
            })
            .await,
            1
        );
        assert_eq!(
            count(Predicate::Not(Box::new(Predicate::Contains {
                field: "Name".into(),
                needle: "_".into()
            })))
            .await,
            1
        );
        assert_eq!(
            count(Predicate::In {
                field: "n".into(),
                negated: true,
                values: vec![Value::Integer(1)]
            })
            .await,
            2
        );
        // Int32 column against literals beyond its range.
        assert_eq!(
            count(cmp("n", CompareOp::Lt, Value::Integer(5_000_000_000))).await,
            3
        );
        assert_eq!(
            count(cmp("n", CompareOp::Gt, Value::Integer(-5_000_000_000))).await,
            3
        );
        // Nanoseconds compare by the microsecond they fall in, like they are shown.
        assert_eq!(
            count(cmp("ts", CompareOp::Eq, Value::Time(1_000_000))).await,
            1
        );
        assert_eq!(
            count(cmp("ts", CompareOp::Eq, Value::Time(1_000_001))).await,
            2
        );
        assert_eq!(
            count(cmp("ts", CompareOp::Gt, Value::Time(1_000_000))).await,
            3
        );
        assert_eq!(
            count(cmp("ts", CompareOp::Le, Value::Time(1_000_001))).await,
            3
        );
        assert_eq!(
            count(cmp("ts", CompareOp::Ne, Value::Time(1_000_001))).await,
            2
        );
        let in_range = run(
            &src,
            SourceQuery {
                from_us: 1_000_001,
                to_us: 2_000_000,
                ..query(all())
            },
        )
        .await;
        assert_eq!(in_range.len(), 2);
        let err = src
            .query(query(cmp("tags", CompareOp::Eq, Value::Integer(1))))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, SourceError::UnknownField { .. }), "{err}");
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match(
            "events-*.parquet",
            "events-2026-01-01.parquet"
        ));
        assert!(wildcard_match("*", "x"));
        assert!(wildcard_match("a*b*c", "abbbc"));
        assert!(wildcard_match("*.parquet", ".parquet"));
        assert!(!wildcard_match("events-*.parquet", "events-1.parquet.tmp"));
        assert!(!wildcard_match("a*b", "ac"));
        assert!(wildcard_match("exact", "exact"));
    }

    #[test]
    fn file_urls_escape_specials() {
        assert_eq!(
            file_url(Path::new("/d/a b[1]?.parquet")).unwrap(),
            "file:///d/a%20b%5B1%5D%3F.parquet"
        );
    }

    #[test]
    fn first_windows_cover_the_range_in_order_growing() {
        let seg = Segment {
            min_us: 1_000,
            max_us: 100_000,
            urls: vec![],
            files: vec![],
        };
        for asc in [false, true] {
            let parts = first_windows(&seg, 5_000, 90_000, asc);
            let windows: Vec<(i64, i64)> = parts.iter().map(|p| p.window.unwrap()).collect();
            assert_eq!(windows.len(), FIRST_WINDOWS as usize);
            let mut sorted = windows.clone();
            sorted.sort();
            assert_eq!(sorted.first().unwrap().0, 5_000);
            assert_eq!(sorted.last().unwrap().1, 90_000);
            assert!(sorted.windows(2).all(|w| w[0].1 == w[1].0), "{sorted:?}");
            if asc {
                assert_eq!(windows, sorted);
            } else {
                assert_eq!(windows.iter().rev().copied().collect::<Vec<_>>(), sorted);
            }
            let widths: Vec<i64> = windows.iter().map(|(a, b)| b - a).collect();
            assert!(widths.windows(2).all(|w| w[0] <= w[1]), "{widths:?}");
        }
        // Too narrow to cut: one part, unrestricted.
        let parts = first_windows(&seg, 5_000, 5_010, false);
        assert_eq!(parts.len(), 1);
        assert!(parts[0].window.is_none());
    }
}
