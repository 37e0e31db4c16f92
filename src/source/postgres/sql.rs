//! SQL text for a filter: identifiers from the catalog, every literal and
//! time bound a `$n` parameter (see the module doc of `postgres`).

use chrono::{DateTime, Utc};
use sqlx::Postgres;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;

use super::catalog::{Column, Columns, PgType};
use super::residual::{Split, has_regex};
use crate::filter::{CompareOp, FieldType, Predicate, RegexCache, Value};
use crate::source::SourceError;

/// The protocol's limit on bind parameters per statement.
const MAX_PARAMS: usize = 65_535;
/// The earliest instant Postgres can store (4714-11-24 00:00 BC, UTC), in µs.
const PG_MIN_US: i64 = -210_866_803_200_000_000;

/// A literal on its way to the server.
#[derive(Debug, Clone)]
pub(super) enum Param {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Tz(DateTime<Utc>),
    Naive(chrono::NaiveDateTime),
}

pub(super) fn bind(
    q: Query<'_, Postgres, PgArguments>,
    p: Param,
) -> Query<'_, Postgres, PgArguments> {
    match p {
        Param::Text(v) => q.bind(v),
        Param::Int(v) => q.bind(v),
        Param::Float(v) => q.bind(v),
        Param::Bool(v) => q.bind(v),
        Param::Tz(v) => q.bind(v),
        Param::Naive(v) => q.bind(v),
    }
}

/// The `$n` parameters of one statement, collected while its text is built.
pub(super) struct Params(pub(super) Vec<Param>);

impl Params {
    pub(super) fn add(&mut self, p: Param) -> Result<String, SourceError> {
        if self.0.len() >= MAX_PARAMS {
            return Err(SourceError::Internal(format!(
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
/// like the clamped comparisons in `parquet/translate.rs`.
pub(super) fn time_compare(
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
pub(super) struct Translator<'a> {
    pub(super) columns: &'a Columns,
    pub(super) params: Params,
    /// Where compiled regexes come from (the source's, shared by the app).
    pub(super) regexes: &'a RegexCache,
}

impl Translator<'_> {
    fn literal(&mut self, c: &Column, v: &Value) -> Result<String, SourceError> {
        let ft = c.ty.field_type();
        let p = match (ft, v) {
            (FieldType::String, Value::String(s)) => Param::Text(s.clone()),
            (FieldType::Integer, Value::Integer(i)) => Param::Int(*i),
            (FieldType::Float, Value::Float(f)) => Param::Float(*f),
            // Lenient, as in `parquet/translate.rs`: the same number.
            (FieldType::Float, Value::Integer(i)) => Param::Float(*i as f64),
            (FieldType::Boolean, Value::Boolean(b)) => Param::Bool(*b),
            _ => return Err(mismatch(&c.name, ft, v)),
        };
        self.params.add(p)
    }

    fn compare(&mut self, field: &str, op: CompareOp, v: &Value) -> Result<String, SourceError> {
        let c = self.columns.get(field)?.clone();
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
    pub(super) fn translate(&mut self, p: &Predicate) -> Result<String, SourceError> {
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
                let c = self.columns.get(field)?.clone();
                if values.is_empty() {
                    return Ok(if *negated { "TRUE" } else { "FALSE" }.into());
                }
                if c.ty.field_type() == FieldType::Time {
                    // One comparison per member, as `parquet/translate.rs` does.
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
                let c = self.columns.get(field)?;
                string_field(c, "contains")?;
                let q = c.quoted.clone();
                let n = self.params.add(Param::Text(needle.clone()))?;
                format!("(strpos({q}, {n}) > 0)")
            }
            Predicate::Regex { field, .. } => {
                // Callers route regexes through `split`; reaching here is a bug.
                return Err(SourceError::Internal(format!(
                    "internal: regex on {field:?} reached the SQL translation"
                )));
            }
        })
    }

    /// Splits a predicate containing regexes: regex-free subtrees become SQL
    /// (evaluated by the server into boolean columns), regexes run here.
    pub(super) fn split(&mut self, p: &Predicate) -> Result<Split, SourceError> {
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
                let c = self.columns.get(field)?;
                string_field(c, "a regex match")?;
                // Matched in Rust like the Parquet source matches `~`.
                let re = self
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

#[cfg(test)]
mod tests {
    use super::super::catalog::quote;
    use super::*;

    fn col(name: &str, ty: PgType) -> Column {
        Column {
            name: name.into(),
            quoted: quote(name),
            ty,
        }
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
}
