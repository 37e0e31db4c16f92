//! AST → typed `Predicate`, checked against a source's `Schema`: every field
//! must exist, every operator must suit the field's type, and every literal is
//! converted to the field's `Value` (times from RFC 3339, integers widened for
//! float fields, regexes compiled once under the size limit). Errors point at
//! the token to blame: the field name, the operator or the literal.

use chrono::{DateTime, Datelike};

use crate::filter::Limits;
use crate::filter::ast::{Condition, Expr, Literal, Operand, Operator, Spanned};
use crate::filter::error::{FilterError, FilterErrorKind};
use crate::filter::predicate::{CompareOp, Predicate, Value};
use crate::filter::schema::{FieldType, Schema};

/// Type `expr` against `schema`. The result is not yet canonical (operand
/// order and `in` lists are as written); see `canonical::canonicalize`.
pub fn validate(expr: &Expr, schema: &Schema, limits: &Limits) -> Result<Predicate, FilterError> {
    match expr {
        Expr::And(operands) => Ok(Predicate::And(
            operands
                .iter()
                .map(|e| validate(e, schema, limits))
                .collect::<Result<_, _>>()?,
        )),
        Expr::Or(operands) => Ok(Predicate::Or(
            operands
                .iter()
                .map(|e| validate(e, schema, limits))
                .collect::<Result<_, _>>()?,
        )),
        Expr::Not { expr, .. } => Ok(Predicate::Not(Box::new(validate(expr, schema, limits)?))),
        Expr::Condition(c) => condition(c, schema, limits),
    }
}

fn condition(c: &Condition, schema: &Schema, limits: &Limits) -> Result<Predicate, FilterError> {
    let name = &c.field.node;
    let Some(ty) = schema.field_type(name) else {
        return Err(unknown_field(&c.field, schema));
    };
    check_operator(c, ty)?;
    let field = name.clone();
    match (c.op.node, &c.operand) {
        (Operator::Compare(op), Operand::Single(lit)) => Ok(Predicate::Compare {
            value: typed_value(lit, name, ty)?,
            field,
            op,
        }),
        (Operator::In | Operator::NotIn, Operand::List(items)) => Ok(Predicate::In {
            values: items
                .iter()
                .map(|lit| typed_value(lit, name, ty))
                .collect::<Result<_, _>>()?,
            negated: c.op.node == Operator::NotIn,
            field,
        }),
        (Operator::Matches | Operator::NotMatches, Operand::Single(lit)) => {
            let pattern = string_operand(lit, c.op.node, "a regex in double quotes")?;
            compile_regex(pattern, lit, limits)?;
            Ok(Predicate::Regex {
                field,
                negated: c.op.node == Operator::NotMatches,
                pattern: pattern.to_string(),
            })
        }
        (Operator::Contains, Operand::Single(lit)) => Ok(Predicate::Contains {
            field,
            needle: string_operand(lit, c.op.node, "a string in double quotes")?.to_string(),
        }),
        // Only reachable for a hand-built AST; the parser pairs operators and
        // operands correctly.
        _ => Err(FilterError::new(
            FilterErrorKind::Syntax,
            c.op.pos,
            format!(
                "operator `{}` does not take this operand",
                c.op.node.as_str()
            ),
        )),
    }
}

fn unknown_field(field: &Spanned<String>, schema: &Schema) -> FilterError {
    let name = &field.node;
    let suggestion = schema
        .field_names()
        .map(|known| (edit_distance(name, known), known))
        .filter(|(d, known)| *d <= 2 && *d < name.chars().count().max(known.chars().count()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, known)| known);
    let message = match suggestion {
        Some(s) => format!("unknown field `{name}` (did you mean `{s}`?)"),
        None => format!("unknown field `{name}`"),
    };
    let err = FilterError::new(FilterErrorKind::UnknownField, field.pos, message);
    let names: Vec<String> = schema.field_names().map(|n| format!("`{n}`")).collect();
    match names.len() {
        0 => err.with_expected("no field at all (this source has none)"),
        1 => err.with_expected(format!("the field {}", names.join(""))),
        _ => err.with_expected(format!("one of the fields {}", names.join(", "))),
    }
}

