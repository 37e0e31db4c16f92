//! The demo dataset: synthetic HTTP request logs of a small shop, one Parquet
//! file per UTC day, so the service can be tried without real data. Content is
//! a pure function of the seed and the calendar day, so regenerating (or
//! extending the range later) reproduces the same rows. Not a query source:
//! it writes the files a [`crate::source::ParquetSource`] then reads.

mod day;
mod rng;
mod shop;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;

use self::day::{Builders, DAY_US, Day, day_offsets};
use self::rng::Rng;
use self::shop::SERVICES;
use crate::source::SourceError;

pub use crate::config::{DEMO_DAYS, DEMO_ROWS_PER_DAY};

pub const DEMO_SEED: u64 = 0x5EED_DA7A_2026;

/// Rows per Parquet row group (and per Arrow batch we build).
const ROW_GROUP_ROWS: usize = 64 * 1024;
/// Rows per data page. Rows are sorted by time and every page's min/max go
/// into the page index, so a query for a slice of a day (a job's first
/// window) decodes the few pages that overlap it, not the whole row group.
const PAGE_ROWS: usize = 2048;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("service", DataType::Utf8, false),
        Field::new("endpoint", DataType::Utf8, false),
        Field::new("method", DataType::Utf8, false),
        Field::new("status", DataType::Int64, false),
        Field::new("latency_ms", DataType::Float64, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("customer", DataType::Utf8, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("cached", DataType::Boolean, false),
        Field::new("message", DataType::Utf8, false),
    ]))
}

fn write_day(
    path: &Path,
    date: NaiveDate,
    rows: u32,
    seed: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(), SourceError> {
    let epoch = chrono::DateTime::UNIX_EPOCH.date_naive();
    let day_index = date.signed_duration_since(epoch).num_days();
    // Seeding from the calendar day (not the position in the range) keeps a
    // day's content stable when the range is extended.
    let mut rng = Rng(seed ^ (day_index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let incident_service = rng.below(SERVICES.len() as u64) as usize;
    let incident_hour = rng.below(24);
    let offsets = day_offsets(&mut rng, rows as usize);
    let mut day = Day {
        rng,
        midnight_us: day_index * DAY_US as i64,
        incident_service,
        incident_hour,
    };

    let parquet_err = |e: datafusion::parquet::errors::ParquetError| SourceError::Unreadable {
        file: path.display().to_string(),
        message: e.to_string(),
    };
    let file = std::fs::File::create(path).map_err(|source| SourceError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS)
        .set_dictionary_enabled(false);
    // Dictionaries only where values repeat: a reader must decode a
    // column's whole dictionary page before any of its data pages, so a
    // dictionary of unique times or messages would cost a small query as
    // much as the whole row group.
    let props = ["service", "method", "status", "region", "customer"]
        .into_iter()
        .fold(props, |p, c| {
            p.set_column_dictionary_enabled(ColumnPath::from(c), true)
        })
        .build();
    let schema = schema();
    let mut writer =
        ArrowWriter::try_new(file, Arc::clone(&schema), Some(props)).map_err(parquet_err)?;
    let mut scratch = String::with_capacity(64);
    let mut done = 0u64;
    for chunk in offsets.chunks(ROW_GROUP_ROWS) {
        let mut b = Builders::new(chunk.len());
        for off in chunk {
            day.row(*off, &mut b, &mut scratch);
        }
        writer
            .write(&b.finish(Arc::clone(&schema))?)
            .map_err(parquet_err)?;
        done += chunk.len() as u64;
        progress(done);
    }
    writer.close().map_err(parquet_err)?;
    Ok(())
}

/// Writes `events-YYYY-MM-DD.parquet` for the `days` days ending with
/// `end_day`, `rows_per_day` rows each, sorted by `ts`. Existing files are
/// kept, so an interrupted run can simply be repeated; each file is written
/// under a hidden temporary name and renamed when complete.
pub fn generate(
    dir: &Path,
    end_day: NaiveDate,
    days: u32,
    rows_per_day: u32,
    seed: u64,
    progress: &dyn Fn(u64, u64),
) -> Result<(), SourceError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| SourceError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let total = u64::from(days) * u64::from(rows_per_day);
    let mut done = 0u64;
    progress(0, total);
    for back in (0..days).rev() {
        let date = end_day
            .checked_sub_days(Days::new(u64::from(back)))
            .ok_or_else(|| SourceError::BadLocation {
                location: dir.display().to_string(),
                reason: format!("{days} days before {end_day} is outside the supported calendar"),
            })?;
        let name = format!("events-{}.parquet", date.format("%Y-%m-%d"));
        let path = dir.join(&name);
        if !path.exists() {
            let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
            let written = write_day(&tmp, date, rows_per_day, seed, &mut |n| {
                progress(done + n, total)
            })
            .and_then(|()| std::fs::rename(&tmp, &path).map_err(io(&path)));
            if let Err(e) = written {
                // Best effort: a leftover hidden temp file is ignored by sources anyway.
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
        done += u64::from(rows_per_day);
        progress(done, total);
    }
    Ok(())
}
