//! How I/O, Parquet and Arrow failures become [`SourceError`]s naming the file.

use std::path::Path;

use crate::source::SourceError;

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SourceError + '_ {
    move |source| SourceError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A file that could not be read as Parquet: the reader's error (Parquet's
/// own, or Arrow's for a batch), naming the file.
pub(super) fn parquet_err<E: std::fmt::Display>(path: &Path) -> impl FnOnce(E) -> SourceError + '_ {
    move |e| SourceError::Unreadable {
        file: path.display().to_string(),
        message: e.to_string(),
    }
}

pub(super) fn arrow_err(e: datafusion::arrow::error::ArrowError) -> SourceError {
    SourceError::Internal(e.to_string())
}
