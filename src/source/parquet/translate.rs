//! Translates the validated filter into a DataFusion expression over the
//! Parquet columns. Literals keep the filter's types and let DataFusion's
//! coercion widen narrower columns (an Int8 column against an i64 literal
//! stays correct even for out-of-range literals); timestamps are converted
//! to the column's own unit so comparisons stay exact and prunable.
//!
//! Null semantics are DataFusion's (SQL three-valued logic): a comparison,
//! `in`, regex or `contains` on a null field is unknown, so the row does not
//! match, and `not` of an unknown is still unknown, so it does not match either.

use datafusion::arrow::datatypes::{DataType, Schema as ArrowSchema, TimeUnit};
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::expr::Like;
use datafusion::logical_expr::{Expr, Operator, binary_expr, lit, not};

use super::regex_match::regex_match;
use crate::filter::{CompareOp, FieldType, Predicate, RegexCache, Value};
use crate::source::SourceError;

/// The escape character of the LIKE patterns we build; DataFusion only
/// supports the backslash.
const LIKE_ESCAPE: char = '\\';

/// Maps an Arrow column type onto a filter field type; `None` = not offered.
pub(crate) fn field_type(dt: &DataType) -> Option<FieldType> {
    match dt {
        DataType::Timestamp(_, _) => Some(FieldType::Time),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(FieldType::String),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => Some(FieldType::Integer),
        DataType::Float32 | DataType::Float64 => Some(FieldType::Float),
        DataType::Boolean => Some(FieldType::Boolean),
        _ => None,
    }
}

/// A column reference by exact name: `col()` would parse the name as an SQL
/// identifier (lowercasing unquoted names, splitting on dots).
pub(crate) fn column(name: &str) -> Expr {
    Expr::Column(Column::from_name(name))
}

/// `c >= bound` where `bound` may lie outside i64: clamps to a comparison
/// that is constant for non-null values but still unknown for nulls.
fn ge(c: Expr, bound: i128, unit: TimeUnit, tz: &Option<std::sync::Arc<str>>) -> Expr {
    if bound > i128::from(i64::MAX) {
        c.gt(ts_lit(i64::MAX, unit, tz))
    } else if bound <= i128::from(i64::MIN) {
        c.gt_eq(ts_lit(i64::MIN, unit, tz))
    } else {
        c.gt_eq(ts_lit(bound as i64, unit, tz))
    }
}

/// `c < bound`, clamped like [`ge`].
fn lt(c: Expr, bound: i128, unit: TimeUnit, tz: &Option<std::sync::Arc<str>>) -> Expr {
    if bound > i128::from(i64::MAX) {
        c.lt_eq(ts_lit(i64::MAX, unit, tz))
    } else if bound <= i128::from(i64::MIN) {
        c.lt(ts_lit(i64::MIN, unit, tz))
    } else {
        c.lt(ts_lit(bound as i64, unit, tz))
    }
}

fn ts_lit(v: i64, unit: TimeUnit, tz: &Option<std::sync::Arc<str>>) -> Expr {
    let v = Some(v);
    let tz = tz.clone();
    Expr::Literal(
        match unit {
            TimeUnit::Second => ScalarValue::TimestampSecond(v, tz),
            TimeUnit::Millisecond => ScalarValue::TimestampMillisecond(v, tz),
            TimeUnit::Microsecond => ScalarValue::TimestampMicrosecond(v, tz),
            TimeUnit::Nanosecond => ScalarValue::TimestampNanosecond(v, tz),
        },
        None,
    )
}

/// The smallest raw column value whose microsecond value (floored, for
/// nanoseconds) is `>= us`. Every time comparison reduces to `>=`/`<` on such
/// bounds, which keeps it exact in any unit.
fn first_at_or_after(us: i128, unit: TimeUnit) -> i128 {
    let ceil_div = |a: i128, m: i128| a.div_euclid(m) + i128::from(a.rem_euclid(m) != 0);
    match unit {
        TimeUnit::Second => ceil_div(us, 1_000_000),
        TimeUnit::Millisecond => ceil_div(us, 1_000),
        TimeUnit::Microsecond => us,
        TimeUnit::Nanosecond => us * 1_000,
    }
}

