//! A source over one Postgres table or view. The filter is translated into
//! SQL and run by the server; rows stream back and are rendered exactly like
//! the Parquet/DataFusion source renders them ([`super::files`]), so the two
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
//!   ascending, nulls last, as in `files.rs`.
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

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use regex::Regex;
use serde_json::Value as Json;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{PgPool, Postgres, Row as _};
use tokio::sync::mpsc;

use super::rows::format_micros;
use super::{QuerySource, Row, RowStream, SourceError, SourceQuery};
use crate::filter::{CompareOp, FieldType, Order, Predicate, RegexCache, Schema, Value};

/// Rows buffered between the query task and the consumer.
const CHANNEL_ROWS: usize = 256;
/// The protocol's limit on bind parameters per statement.
const MAX_PARAMS: usize = 65_535;
/// The earliest instant Postgres can store (4714-11-24 00:00 BC, UTC), in µs.
const PG_MIN_US: i64 = -210_866_803_200_000_000;
const MAX_CONNECTIONS: u32 = 8;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The column types this source reads, after mapping the catalog's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PgType {
    Timestamptz,
    Timestamp,
    Text,
    Integer,
    Float4,
    Float8,
    Boolean,
}

impl PgType {
    fn from_catalog(name: &str) -> Option<PgType> {
        Some(match name {
            "timestamptz" => PgType::Timestamptz,
            "timestamp" => PgType::Timestamp,
            "text" | "varchar" | "bpchar" => PgType::Text,
            "int2" | "int4" | "int8" => PgType::Integer,
            "float4" => PgType::Float4,
            "float8" => PgType::Float8,
            "bool" => PgType::Boolean,
            _ => return None,
        })
    }

    fn field_type(self) -> FieldType {
        match self {
            PgType::Timestamptz | PgType::Timestamp => FieldType::Time,
            PgType::Text => FieldType::String,
            PgType::Integer => FieldType::Integer,
            PgType::Float4 | PgType::Float8 => FieldType::Float,
            PgType::Boolean => FieldType::Boolean,
        }
    }
}

/// A column of the relation, as offered to filters.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    /// `"name"` with `"` doubled: safe to splice into SQL text.
    quoted: String,
    ty: PgType,
}

impl Column {
    /// The expression compared against string literals: byte order, like Arrow.
    fn compared(&self) -> String {
        match self.ty {
            PgType::Text => format!("{} COLLATE \"C\"", self.quoted),
            _ => self.quoted.clone(),
        }
    }

