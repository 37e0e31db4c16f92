//! Where a source's rows are: the files a location names (a directory or a
//! `*` pattern), what their footers say (the shared schema, each file's time
//! range), and the time-disjoint *segments* the files group into.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::{DataType, Schema as ArrowSchema, SchemaRef};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;

use super::error::{io_err, parquet_err};
use super::index::{IndexedFile, raw_values, saturating_micros};
use super::translate::field_type;
use crate::filter::Schema;
use crate::source::SourceError;

/// Files whose time ranges overlap, queried together; segments are disjoint.
#[derive(Debug, Clone)]
pub(super) struct Segment {
    pub(super) min_us: i64,
    pub(super) max_us: i64,
    /// `file://` URLs: DataFusion would read glob characters in plain paths.
    pub(super) urls: Vec<String>,
    /// The same files with their footers, for reading windows directly.
    pub(super) files: Vec<Arc<IndexedFile>>,
}

/// What the footers of a location's files say, checked to agree.
pub(super) struct Layout {
    /// `files:` and the canonical directory or pattern.
    pub(super) id: String,
    pub(super) schema: Schema,
    /// The files' Arrow schema, given to DataFusion so it does not re-infer it.
    pub(super) arrow_schema: SchemaRef,
    pub(super) time_type: DataType,
    /// Ascending by time.
    pub(super) segments: Vec<Segment>,
}

/// What the footer of one file says.
struct FileInfo {
    path: PathBuf,
    indexed: Arc<IndexedFile>,
    schema: SchemaRef,
    /// Time range in µs, `None` when the file has no non-null time value.
    range: Option<(i64, i64)>,
}

/// Finds `location`'s files and reads their footers (blocking I/O).
pub(super) fn read_layout(location: &str, time_column: &str) -> Result<Layout, SourceError> {
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
        .map_err(|e| SourceError::Internal(e.to_string()))?;
    Ok(Layout {
        id,
        schema,
        arrow_schema,
        time_type,
        segments: segments(&infos)?,
    })
}

/// `*` matches any run of characters (including none); everything else is literal.
fn wildcard_match(pattern: &str, name: &str) -> bool {
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
fn raw_min_max(a: &dyn Array) -> Result<Option<(i64, i64)>, SourceError> {
    Ok(raw_values(a)?.into_iter().flatten().fold(None, |range, v| {
        Some(range.map_or((v, v), |(lo, hi): (i64, i64)| (lo.min(v), hi.max(v))))
    }))
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
            .ok_or_else(|| SourceError::Unreadable {
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
            let batch = batch.map_err(parquet_err(path))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