/// Levenshtein distance over characters; names are short, so the quadratic
/// table is fine.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur.clear();
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev.last().copied().unwrap_or(0)
}

/// The operators each type accepts, in words for the error message.
fn allowed_operators(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String => "=, !=, <, <=, >, >=, `in`, `not in`, `~`, `!~` or `contains`",
        FieldType::Time | FieldType::Integer | FieldType::Float => {
            "=, !=, <, <=, >, >=, `in` or `not in`"
        }
        FieldType::Boolean => "=, !=, `in` or `not in`",
    }
}

fn check_operator(c: &Condition, ty: FieldType) -> Result<(), FilterError> {
    let ok = match c.op.node {
        Operator::In | Operator::NotIn | Operator::Compare(CompareOp::Eq | CompareOp::Ne) => true,
        Operator::Compare(_) => ty != FieldType::Boolean,
        Operator::Matches | Operator::NotMatches | Operator::Contains => ty == FieldType::String,
    };
    if ok {
        return Ok(());
    }
    Err(FilterError::new(
        FilterErrorKind::TypeMismatch,
        c.op.pos,
        format!(
            "operator `{}` cannot be used with {} field `{}`",
            c.op.node.as_str(),
            ty,
            c.field.node
        ),
    )
    .with_expected(allowed_operators(ty)))
}

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

fn typed_value(lit: &Spanned<Literal>, field: &str, ty: FieldType) -> Result<Value, FilterError> {
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

fn string_operand<'a>(
    lit: &'a Spanned<Literal>,
    op: Operator,
    expected: &str,
) -> Result<&'a str, FilterError> {
    match &lit.node {
        Literal::String(s) => Ok(s),
        other => Err(FilterError::new(
            FilterErrorKind::TypeMismatch,
            lit.pos,
            format!(
                "`{}` needs a string, but the value is {}",
                op.as_str(),
                other.describe()
            ),
        )
        .with_expected(expected)),
    }
}