    /// What the SELECT list reads; casts make the decoded type fixed (domains
    /// and narrow integers included). Times come back as µs since the epoch:
    /// sqlx's chrono decoder panics on `infinity`, a cast to int8 errors instead.
    fn selected(&self) -> String {
        let q = &self.quoted;
        match self.ty {
            PgType::Timestamptz | PgType::Timestamp => {
                format!("(extract(epoch FROM {q}) * 1000000)::int8")
            }
            // Not cast: `::text` would strip a char(n)'s padding.
            PgType::Text => q.clone(),
            PgType::Integer => format!("{q}::int8"),
            PgType::Float4 => format!("{q}::float4"),
            PgType::Float8 => format!("{q}::float8"),
            PgType::Boolean => format!("{q}::bool"),
        }
    }
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// A literal on its way to the server.
#[derive(Debug, Clone)]
enum Param {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Tz(DateTime<Utc>),
    Naive(chrono::NaiveDateTime),
}

fn bind(q: Query<'_, Postgres, PgArguments>, p: Param) -> Query<'_, Postgres, PgArguments> {
    match p {
        Param::Text(v) => q.bind(v),
        Param::Int(v) => q.bind(v),
        Param::Float(v) => q.bind(v),
        Param::Bool(v) => q.bind(v),
        Param::Tz(v) => q.bind(v),
        Param::Naive(v) => q.bind(v),
    }
}

/// A [`QuerySource`] over a Postgres table or view.
pub struct PostgresSource {
    id: String,
    schema: Schema,
    schema_version: String,
    pool: PgPool,
    /// `"schema"."table"`.
    relation: String,
    /// The offered columns, in schema order.
    columns: Vec<Column>,
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

/// One attribute as the catalog describes it.
#[derive(sqlx::FromRow)]
struct CatalogColumn {
    schema_name: String,
    table_name: String,
    database: String,
    column_name: String,
    type_name: String,
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
        let (schema_name, table_name) = match table.split_once('.') {
            Some((s, t)) => (Some(s), t),
            None => (None, table),
        };
        // to_regclass resolves through the search path like a query would;
        // quote_ident keeps the names exact.
        let catalog: Vec<CatalogColumn> = sqlx::query_as(
            "SELECT n.nspname::text AS schema_name, c.relname::text AS table_name,
                    current_database()::text AS database, a.attname::text AS column_name,
                    CASE WHEN t.typtype = 'd' THEN bt.typname ELSE t.typname END::text AS type_name
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_type t ON t.oid = a.atttypid
             LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
             WHERE a.attrelid = to_regclass(CASE WHEN $1::text IS NULL THEN quote_ident($2)
                                                 ELSE quote_ident($1) || '.' || quote_ident($2) END)
               AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
        )
        .bind(schema_name)
        .bind(table_name)
        .fetch_all(&pool)
        .await?;
        let Some(first) = catalog.first() else {
            return Err(SourceError::BadLocation {
                location: table.to_owned(),
                reason:
                    "no table or view of that name is visible on the search path (use schema.table)"
                        .into(),
            });
        };
        let qualified = format!("{}.{}", first.schema_name, first.table_name);
        let relation = format!("{}.{}", quote(&first.schema_name), quote(&first.table_name));
        let id = format!("postgres:{host}/{}/{qualified}", first.database);

        let time = catalog
            .iter()
            .find(|c| c.column_name == time_column)
            .ok_or_else(|| SourceError::NoTimeColumn {
                column: time_column.to_owned(),
                file: qualified.clone(),
                available: catalog
                    .iter()
                    .map(|c| c.column_name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        if PgType::from_catalog(&time.type_name).map(PgType::field_type) != Some(FieldType::Time) {
            return Err(SourceError::TimeColumnType {
                column: time_column.to_owned(),
                file: qualified,
                found: time.type_name.clone(),
            });
        }
        let mut columns = Vec::new();
        for c in &catalog {
            match PgType::from_catalog(&c.type_name) {
                Some(ty) => columns.push(Column {
                    name: c.column_name.clone(),
                    quoted: quote(&c.column_name),
                    ty,
                }),
                None => tracing::warn!(
                    column = %c.column_name,
                    data_type = %c.type_name,
                    "column type not supported by filters; leaving it out of the schema"
                ),
            }
        }
        let schema = Schema {
            fields: columns
                .iter()
                .map(|c| (c.name.clone(), c.ty.field_type()))
                .collect(),
            time_column: time_column.to_owned(),
        };
        Ok(PostgresSource {
            id,
            schema_version: super::files::schema_version(&schema),
            schema,
            pool,
            relation,
            columns,
            regexes: RegexCache::default(),
        })
    }

    /// Takes compiled regexes from `regexes` (by default, its own cache).
    pub fn with_regexes(mut self, regexes: RegexCache) -> PostgresSource {
        self.regexes = regexes;
        self
    }

    fn column(&self, name: &str) -> Result<&Column, SourceError> {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| SourceError::UnknownField {
                field: name.to_owned(),
                available: self.schema.field_names().collect::<Vec<_>>().join(", "),
            })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The `$n` parameters of one statement, collected while its text is built.
struct Params(Vec<Param>);

impl Params {
    fn add(&mut self, p: Param) -> Result<String, SourceError> {
        if self.0.len() >= MAX_PARAMS {
            return Err(SourceError::Engine(format!(
                "the filter has more than {MAX_PARAMS} literals, more than Postgres accepts in one query"
            )));
        }
        self.0.push(p);
        Ok(format!("${}", self.0.len()))
    }
}

fn sql_op(op: CompareOp) -> &'static str {
    match op {
        CompareOp::Eq => "=",
        CompareOp::Ne => "<>",
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
    }
}

fn mismatch(field: &str, ft: FieldType, v: &Value) -> SourceError {
    SourceError::BadPredicate {
        field: field.to_owned(),
        detail: format!("a {ft} field cannot be compared with {v:?}"),
    }
}

fn string_field(c: &Column, what: &str) -> Result<(), SourceError> {
    match c.ty.field_type() {
        FieldType::String => Ok(()),
        ft => Err(SourceError::BadPredicate {
            field: c.name.clone(),
            detail: format!("{what} needs a string field, this one is {ft}"),
        }),
    }
}

/// A µs instant as a parameter for `c`, or `None` when Postgres (or chrono)
/// cannot represent it.
fn time_param(c: &Column, us: i64) -> Option<Param> {
    if us < PG_MIN_US {
        return None;
    }
    let t = DateTime::<Utc>::from_timestamp_micros(us)?;
    Some(match c.ty {
        PgType::Timestamp => Param::Naive(t.naive_utc()),
        _ => Param::Tz(t),
    })
}

/// Compares a time column with a µs instant. Out-of-range instants compare
/// with `'±infinity'`, which is constant for values but unknown for nulls,
/// like the clamped comparisons in `translate.rs`.
fn time_compare(
    c: &Column,
    op: CompareOp,
    us: i64,
    params: &mut Params,
) -> Result<String, SourceError> {
    let q = &c.quoted;
    if let Some(p) = time_param(c, us) {
        let n = params.add(p)?;
        return Ok(format!("({q} {} {n})", sql_op(op)));
    }
    let ty = if c.ty == PgType::Timestamp {
        "timestamp"
    } else {
        "timestamptz"
    };
    let always = format!("({q} >= '-infinity'::{ty})");
    let never = format!("({q} > 'infinity'::{ty})");
    let below = us < 0;
    let holds = match op {
        CompareOp::Gt | CompareOp::Ge => below,
        CompareOp::Lt | CompareOp::Le => !below,
        CompareOp::Eq => false,
        CompareOp::Ne => true,
    };
    Ok(if holds { always } else { never })
}

/// Builds SQL for predicates over one source's columns.
struct Translator<'a> {
    source: &'a PostgresSource,
    params: Params,
}

impl Translator<'_> {
    fn literal(&mut self, c: &Column, v: &Value) -> Result<String, SourceError> {
        let ft = c.ty.field_type();
        let p = match (ft, v) {
            (FieldType::String, Value::String(s)) => Param::Text(s.clone()),
            (FieldType::Integer, Value::Integer(i)) => Param::Int(*i),
            (FieldType::Float, Value::Float(f)) => Param::Float(*f),
            // Lenient, as in translate.rs: the same number.
            (FieldType::Float, Value::Integer(i)) => Param::Float(*i as f64),
            (FieldType::Boolean, Value::Boolean(b)) => Param::Bool(*b),
            _ => return Err(mismatch(&c.name, ft, v)),
        };
        self.params.add(p)
    }

    fn compare(&mut self, field: &str, op: CompareOp, v: &Value) -> Result<String, SourceError> {
        let c = self.source.column(field)?.clone();
        match (c.ty.field_type(), v) {
            (FieldType::Time, Value::Time(us)) => time_compare(&c, op, *us, &mut self.params),
            (FieldType::Time, _) => Err(mismatch(field, FieldType::Time, v)),
            _ => {
                let lit = self.literal(&c, v)?;
                Ok(format!("({} {} {lit})", c.compared(), sql_op(op)))
            }
        }
    }

    /// The exact SQL of a regex-free predicate.
    fn translate(&mut self, p: &Predicate) -> Result<String, SourceError> {
        Ok(match p {
            Predicate::And(ps) if ps.is_empty() => "TRUE".into(),
            Predicate::Or(ps) if ps.is_empty() => "FALSE".into(),
            Predicate::And(ps) | Predicate::Or(ps) => {
                let sep = if matches!(p, Predicate::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                let parts = ps
                    .iter()
                    .map(|p| self.translate(p))
                    .collect::<Result<Vec<_>, _>>()?;
                format!("({})", parts.join(sep))
            }
            Predicate::Not(inner) => format!("(NOT {})", self.translate(inner)?),
            Predicate::Compare { field, op, value } => self.compare(field, *op, value)?,
            Predicate::In {
                field,
                negated,
                values,
            } => {
                let c = self.source.column(field)?.clone();
                if values.is_empty() {
                    return Ok(if *negated { "TRUE" } else { "FALSE" }.into());
                }
                if c.ty.field_type() == FieldType::Time {
                    // One comparison per member, as translate.rs does.
                    let op = if *negated {
                        CompareOp::Ne
                    } else {
                        CompareOp::Eq
                    };
                    let parts = values
                        .iter()
                        .map(|v| self.compare(field, op, v))
                        .collect::<Result<Vec<_>, _>>()?;
                    let sep = if *negated { " AND " } else { " OR " };
                    format!("({})", parts.join(sep))
                } else {
                    let list = values
                        .iter()
                        .map(|v| self.literal(&c, v))
                        .collect::<Result<Vec<_>, _>>()?;
                    let not = if *negated { "NOT " } else { "" };
                    format!("({} {not}IN ({}))", c.compared(), list.join(", "))
                }
            }
            Predicate::Contains { field, needle } => {
                let c = self.source.column(field)?;
                string_field(c, "contains")?;
                let q = c.quoted.clone();
                let n = self.params.add(Param::Text(needle.clone()))?;
                format!("(strpos({q}, {n}) > 0)")
            }
            Predicate::Regex { field, .. } => {
                // Callers route regexes through `split`; reaching here is a bug.
                return Err(SourceError::Engine(format!(
                    "internal: regex on {field:?} reached the SQL translation"
                )));
            }
        })
    }

    /// Splits a predicate containing regexes: regex-free subtrees become SQL
    /// (evaluated by the server into boolean columns), regexes run here.
    fn split(&mut self, p: &Predicate) -> Result<Split, SourceError> {
        if !has_regex(p) {
            return Ok(Split::Sql(self.translate(p)?));
        }
        Ok(match p {
            Predicate::And(ps) => {
                Split::And(ps.iter().map(|p| self.split(p)).collect::<Result<_, _>>()?)
            }
            Predicate::Or(ps) => {
                Split::Or(ps.iter().map(|p| self.split(p)).collect::<Result<_, _>>()?)
            }
            Predicate::Not(inner) => Split::Not(Box::new(self.split(inner)?)),
            Predicate::Regex {
                field,
                negated,
                pattern,
            } => {
                let c = self.source.column(field)?;
                string_field(c, "a regex match")?;
                // Matched in Rust like the Parquet source matches `~`.
                let re =
                    self.source
                        .regexes
                        .any(pattern)
                        .map_err(|e| SourceError::BadPredicate {
                            field: field.clone(),
                            detail: format!("invalid regular expression: {e}"),
                        })?;
                Split::Regex {
                    field: field.clone(),
                    negated: *negated,
                    re,
                }
            }
            // Leaves without a regex were handled above.
            other => Split::Sql(self.translate(other)?),
        })
    }
}

fn has_regex(p: &Predicate) -> bool {
    match p {
        Predicate::And(ps) | Predicate::Or(ps) => ps.iter().any(has_regex),
        Predicate::Not(inner) => has_regex(inner),
        Predicate::Regex { .. } => true,
        _ => false,
    }
}

/// A predicate with regexes, split between the server and this process.
enum Split {
    /// A regex-free subtree, as SQL.
    Sql(String),
    Regex {
        field: String,
        negated: bool,
        re: Regex,
    },
    And(Vec<Split>),
    Or(Vec<Split>),
    Not(Box<Split>),
}

impl Split {
    /// SQL that holds whenever the whole predicate holds (`None`: no such
    /// condition known), so filtering on it on the server never loses a row.
    fn necessary(&self) -> Option<String> {
        match self {
            Split::Sql(s) => Some(s.clone()),
            Split::Regex { .. } | Split::Not(_) => None,
            Split::And(parts) => {
                let known: Vec<String> = parts.iter().filter_map(Split::necessary).collect();
                (!known.is_empty()).then(|| format!("({})", known.join(" AND ")))
            }
            Split::Or(parts) => {
                let all: Option<Vec<String>> = parts.iter().map(Split::necessary).collect();
                all.filter(|v| !v.is_empty())
                    .map(|v| format!("({})", v.join(" OR ")))
            }
        }
    }

    /// Turns the split into its evaluator: SQL parts become indexes of
    /// boolean columns (appended to `conds`), regex fields indexes of fields
    /// (appended to `fields` when not already read).
    fn plan(
        self,
        conds: &mut Vec<String>,
        fields: &mut Vec<Column>,
        source: &PostgresSource,
    ) -> Result<Residual, SourceError> {
        Ok(match self {
            Split::Sql(s) => {
                conds.push(s);
                Residual::Cond(conds.len() - 1)
            }
            Split::Regex { field, negated, re } => {
                let idx = match fields.iter().position(|c| c.name == field) {
                    Some(i) => i,
                    None => {
                        fields.push(source.column(&field)?.clone());
                        fields.len() - 1
                    }
                };
                Residual::Regex { idx, negated, re }
            }
            Split::And(parts) => Residual::And(
                parts
                    .into_iter()
                    .map(|p| p.plan(conds, fields, source))
                    .collect::<Result<_, _>>()?,
            ),
            Split::Or(parts) => Residual::Or(
                parts
                    .into_iter()
                    .map(|p| p.plan(conds, fields, source))
                    .collect::<Result<_, _>>()?,
            ),
            Split::Not(inner) => Residual::Not(Box::new(inner.plan(conds, fields, source)?)),
        })
    }
}

/// The exact predicate, evaluated here on each streamed row.
enum Residual {
    /// The server's value of a regex-free subtree (a boolean column).
    Cond(usize),
    /// A regex on the field read into column `idx`.
    Regex {
        idx: usize,
        negated: bool,
        re: Regex,
    },
    And(Vec<Residual>),
    Or(Vec<Residual>),
    Not(Box<Residual>),
}

impl Residual {
    /// Three-valued: `None` is unknown, which does not match.
    fn eval(&self, vals: &[Json], conds: &[Option<bool>]) -> Option<bool> {
        match self {
            Residual::Cond(i) => conds.get(*i).copied().flatten(),
            Residual::Regex { idx, negated, re } => match vals.get(*idx) {
                Some(Json::String(s)) => Some(re.is_match(s) != *negated),
                _ => None,
            },
            Residual::And(parts) => {
                let mut unknown = false;
                for p in parts {
                    match p.eval(vals, conds) {
                        Some(false) => return Some(false),
                        None => unknown = true,
                        Some(true) => {}
                    }
                }
                (!unknown).then_some(true)
            }
            Residual::Or(parts) => {
                let mut unknown = false;
                for p in parts {
                    match p.eval(vals, conds) {
                        Some(true) => return Some(true),
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                (!unknown).then_some(false)
            }
            Residual::Not(inner) => inner.eval(vals, conds).map(|b| !b),
        }
    }
}

fn float(v: f64) -> Json {
    // As rows.rs: JSON has no NaN/∞.
    serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number)
}

/// Reads column `i` of a row as the JSON rows.rs would produce.
fn cell(row: &PgRow, i: usize, ty: PgType) -> Result<Json, SourceError> {
    Ok(match ty {
        PgType::Timestamptz | PgType::Timestamp => match row.try_get::<Option<i64>, _>(i)? {
            None => Json::Null,
            Some(us) => Json::String(format_micros(us).ok_or_else(|| {
                SourceError::Engine(format!(
                    "timestamp {us} µs is outside the representable date range"
                ))
            })?),
        },
        PgType::Text => row
            .try_get::<Option<String>, _>(i)?
            .map_or(Json::Null, Json::String),
        PgType::Integer => row
            .try_get::<Option<i64>, _>(i)?
            .map_or(Json::Null, Json::from),
        PgType::Float4 => row
            .try_get::<Option<f32>, _>(i)?
            .map_or(Json::Null, |v| float(f64::from(v))),
        PgType::Float8 => row.try_get::<Option<f64>, _>(i)?.map_or(Json::Null, float),
        PgType::Boolean => row
            .try_get::<Option<bool>, _>(i)?
            .map_or(Json::Null, Json::Bool),
    })
}

/// Everything a running query owns, so its stream can be `'static`.
struct Job {
    pool: PgPool,
    sql: String,
    params: Vec<Param>,
    /// The columns read, in SELECT order (boolean condition columns follow).
    fields: Vec<Column>,
    conds: usize,
    /// Output key → index into `fields`, in output order.
    output: Vec<(String, usize)>,
    residual: Option<Residual>,
    /// Rows to skip and return here (the server already applied them when
    /// there is no residual).
    skip: u64,
    limit: u64,
}

/// Closes the connection instead of returning it to the pool when the query
/// is abandoned midway: a returned connection would first have to drain the
/// rest of the result, a closed one makes the server stop.
struct ConnGuard(Option<sqlx::pool::PoolConnection<Postgres>>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            c.close_on_drop();
        }
    }
}

impl Job {
    async fn run(self, tx: mpsc::Sender<Result<Row, SourceError>>) -> Result<(), SourceError> {
        let mut guard = ConnGuard(Some(self.pool.acquire().await?));
        let Some(conn) = guard.0.as_mut() else {
            return Ok(());
        };
        let mut query = sqlx::query(&self.sql);
        for p in self.params.iter().cloned() {
            query = bind(query, p);
        }
        let mut rows = query.fetch(&mut **conn);
        let (mut skip_left, mut remaining) = (self.skip, self.limit);
        let mut drained = true;
        while let Some(row) = rows.next().await {
            let row = row?;
            if remaining == 0 {
                // Only reachable with a residual: the server has more rows.
                drained = false;
                break;
            }
            let mut vals = Vec::with_capacity(self.fields.len());
            for (i, c) in self.fields.iter().enumerate() {
                vals.push(cell(&row, i, c.ty)?);
            }
            if let Some(residual) = &self.residual {
                let base = self.fields.len();
                let conds = (0..self.conds)
                    .map(|k| row.try_get::<Option<bool>, _>(base + k))
                    .collect::<Result<Vec<_>, _>>()?;
                if residual.eval(&vals, &conds) != Some(true) {
                    continue;
                }
            }
            if skip_left > 0 {
                skip_left -= 1;
                continue;
            }
            let out = Row::from_pairs(
                self.output
                    .iter()
                    .map(|(name, i)| (name.as_str(), &vals[*i])),
            );
            remaining -= 1;
            if tx.send(Ok(out)).await.is_err() {
                return Ok(()); // consumer gone; the guard closes the connection
            }
            if remaining == 0 && self.residual.is_some() {
                drained = false;
                break;
            }
        }
        drop(rows);
        if drained {
            // Finished normally: the connection goes back to the pool.
            drop(guard.0.take());
        }
        Ok(())
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

fn row_stream(
    rx: mpsc::Receiver<Result<Row, SourceError>>,
    task: tokio::task::JoinHandle<()>,
) -> RowStream {
    futures::stream::unfold(
        (rx, TaskGuard(Some(task))),
        |(mut rx, mut guard)| async move {
            match rx.recv().await {
                Some(item) => Some((item, (rx, guard))),
                None => {
                    // Join, so a panic surfaces instead of a silently short result.
                    let handle = guard.0.take()?;
                    match handle.await {
                        Err(e) if e.is_panic() => Some((
                            Err(SourceError::Engine(format!("query task panicked: {e}"))),
                            (rx, guard),
                        )),
                        _ => None,
                    }
                }
            }
        },
    )
    .boxed()
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
        let time = self.column(&self.schema.time_column)?.clone();

        let mut tr = Translator {
            source: self,
            params: Params(Vec::new()),
        };
        let range = format!(
            "{} AND {}",
            time_compare(&time, CompareOp::Ge, q.from_us, &mut tr.params)?,
            time_compare(&time, CompareOp::Lt, q.to_us, &mut tr.params)?
        );
        let mut fields: Vec<Column> = output
            .iter()
            .map(|n| self.column(n).cloned())
            .collect::<Result<_, _>>()?;
        if !output.contains(&time.name) {
            fields.push(time.clone());
        }
        let mut conds: Vec<String> = Vec::new();
        let (filter, residual) = if has_regex(&q.predicate) {
            let split = tr.split(&q.predicate)?;
            let necessary = split.necessary().unwrap_or_else(|| "TRUE".into());
            (necessary, Some(split.plan(&mut conds, &mut fields, self)?))
        } else {
            (tr.translate(&q.predicate)?, None)
        };
        let (tx, rx) = mpsc::channel(CHANNEL_ROWS);
        if q.limit == 0 || q.from_us >= q.to_us {
            // Nothing can match; the predicate was still checked above.
            drop(tx);
            return Ok(row_stream(rx, tokio::spawn(async {})));
        }

        let asc = q.order == Order::Asc;
        let mut order = vec![format!(
            "{} {} NULLS LAST",
            time.quoted,
            if asc { "ASC" } else { "DESC" }
        )];
        for name in output.iter().filter(|n| **n != time.name) {
            let c = self.column(name)?;
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
        let task = tokio::spawn(async move {
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

    fn col(name: &str, ty: PgType) -> Column {
        Column {
            name: name.into(),
            quoted: quote(name),
            ty,
        }
    }

    #[test]
    fn identifiers_are_quoted_with_doubled_quotes() {
        assert_eq!(quote("ts"), "\"ts\"");
        assert_eq!(quote("a\"b; --"), "\"a\"\"b; --\"");
    }

    #[test]
    fn out_of_range_times_become_infinity_comparisons() {
        let c = col("ts", PgType::Timestamptz);
        let mut p = Params(Vec::new());
        assert_eq!(
            time_compare(&c, CompareOp::Ge, i64::MIN, &mut p).unwrap(),
            "(\"ts\" >= '-infinity'::timestamptz)"
        );
        assert_eq!(
            time_compare(&c, CompareOp::Lt, i64::MAX, &mut p).unwrap(),
            "(\"ts\" >= '-infinity'::timestamptz)"
        );
        assert_eq!(
            time_compare(&c, CompareOp::Eq, i64::MAX, &mut p).unwrap(),
            "(\"ts\" > 'infinity'::timestamptz)"
        );
        assert!(p.0.is_empty());
        assert_eq!(
            time_compare(&c, CompareOp::Lt, 0, &mut p).unwrap(),
            "(\"ts\" < $1)"
        );
    }

    #[test]
    fn residual_logic_is_three_valued() {
        let t = Residual::Cond(0);
        let u = Residual::Cond(1);
        let f = Residual::Cond(2);
        let conds = [Some(true), None, Some(false)];
        let and = Residual::And(vec![Residual::Cond(0), Residual::Cond(1)]);
        assert_eq!(and.eval(&[], &conds), None);
        let or = Residual::Or(vec![u, t]);
        assert_eq!(or.eval(&[], &conds), Some(true));
        assert_eq!(Residual::Not(Box::new(f)).eval(&[], &conds), Some(true));
        let re = Residual::Regex {
            idx: 0,
            negated: true,
            re: Regex::new(r"^\d+$").unwrap(),
        };
        assert_eq!(re.eval(&[Json::Null], &conds), None);
        assert_eq!(re.eval(&[Json::String("12".into())], &conds), Some(false));
    }
}
