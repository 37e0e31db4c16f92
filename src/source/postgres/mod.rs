//! A source over one Postgres table or view. The filter is translated into
//! SQL and run by the server; rows stream back and are rendered exactly like
//! the Parquet/DataFusion source renders them ([`super::parquet`]), so the two
//! give identical rows in identical order over the same data (the
//! conformance suite in `tests/it/conformance.rs` pins this).
//!
//! **SQL text** is built only from identifiers read from the catalog (always
//! double-quoted, `"` doubled) and `$n` placeholders: every literal of the
//! filter, and every bound of the time range, is a bind parameter. The only
//! constants in the text are our own (`'infinity'`, `TRUE`, ...).
//!
//! **Semantics**, matched to DataFusion's:
//! - SQL three-valued logic for nulls in both engines.
//! - Strings compare and sort with `COLLATE "C"`: byte order, like Arrow.
//! - `contains` is `strpos(col, $n) > 0`, not `LIKE`, so `%`, `_` and `\` in
//!   the needle are plain characters.
//! - Time literals are exact microseconds (Postgres' own precision); bounds
//!   outside what Postgres/chrono can represent become comparisons with
//!   `'±infinity'` that are constant for values but still unknown for nulls.
//! - Order: time ascending or descending, then the other returned fields
//!   ascending, nulls last, as in the Parquet source.
//!
//! **Regex.** Postgres' `~` is a POSIX ARE, not the Rust `regex` syntax the
//! filter language (and DataFusion) uses: classes, flags like `(?i)` and
//! escapes differ. So a predicate with a regex anywhere is split: every
//! maximal regex-free subtree is still evaluated by Postgres, as a boolean
//! column of the SELECT; the necessary part of the predicate (regex-free
//! conjuncts, and disjunctions made only of them) plus the time range goes
//! into the WHERE clause to cut the rows shipped; the regexes themselves run
//! here with the `regex` crate, and the tree is recombined with three-valued
//! logic. Skip and limit are then applied here instead of by `OFFSET/LIMIT`.
//! Predicates without a regex run entirely on the server.
//!
//! **Types.** `timestamptz`/`timestamp` (read as UTC) → time;
//! `text`/`varchar`/`char` → string; `int2/4/8` → integer; `float4/8` →
//! float; `bool` → boolean. `numeric` is left out (with a warning, like every
//! other type): as a float it would lose precision and compare differently
//! from the exact values Postgres holds. Domains count as their base type.
//!
//! Known differences from DataFusion, all outside the data the service
//! produces: Arrow orders floats by IEEE total order (`-0.0 < 0.0`, a
//! negative NaN first), Postgres treats `-0.0 = 0.0` and every NaN as the
//! largest value; `char(n)` columns use Postgres' padding-insensitive rules;
//! a NUL character in a string literal is rejected by Postgres (query error).

mod catalog;
mod exec;
mod residual;
mod sql;

use std::str::FromStr;
use std::time::Duration;

use futures::StreamExt;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::runtime::Handle;

use self::catalog::{Column, Columns, read_relation};
use self::exec::{CHANNEL_ROWS, Job};
use self::residual::has_regex;
use self::sql::{Param, Params, Translator, time_compare};
use super::stream::spawn_row_stream;
use super::{QuerySource, RowStream, SourceError, SourceQuery, schema_version};
use crate::filter::{CompareOp, Order, RegexCache, Schema};

const MAX_CONNECTIONS: u32 = 8;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`QuerySource`] over a Postgres table or view.
pub struct PostgresSource {
    id: String,
    schema: Schema,
    schema_version: String,
    pool: PgPool,
    /// `"schema"."table"`.
    relation: String,
    /// The offered columns, in schema order.
    columns: Columns,
    /// Compiled filter regexes; the app shares its own.
    regexes: RegexCache,
}