/// Compile once here so that a bad or oversized regex is the user's error at
/// submit time, not a source's failure later.
fn compile_regex(
    pattern: &str,
    lit: &Spanned<Literal>,
    limits: &Limits,
) -> Result<(), FilterError> {
    super::regexes::within(pattern, limits.regex_size_limit)
        .map(drop)
        .map_err(|e| {
            let reason = match &e {
                regex::Error::CompiledTooBig(limit) => {
                    format!("it compiles to more than the limit of {limit} bytes")
                }
                // Syntax errors are multi-line drawings; the line starting
                // with "error:" is the readable part.
                other => {
                    let text = other.to_string();
                    text.lines()
                        .find_map(|l| l.trim().strip_prefix("error:"))
                        .or_else(|| text.lines().find(|l| !l.trim().is_empty()))
                        .unwrap_or("unknown error")
                        .trim()
                        .to_string()
                }
            };
            FilterError::new(
                FilterErrorKind::InvalidRegex,
                lit.pos,
                format!("invalid regex: {reason}"),
            )
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::filter::parser::parse;

    pub(crate) fn test_schema() -> Schema {
        Schema {
            fields: vec![
                ("ts".into(), FieldType::Time),
                ("service".into(), FieldType::String),
                ("endpoint".into(), FieldType::String),
                ("status".into(), FieldType::Integer),
                ("latency_ms".into(), FieldType::Float),
                ("cached".into(), FieldType::Boolean),
            ],
            time_column: "ts".into(),
        }
    }

    fn v(text: &str) -> Result<Predicate, FilterError> {
        let limits = Limits::default();
        validate(&parse(text, &limits)?, &test_schema(), &limits)
    }

    fn ok(text: &str) -> Predicate {
        match v(text) {
            Ok(p) => p,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    fn kind(text: &str) -> FilterErrorKind {
        match v(text) {
            Ok(p) => panic!("{text:?} validated: {p:?}"),
            Err(e) => e.kind,
        }
    }

    fn cmp(field: &str, op: CompareOp, value: Value) -> Predicate {
        Predicate::Compare {
            field: field.into(),
            op,
            value,
        }
    }

    const OPS: [(&str, CompareOp); 6] = [
        ("=", CompareOp::Eq),
        ("!=", CompareOp::Ne),
        ("<", CompareOp::Lt),
        ("<=", CompareOp::Le),
        (">", CompareOp::Gt),
        (">=", CompareOp::Ge),
    ];

    #[test]
    fn time_field() {
        for (s, op) in OPS {
            assert_eq!(
                ok(&format!("ts {s} \"2026-11-01T00:00:00Z\"")),
                cmp("ts", op, Value::Time(1_793_491_200_000_000))
            );
        }
        assert_eq!(
            ok("ts = \"2026-11-01T02:00:00.5+02:00\""),
            cmp("ts", CompareOp::Eq, Value::Time(1_793_491_200_500_000))
        );
        assert_eq!(
            ok("ts not in (\"1970-01-01T00:00:00Z\")"),
            Predicate::In {
                field: "ts".into(),
                negated: true,
                values: vec![Value::Time(0)]
            }
        );
        assert_eq!(kind("ts = \"yesterday\""), FilterErrorKind::InvalidLiteral);
        assert_eq!(
            kind("ts = \"0000-01-01T00:00:00+01:00\""),
            FilterErrorKind::InvalidLiteral
        );
        assert_eq!(
            kind("ts = \"9999-12-31T23:59:59-01:00\""),
            FilterErrorKind::InvalidLiteral
        );
        assert_eq!(
            ok("ts = \"0000-01-01T00:00:00Z\""),
            cmp("ts", CompareOp::Eq, Value::Time(-62_167_219_200_000_000))
        );
        assert_eq!(kind("ts = \"2026-11-01\""), FilterErrorKind::InvalidLiteral);
        assert_eq!(kind("ts = 5"), FilterErrorKind::TypeMismatch);
        assert_eq!(kind("ts ~ \"2026\""), FilterErrorKind::TypeMismatch);
        assert_eq!(kind("ts contains \"2026\""), FilterErrorKind::TypeMismatch);
    }

    #[test]
    fn string_field() {
        for (s, op) in OPS {
            assert_eq!(
                ok(&format!("service {s} \"a\"")),
                cmp("service", op, Value::String("a".into()))
            );
        }
        assert_eq!(
            ok("service in (\"b\", \"a\")"),
            Predicate::In {
                field: "service".into(),
                negated: false,
                values: vec![Value::String("b".into()), Value::String("a".into())]
            }
        );
        assert_eq!(
            ok("endpoint ~ \"^/api/v[12]/orders\""),
            Predicate::Regex {
                field: "endpoint".into(),
                negated: false,
                pattern: "^/api/v[12]/orders".into()
            }
        );
        assert_eq!(
            ok("endpoint !~ \"x\""),
            Predicate::Regex {
                field: "endpoint".into(),
                negated: true,
                pattern: "x".into()
            }
        );
        assert_eq!(
            ok("endpoint contains \"/v1\""),
            Predicate::Contains {
                field: "endpoint".into(),
                needle: "/v1".into()
            }
        );
        assert_eq!(kind("service = 1"), FilterErrorKind::TypeMismatch);
        assert_eq!(
            kind("service in (\"a\", true)"),
            FilterErrorKind::TypeMismatch
        );
        assert_eq!(kind("service ~ 1"), FilterErrorKind::TypeMismatch);
        assert_eq!(kind("service contains 1.5"), FilterErrorKind::TypeMismatch);
        assert_eq!(kind("service ~ \"(\""), FilterErrorKind::InvalidRegex);
    }

    #[test]
    fn integer_field() {
        for (s, op) in OPS {
            assert_eq!(
                ok(&format!("status {s} -5")),
                cmp("status", op, Value::Integer(-5))
            );
        }
        assert_eq!(
            ok("status in (500, 502)"),
            Predicate::In {
                field: "status".into(),
                negated: false,
                values: vec![Value::Integer(500), Value::Integer(502)]
            }
        );
        assert_eq!(kind("status = 1.5"), FilterErrorKind::TypeMismatch);
        assert_eq!(kind("status = \"500\""), FilterErrorKind::TypeMismatch);
        assert_eq!(kind("status ~ \"5\""), FilterErrorKind::TypeMismatch);
        assert_eq!(kind("status contains \"5\""), FilterErrorKind::TypeMismatch);
    }

    #[test]
    fn float_field() {
        for (s, op) in OPS {
            assert_eq!(
                ok(&format!("latency_ms {s} 2")),
                cmp("latency_ms", op, Value::Float(2.0))
            );
            assert_eq!(
                ok(&format!("latency_ms {s} 2.5e1")),
                cmp("latency_ms", op, Value::Float(25.0))
            );
        }
        assert_eq!(
            ok("latency_ms not in (1, 2.5)"),
            Predicate::In {
                field: "latency_ms".into(),
                negated: true,
                values: vec![Value::Float(1.0), Value::Float(2.5)]
            }
        );
        assert_eq!(kind("latency_ms = true"), FilterErrorKind::TypeMismatch);
        assert_eq!(kind("latency_ms ~ \"1\""), FilterErrorKind::TypeMismatch);
    }

    #[test]
    fn boolean_field() {
        assert_eq!(
            ok("cached = true"),
            cmp("cached", CompareOp::Eq, Value::Boolean(true))
        );
        assert_eq!(
            ok("cached != FALSE"),
            cmp("cached", CompareOp::Ne, Value::Boolean(false))
        );
        assert_eq!(
            ok("cached in (true, false)"),
            Predicate::In {
                field: "cached".into(),
                negated: false,
                values: vec![Value::Boolean(true), Value::Boolean(false)]
            }
        );
        for op in ["<", "<=", ">", ">="] {
            assert_eq!(
                kind(&format!("cached {op} true")),
                FilterErrorKind::TypeMismatch
            );
        }
        assert_eq!(kind("cached = 1"), FilterErrorKind::TypeMismatch);
        assert_eq!(kind("cached contains \"t\""), FilterErrorKind::TypeMismatch);
    }

    #[test]
    fn unknown_fields() {
        let e = v("stauts = 1").err();
        assert_eq!(
            e.as_ref().map(|e| e.kind),
            Some(FilterErrorKind::UnknownField)
        );
        assert!(
            e.as_ref()
                .is_some_and(|e| e.message.contains("did you mean `status`?"))
        );
        let e = v("zzzzzz = 1").err();
        assert!(e.is_some_and(|e| !e.message.contains("did you mean")));
        // Field names are case-sensitive.
        assert_eq!(kind("Status = 1"), FilterErrorKind::UnknownField);
    }

    #[test]
    fn regex_size_limit() {
        let limits = Limits {
            regex_size_limit: 1000,
            ..Limits::default()
        };
        let e = parse("service ~ \"[a-z]{100}\"", &limits)
            .and_then(|ast| validate(&ast, &test_schema(), &limits))
            .err();
        assert_eq!(
            e.as_ref().map(|e| e.kind),
            Some(FilterErrorKind::InvalidRegex)
        );
        assert!(ok("service ~ \"[a-z]{100}\"") != Predicate::And(vec![]));
        // Unicode classes are big: `\w{100}` exceeds even the default 1 MiB.
        assert_eq!(
            kind("service ~ \"\\\\w{100}\""),
            FilterErrorKind::InvalidRegex
        );
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("status", "status"), 0);
        assert_eq!(edit_distance("stauts", "status"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("servce", "service"), 1);
    }
}