/// Compares a timestamp column with a µs instant, in the column's own unit.
pub(crate) fn time_compare(name: &str, op: CompareOp, us: i64, dt: &DataType) -> Expr {
    let DataType::Timestamp(unit, tz) = dt else {
        // Callers check the type; a non-timestamp can only be a bug upstream,
        // and "matches nothing" is the safe answer.
        return lit(false);
    };
    let c = column(name);
    let lo = first_at_or_after(i128::from(us), *unit);
    let hi = first_at_or_after(i128::from(us) + 1, *unit);
    let single = hi == lo + 1 && i64::try_from(lo).is_ok();
    match op {
        CompareOp::Ge => ge(c, lo, *unit, tz),
        CompareOp::Gt => ge(c, hi, *unit, tz),
        CompareOp::Lt => lt(c, lo, *unit, tz),
        CompareOp::Le => lt(c, hi, *unit, tz),
        CompareOp::Eq if single => c.eq(ts_lit(lo as i64, *unit, tz)),
        CompareOp::Ne if single => c.not_eq(ts_lit(lo as i64, *unit, tz)),
        CompareOp::Eq => ge(c.clone(), lo, *unit, tz).and(lt(c, hi, *unit, tz)),
        CompareOp::Ne => lt(c.clone(), lo, *unit, tz).or(ge(c, hi, *unit, tz)),
    }
}

fn operator(op: CompareOp) -> Operator {
    match op {
        CompareOp::Eq => Operator::Eq,
        CompareOp::Ne => Operator::NotEq,
        CompareOp::Lt => Operator::Lt,
        CompareOp::Le => Operator::LtEq,
        CompareOp::Gt => Operator::Gt,
        CompareOp::Ge => Operator::GtEq,
    }
}

/// Escapes `%`, `_` and the escape character so `needle` matches literally.
pub(crate) fn like_contains_pattern(needle: &str) -> String {
    let mut p = String::with_capacity(needle.len() + 2);
    p.push('%');
    for ch in needle.chars() {
        if matches!(ch, '%' | '_') || ch == LIKE_ESCAPE {
            p.push(LIKE_ESCAPE);
        }
        p.push(ch);
    }
    p.push('%');
    p
}