impl std::fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSource")
            .field("id", &self.id)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresSource {
    /// Connects to `url` and reads the columns of `table` (`name` found via
    /// the search path, or `schema.name`; names are exact, not SQL-parsed).
    /// A view works as well as a table.
    pub async fn open(
        url: &str,
        table: &str,
        time_column: &str,
    ) -> Result<PostgresSource, SourceError> {
        let bad_url = |e: sqlx::Error| SourceError::BadLocation {
            // Never echo the URL: it may carry a password.
            location: "postgres://…".into(),
            reason: e.to_string(),
        };
        let opts = PgConnectOptions::from_str(url)
            .map_err(bad_url)?
            .application_name("pseudostream-source");
        let host = match opts.get_port() {
            5432 => opts.get_host().to_owned(),
            port => format!("{}:{port}", opts.get_host()),
        };
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts)
            .await?;
        let relation = read_relation(&pool, &host, table, time_column).await?;
        Ok(PostgresSource {
            id: relation.id,
            schema_version: schema_version(&relation.schema),
            schema: relation.schema,
            pool,
            relation: relation.quoted,
            columns: relation.columns,
            regexes: RegexCache::default(),
        })
    }

    /// Takes compiled regexes from `regexes` (by default, its own cache).
    pub fn with_regexes(mut self, regexes: RegexCache) -> PostgresSource {
        self.regexes = regexes;
        self
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait::async_trait]
impl QuerySource for PostgresSource {
    fn schema(&self) -> &Schema {
        &self.schema
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn schema_version(&self) -> &str {
        &self.schema_version
    }

    /// Same contract as [`super::ParquetSource`]'s `query`: time order, then
    /// the other returned fields ascending with nulls last; the time column
    /// only returned when asked for (or all fields are).
    async fn query(&self, q: SourceQuery) -> Result<RowStream, SourceError> {
        let output = super::output_fields(&self.schema, &q.fields)?;
        let time = self.columns.get(&self.schema.time_column)?.clone();

        let mut tr = Translator {
            columns: &self.columns,
            params: Params(Vec::new()),
            regexes: &self.regexes,
        };
        let range = format!(
            "{} AND {}",
            time_compare(&time, CompareOp::Ge, q.from_us, &mut tr.params)?,
            time_compare(&time, CompareOp::Lt, q.to_us, &mut tr.params)?
        );
        let mut fields: Vec<Column> = output
            .iter()
            .map(|n| self.columns.get(n).cloned())
            .collect::<Result<_, _>>()?;
        if !output.contains(&time.name) {
            fields.push(time.clone());
        }
        let mut conds: Vec<String> = Vec::new();
        let (filter, residual) = if has_regex(&q.predicate) {
            let split = tr.split(&q.predicate)?;
            let necessary = split.necessary().unwrap_or_else(|| "TRUE".into());
            (
                necessary,
                Some(split.plan(&mut conds, &mut fields, &self.columns)?),
            )
        } else {
            (tr.translate(&q.predicate)?, None)
        };
        if q.limit == 0 || q.from_us >= q.to_us {
            // Nothing can match; the predicate was still checked above.
            return Ok(futures::stream::empty().boxed());
        }

        let asc = q.order == Order::Asc;
        let mut order = vec![format!(
            "{} {} NULLS LAST",
            time.quoted,
            if asc { "ASC" } else { "DESC" }
        )];
        for name in output.iter().filter(|n| **n != time.name) {
            let c = self.columns.get(name)?;
            order.push(format!("{} ASC NULLS LAST", c.compared()));
        }
        let mut select: Vec<String> = fields.iter().map(Column::selected).collect();
        select.extend(conds.iter().map(|c| format!("({c})")));
        let mut sql = format!(
            "SELECT {} FROM {} WHERE {range} AND {filter} ORDER BY {}",
            select.join(", "),
            self.relation,
            order.join(", ")
        );
        let mut params = tr.params;
        let (skip, limit) = if residual.is_some() {
            (q.skip, q.limit)
        } else {
            if q.skip > 0 {
                let n = params.add(Param::Int(i64::try_from(q.skip).unwrap_or(i64::MAX)))?;
                sql.push_str(&format!(" OFFSET {n}"));
            }
            if let Ok(limit) = i64::try_from(q.limit) {
                let n = params.add(Param::Int(limit))?;
                sql.push_str(&format!(" LIMIT {n}"));
            }
            (0, q.limit)
        };
        // `fields` starts with the output columns, in output order.
        let output = output
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect();
        let job = Job {
            pool: self.pool.clone(),
            sql,
            params: params.0,
            fields,
            conds: conds.len(),
            output,
            residual,
            skip,
            limit,
        };
        Ok(spawn_row_stream(&Handle::current(), CHANNEL_ROWS, |tx| {
            job.run(tx)
        }))
    }
}
