//! Query sources: where a job's rows come from. A source knows its schema and
//! answers a time-ranged, filtered, ordered and paged query as a stream of JSON
//! rows, so the job runner can deliver results without knowing the storage.

use sha2::{Digest, Sha256};

use crate::filter::{Order, Predicate, Schema};

pub mod parquet;
pub mod postgres;
mod rows;
mod runtime;
mod stream;

pub use crate::model::Row;
pub use parquet::{DEFAULT_PAGE_CACHE_BYTES, ParquetSource};
pub use postgres::PostgresSource;
pub(crate) use runtime::Lane;
pub use runtime::{AwaitingFirstRows, QueryRuntime};

/// The rows of one query, in order. Dropping the stream stops the query.
pub type RowStream = futures::stream::BoxStream<'static, Result<Row, SourceError>>;

/// One query against a source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceQuery {
    pub predicate: Predicate,
    /// Start of the half-open time range `[from_us, to_us)`, µs since epoch UTC.
    pub from_us: i64,
    /// End (exclusive) of the time range, µs since epoch UTC.
    pub to_us: i64,
    /// Fields to return, in this order; empty = all fields in schema order.
    pub fields: Vec<String>,
    pub order: Order,
    /// Rows already delivered, skipped so a job can resume.
    pub skip: u64,
    /// Maximum number of rows to return after `skip`.
    pub limit: u64,
}

/// The fields a query returns: the requested ones in order without repeats,
/// or every field of the schema when none are named. Shared by all sources
/// so they answer the same query with the same columns.
pub(crate) fn output_fields(
    schema: &Schema,
    requested: &[String],
) -> Result<Vec<String>, SourceError> {
    let mut output: Vec<String> = Vec::new();
    for name in requested {
        if schema.field_type(name).is_none() {
            return Err(SourceError::UnknownField {
                field: name.clone(),
                available: schema.field_names().collect::<Vec<_>>().join(", "),
            });
        }
        if !output.contains(name) {
            output.push(name.clone());
        }
    }
    if output.is_empty() {
        output = schema.field_names().map(str::to_owned).collect();
    }
    Ok(output)
}

/// 16 hex chars of SHA-256 over the schema: every source gives the same
/// version for the same shape.
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

impl SourceQuery {
    /// Every row of the source, oldest first, all fields: the starting point
    /// for a query that narrows one thing (`SourceQuery { order, ..SourceQuery::everything() }`).
    pub fn everything() -> SourceQuery {
        SourceQuery {
            predicate: Predicate::And(vec![]),
            from_us: i64::MIN,
            to_us: i64::MAX,
            fields: vec![],
            order: Order::Asc,
            skip: 0,
            limit: u64::MAX,
        }
    }
}

/// A queryable source of rows.
#[async_trait::async_trait]
pub trait QuerySource: Send + Sync + 'static {
    /// Fields and types, and which field is the time column.
    fn schema(&self) -> &Schema;
    /// Stable identity, e.g. `files:/abs/dir`; part of the dedup fingerprint.
    fn id(&self) -> &str;
    /// 16 hex chars of SHA-256 over the schema (field names and types, time
    /// column), so a fingerprint changes when the data's shape does.
    fn schema_version(&self) -> &str;
    /// Runs a query. Rows are produced lazily: the first row does not wait for
    /// the whole time range to be scanned.
    async fn query(&self, q: SourceQuery) -> Result<RowStream, SourceError>;
}

/// Why a source could not be opened or queried.
#[derive(thiserror::Error, Debug)]
pub enum SourceError {
    #[error(
        "source location {location} does not exist; pass a directory of .parquet files or a pattern like /data/events-*.parquet"
    )]
    NotFound { location: String },

    #[error(
        "no Parquet files found at {location}; a directory is searched for *.parquet (not recursively), a pattern may use * in the file name only"
    )]
    NoFiles { location: String },

    #[error("unsupported source location {location}: {reason}")]
    BadLocation { location: String, reason: String },

    #[error(
        "time column {column:?} not found in {file}; available columns: {available}; pass the right --time-column"
    )]
    NoTimeColumn {
        column: String,
        file: String,
        available: String,
    },

    #[error(
        "time column {column:?} in {file} has type {found}, but a timestamp is required; pick a timestamp column as the time column"
    )]
    TimeColumnType {
        column: String,
        file: String,
        found: String,
    },

    #[error(
        "{file} does not share the schema of {first}: {detail}; all files of a source must have the same columns and types"
    )]
    SchemaMismatch {
        file: String,
        first: String,
        detail: String,
    },

    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read or write the file {file}: {message}")]
    Unreadable { file: String, message: String },

    #[error("unknown field {field:?}; the source has: {available}")]
    UnknownField { field: String, available: String },

    #[error(
        "filter on {field:?} does not fit the field: {detail}; the filter must be validated against this source's schema"
    )]
    BadPredicate { field: String, detail: String },

    /// The source's store did not answer (connection lost, pool
    /// exhausted, resources exhausted): worth retrying later.
    #[error("the source is unavailable: {0}")]
    Unavailable(String),

    /// The query failed inside the engine or the database for a reason
    /// that is not the request's: a bug to report.
    #[error("the query failed: {0}")]
    Internal(String),
}

/// What a source error means for the one who asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// The request or the configuration does not fit this source.
    Invalid,
    /// The source's store cannot be reached or read now.
    Unavailable,
    /// A fault of the service.
    Internal,
}

impl SourceError {
    pub fn kind(&self) -> SourceErrorKind {
        use SourceError::*;
        match self {
            NotFound { .. }
            | NoFiles { .. }
            | BadLocation { .. }
            | NoTimeColumn { .. }
            | TimeColumnType { .. }
            | SchemaMismatch { .. }
            | UnknownField { .. }
            | BadPredicate { .. } => SourceErrorKind::Invalid,
            Io { .. } | Unreadable { .. } | Unavailable(_) => SourceErrorKind::Unavailable,
            Internal(_) => SourceErrorKind::Internal,
        }
    }
}

impl From<sqlx::Error> for SourceError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match e {
            E::Io(_)
            | E::Tls(_)
            | E::Protocol(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed => SourceError::Unavailable(e.to_string()),
            other => SourceError::Internal(other.to_string()),
        }
    }
}

impl From<datafusion::error::DataFusionError> for SourceError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as E;
        match e {
            E::IoError(_) | E::ObjectStore(_) | E::ResourcesExhausted(_) => {
                SourceError::Unavailable(e.to_string())
            }
            other => SourceError::Internal(other.to_string()),
        }
    }
}