fn lookup<'a>(
    arrow: &'a ArrowSchema,
    field: &str,
) -> Result<(&'a DataType, FieldType), SourceError> {
    arrow
        .field_with_name(field)
        .ok()
        .and_then(|f| field_type(f.data_type()).map(|t| (f.data_type(), t)))
        .ok_or_else(|| SourceError::UnknownField {
            field: field.to_owned(),
            available: arrow
                .fields()
                .iter()
                .filter(|f| field_type(f.data_type()).is_some())
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

fn mismatch(field: &str, ft: FieldType, v: &Value) -> SourceError {
    SourceError::BadPredicate {
        field: field.to_owned(),
        detail: format!("a {ft} field cannot be compared with {v:?}"),
    }
}

/// The literal for a non-time comparison; the filter's own type, see module docs.
fn literal(field: &str, ft: FieldType, v: &Value) -> Result<Expr, SourceError> {
    match (ft, v) {
        (FieldType::String, Value::String(s)) => Ok(lit(s.as_str())),
        (FieldType::Integer, Value::Integer(i)) => Ok(lit(*i)),
        (FieldType::Float, Value::Float(f)) => Ok(lit(*f)),
        // Lenient: an integer literal against a float field means the same number.
        (FieldType::Float, Value::Integer(i)) => Ok(lit(*i as f64)),
        (FieldType::Boolean, Value::Boolean(b)) => Ok(lit(*b)),
        _ => Err(mismatch(field, ft, v)),
    }
}

fn compare(
    field: &str,
    op: CompareOp,
    v: &Value,
    arrow: &ArrowSchema,
) -> Result<Expr, SourceError> {
    let (dt, ft) = lookup(arrow, field)?;
    match (ft, v) {
        (FieldType::Time, Value::Time(us)) => Ok(time_compare(field, op, *us, dt)),
        (FieldType::Time, _) => Err(mismatch(field, ft, v)),
        _ => Ok(binary_expr(
            column(field),
            operator(op),
            literal(field, ft, v)?,
        )),
    }
}

fn string_field(field: &str, arrow: &ArrowSchema, what: &str) -> Result<(), SourceError> {
    match lookup(arrow, field)? {
        (_, FieldType::String) => Ok(()),
        (_, ft) => Err(SourceError::BadPredicate {
            field: field.to_owned(),
            detail: format!("{what} needs a string field, this one is {ft}"),
        }),
    }
}

/// Translates `p` into an expression over the columns of `arrow`, taking
/// compiled regexes from `regexes`.
pub(crate) fn translate(
    p: &Predicate,
    arrow: &ArrowSchema,
    regexes: &RegexCache,
) -> Result<Expr, SourceError> {
    Ok(match p {
        Predicate::And(ps) => {
            let mut it = ps.iter();
            match it.next() {
                None => lit(true),
                Some(first) => it.try_fold(translate(first, arrow, regexes)?, |acc, p| {
                    Ok::<_, SourceError>(acc.and(translate(p, arrow, regexes)?))
                })?,
            }
        }
        Predicate::Or(ps) => {
            let mut it = ps.iter();
            match it.next() {
                // An empty disjunction is false, the neutral element of `or`.
                None => lit(false),
                Some(first) => it.try_fold(translate(first, arrow, regexes)?, |acc, p| {
                    Ok::<_, SourceError>(acc.or(translate(p, arrow, regexes)?))
                })?,
            }
        }
        Predicate::Not(inner) => not(translate(inner, arrow, regexes)?),
        Predicate::Compare { field, op, value } => compare(field, *op, value, arrow)?,
        Predicate::In {
            field,
            negated,
            values,
        } => {
            let (_, ft) = lookup(arrow, field)?;
            if ft == FieldType::Time {
                // Unit conversion makes each member a range test, so `in` becomes
                // an `or` of equalities (and `not in` an `and` of inequalities).
                let op = if *negated {
                    CompareOp::Ne
                } else {
                    CompareOp::Eq
                };
                let parts = values
                    .iter()
                    .map(|v| compare(field, op, v, arrow))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut it = parts.into_iter();
                match it.next() {
                    None => lit(*negated),
                    Some(first) if *negated => it.fold(first, Expr::and),
                    Some(first) => it.fold(first, Expr::or),
                }
            } else {
                let list = values
                    .iter()
                    .map(|v| literal(field, ft, v))
                    .collect::<Result<Vec<_>, _>>()?;
                column(field).in_list(list, *negated)
            }
        }
        Predicate::Regex {
            field,
            negated,
            pattern,
        } => {
            string_field(field, arrow, "a regex match")?;
            let regex = regexes
                .any(pattern)
                .map_err(|e| SourceError::BadPredicate {
                    field: field.clone(),
                    detail: format!("the regex does not compile: {e}"),
                })?;
            let matched = regex_match(column(field), regex);
            // `not` of a null (unknown) match stays unknown, as with `!~`.
            if *negated { not(matched) } else { matched }
        }
        Predicate::Contains { field, needle } => {
            string_field(field, arrow, "contains")?;
            Expr::Like(Like::new(
                false,
                Box::new(column(field)),
                Box::new(lit(like_contains_pattern(needle))),
                Some(LIKE_ESCAPE),
                false,
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_pattern_escapes_wildcards_and_escape() {
        assert_eq!(like_contains_pattern(r"5%_a\b"), r"%5\%\_a\\b%");
        assert_eq!(like_contains_pattern(""), "%%");
    }

    #[test]
    fn time_bounds_in_coarse_and_fine_units() {
        assert_eq!(first_at_or_after(1_500_000, TimeUnit::Second), 2);
        assert_eq!(first_at_or_after(-1_500_000, TimeUnit::Second), -1);
        assert_eq!(first_at_or_after(2_000, TimeUnit::Millisecond), 2);
        assert_eq!(first_at_or_after(7, TimeUnit::Nanosecond), 7_000);
    }
}
