//! How I/O, Parquet and Arrow failures become [`SourceError`]s naming the file.

use std::path::Path;

use crate::source::SourceError;

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

/// A batch that could not be read: the reader's Arrow error, naming the file.
pub(super) fn read_err(
    path: &Path,
) -> impl FnOnce(datafusion::arrow::error::ArrowError) -> SourceError + '_ {
    move |e| SourceError::Parquet {
        file: path.display().to_string(),
        message: e.to_string(),
    }
}

pub(super) fn arrow_err(e: datafusion::arrow::error::ArrowError) -> SourceError {
    SourceError::Engine(e.to_string())
}
