//! Literals converted to the field's `Value`, or the type mismatch that
//! says what the field expects.

use chrono::{DateTime, Datelike};

use crate::filter::ast::{Literal, Spanned};
use crate::filter::error::{FilterError, FilterErrorKind};
use crate::filter::predicate::Value;
use crate::filter::schema::FieldType;

fn type_mismatch(
    lit: &Spanned<Literal>,
    field: &str,
    ty: FieldType,
    expected: &str,
) -> FilterError {
    FilterError::new(
        FilterErrorKind::TypeMismatch,
        lit.pos,
        format!(
            "`{field}` is {} field, but the value is {}",
            with_article(ty),
            lit.node.describe()
        ),
    )
    .with_expected(expected)
}

fn with_article(ty: FieldType) -> String {
    match ty {
        FieldType::Integer => format!("an {ty}"),
        _ => format!("a {ty}"),
    }
}

pub(super) fn typed_value(
    lit: &Spanned<Literal>,
    field: &str,
    ty: FieldType,
) -> Result<Value, FilterError> {
    match (ty, &lit.node) {
        (FieldType::String, Literal::String(s)) => Ok(Value::String(s.clone())),
        (FieldType::String, _) => Err(type_mismatch(lit, field, ty, "a string in double quotes")),
        (FieldType::Integer, Literal::Integer(i)) => Ok(Value::Integer(*i)),
        (FieldType::Integer, _) => Err(type_mismatch(lit, field, ty, "an integer")),
        (FieldType::Float, Literal::Integer(i)) => Ok(Value::Float(*i as f64)),
        (FieldType::Float, Literal::Float(f)) => Ok(Value::Float(*f)),
        (FieldType::Float, _) => Err(type_mismatch(lit, field, ty, "a number")),
        (FieldType::Boolean, Literal::Boolean(b)) => Ok(Value::Boolean(*b)),
        (FieldType::Boolean, _) => Err(type_mismatch(lit, field, ty, "`true` or `false`")),
        (FieldType::Time, Literal::String(s)) => match DateTime::parse_from_rfc3339(s) {
            // The canonical form prints UTC; a UTC year outside 0000..=9999
            // (e.g. "0000-01-01T00:00:00+01:00") has no RFC 3339 spelling.
            Ok(t) if !(0..=9999).contains(&t.naive_utc().year()) => Err(FilterError::new(
                FilterErrorKind::InvalidLiteral,
                lit.pos,
                format!(
                    "`{}` is outside the years 0000 to 9999 in UTC",
                    s.escape_default()
                ),
            )),
            Ok(t) => Ok(Value::Time(t.timestamp_micros())),
            Err(e) => Err(FilterError::new(
                FilterErrorKind::InvalidLiteral,
                lit.pos,
                format!("`{}` is not an RFC 3339 time ({e})", s.escape_default()),
            )
            .with_expected(TIME_EXAMPLE)),
        },
        (FieldType::Time, _) => Err(type_mismatch(lit, field, ty, TIME_EXAMPLE)),
    }
}

const TIME_EXAMPLE: &str = "an RFC 3339 time string such as \"2026-11-01T00:00:00Z\"";
