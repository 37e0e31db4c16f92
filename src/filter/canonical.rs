//! One spelling per meaning. `canonicalize` rewrites a typed `Predicate` into
//! a normal form (flat, sorted, deduplicated `and`/`or`; no double negation;
//! sorted, deduplicated `in` lists; `-0.0` as `0.0`) and `print` writes it
//! back in the filter language. Fingerprints hash the printed canonical text,
//! so filters that differ only in order, spacing, case or redundant syntax
//! share cached results.

use std::cmp::Ordering;
use std::fmt::{self, Write as _};

use crate::filter::ast::compare_op_str;
use crate::filter::predicate::{CompareOp, Predicate, Value};

/// Rewrite `p` into canonical form. Idempotent.
///
/// Operands of `and`/`or` are sorted by their canonical text, which is cheap
/// to explain and stable across releases as long as printing is.
pub fn canonicalize(p: &Predicate) -> Predicate {
    match p {
        Predicate::And(operands) => n_ary(operands, true),
        Predicate::Or(operands) => n_ary(operands, false),
        Predicate::Not(inner) => match canonicalize(inner) {
            Predicate::Not(x) => *x,
            other => Predicate::Not(Box::new(other)),
        },
        Predicate::Compare { field, op, value } => Predicate::Compare {
            field: field.clone(),
            op: *op,
            value: normalize_value(value),
        },
        Predicate::In {
            field,
            negated,
            values,
        } => {
            let mut values: Vec<Value> = values.iter().map(normalize_value).collect();
            values.sort_by(cmp_values);
            values.dedup_by(|a, b| cmp_values(a, b) == Ordering::Equal);
            if let [value] = values.as_mut_slice() {
                let value = std::mem::replace(value, Value::Boolean(false));
                return Predicate::Compare {
                    field: field.clone(),
                    op: if *negated {
                        CompareOp::Ne
                    } else {
                        CompareOp::Eq
                    },
                    value,
                };
            }
            Predicate::In {
                field: field.clone(),
                negated: *negated,
                values,
            }
        }
        Predicate::Regex { .. } | Predicate::Contains { .. } => p.clone(),
    }
}

fn n_ary(operands: &[Predicate], is_and: bool) -> Predicate {
    let mut flat = Vec::with_capacity(operands.len());
    for op in operands {
        match canonicalize(op) {
            Predicate::And(inner) if is_and => flat.extend(inner),
            Predicate::Or(inner) if !is_and => flat.extend(inner),
            // `x or <match all>` matches all. Parsed filters never contain an
            // empty `and` below the top, but a hand-built predicate may.
            Predicate::And(inner) if inner.is_empty() => return Predicate::And(Vec::new()),
            other => flat.push(other),
        }
    }
    let mut keyed: Vec<(String, Predicate)> = flat.into_iter().map(|p| (print(&p), p)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.dedup_by(|a, b| a.0 == b.0);
    let mut operands: Vec<Predicate> = keyed.into_iter().map(|(_, p)| p).collect();
    if let [only] = operands.as_mut_slice() {
        return std::mem::replace(only, Predicate::And(Vec::new()));
    }
    if is_and {
        Predicate::And(operands)
    } else {
        Predicate::Or(operands)
    }
}

fn normalize_value(v: &Value) -> Value {
    match v {
        // -0.0 == 0.0 for every comparison a source makes; one spelling.
        Value::Float(f) if *f == 0.0 => Value::Float(0.0),
        other => other.clone(),
    }
}

/// A total order on values: by variant, then by value (floats by
/// `total_cmp`, so even NaN has a place).
pub fn cmp_values(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::String(_) => 0,
            Value::Integer(_) => 1,
            Value::Float(_) => 2,
            Value::Boolean(_) => 3,
            Value::Time(_) => 4,
        }
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Integer(x), Value::Integer(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => x.total_cmp(y),
        (Value::Boolean(x), Value::Boolean(y)) => x.cmp(y),
        (Value::Time(x), Value::Time(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// `p` in the filter language. For a canonical predicate from `compile`,
/// the text compiles back to the same predicate; `And(vec![])` is `""`.
pub fn print(p: &Predicate) -> String {
    p.to_string()
}

impl fmt::Display for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Predicate::And(operands) => join(f, operands, " and ", |p| {
                matches!(p, Predicate::And(_) | Predicate::Or(_))
            }),
            // `and` binds tighter than `or`, so only a nested `or` needs them.
            Predicate::Or(operands) => join(f, operands, " or ", |p| matches!(p, Predicate::Or(_))),
            Predicate::Not(inner) => {
                if matches!(**inner, Predicate::And(_) | Predicate::Or(_)) {
                    write!(f, "not ({inner})")
                } else {
                    write!(f, "not {inner}")
                }
            }
            Predicate::Compare { field, op, value } => {
                write!(f, "{field} {} ", compare_op_str(*op))?;
                write_value(f, value)
            }
            Predicate::In {
                field,
                negated,
                values,
            } => {
                f.write_str(field)?;
                f.write_str(if *negated { " not in (" } else { " in (" })?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write_value(f, v)?;
                }
                f.write_str(")")
            }
            Predicate::Regex {
                field,
                negated,
                pattern,
            } => {
                write!(f, "{field} {} ", if *negated { "!~" } else { "~" })?;
                write_string(f, pattern)
            }
            Predicate::Contains { field, needle } => {
                write!(f, "{field} contains ")?;
                write_string(f, needle)
            }
        }
    }
}

fn join(
    f: &mut fmt::Formatter<'_>,
    operands: &[Predicate],
    sep: &str,
    needs_parens: impl Fn(&Predicate) -> bool,
) -> fmt::Result {
    for (i, p) in operands.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        if needs_parens(p) {
            write!(f, "({p})")?;
        } else {
            write!(f, "{p}")?;
        }
    }
    Ok(())
}

fn write_value(f: &mut fmt::Formatter<'_>, v: &Value) -> fmt::Result {
    match v {
        Value::String(s) => write_string(f, s),
        Value::Integer(i) => write!(f, "{i}"),
        // `{:?}` is the shortest text that round-trips and always has a `.`
        // or an exponent (`1.0`, `1e300`), so it reparses as a float.
        Value::Float(x) => write!(f, "{x:?}"),
        Value::Boolean(b) => write!(f, "{b}"),
        Value::Time(micros) => match chrono::DateTime::from_timestamp_micros(*micros) {
            Some(t) => write!(f, "\"{}\"", t.format("%Y-%m-%dT%H:%M:%S%.6fZ")),
            // Outside chrono's range; no parsed filter can hold such a time.
            None => write!(f, "\"{micros}\""),
        },
    }
}

fn write_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            c if c.is_control() => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::validate::tests::test_schema;
    use crate::filter::{Limits, RegexCache, compile};

    fn canon(text: &str) -> String {
        match compile(
            text,
            &test_schema(),
            &Limits::default(),
            &RegexCache::default(),
        ) {
            Ok(f) => f.canonical().to_string(),
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    #[test]
    fn flattens_sorts_dedups() {
        assert_eq!(
            canon("status = 2 and (status = 1 and status = 2) and cached = true"),
            "cached = true and status = 1 and status = 2"
        );
        assert_eq!(
            canon("status = 2 or (status = 1 or status = 2)"),
            "status = 1 or status = 2"
        );
        assert_eq!(canon("(((status = 1)))"), "status = 1");
        assert_eq!(canon("status = 1 and status = 1"), "status = 1");
    }

    #[test]
    fn parentheses_minimal_but_correct() {
        assert_eq!(
            canon("(status = 3 or status = 2) and status = 1"),
            "status = 1 and (status = 2 or status = 3)"
        );
        assert_eq!(
            canon("status = 1 or status = 2 and status = 3"),
            "status = 1 or status = 2 and status = 3"
        );
        assert_eq!(
            canon("not (status = 1 or status = 2)"),
            "not (status = 1 or status = 2)"
        );
        assert_eq!(canon("not (status = 1)"), "not status = 1");
    }

    #[test]
    fn double_negation() {
        assert_eq!(canon("not not status = 1"), "status = 1");
        assert_eq!(canon("not not not status = 1"), "not status = 1");
        assert_eq!(
            canon("not (not (status = 1 and cached = true))"),
            "cached = true and status = 1"
        );
    }

    #[test]
    fn in_lists() {
        assert_eq!(canon("status in (3, 1, 2, 1)"), "status in (1, 2, 3)");
        assert_eq!(canon("status in (7, 7)"), "status = 7");
        assert_eq!(canon("status not in (7)"), "status != 7");
        assert_eq!(canon("latency_ms in (-0.0, 0, 0.0)"), "latency_ms = 0.0");
        assert_eq!(
            canon("service in (\"b\", \"a\")"),
            "service in (\"a\", \"b\")"
        );
    }

    #[test]
    fn values_print_to_reparse() {
        assert_eq!(canon("latency_ms > 1"), "latency_ms > 1.0");
        assert_eq!(canon("latency_ms > -0.0"), "latency_ms > 0.0");
        assert_eq!(canon("latency_ms > 1e300"), "latency_ms > 1e300");
        assert_eq!(canon("latency_ms > 2.5E-3"), "latency_ms > 0.0025");
        assert_eq!(
            canon("ts >= \"2026-11-01T01:00:00+01:00\""),
            "ts >= \"2026-11-01T00:00:00.000000Z\""
        );
        assert_eq!(
            canon("service = \"a\\\"b\\\\c\\nd\\te\\rf\\u{7}g é\""),
            "service = \"a\\\"b\\\\c\\nd\\te\\rf\\u{7}g é\""
        );
        assert_eq!(
            canon("ts = \"0000-01-01T00:00:00Z\" or ts = \"9999-12-31T23:59:59.9999999Z\""),
            "ts = \"0000-01-01T00:00:00.000000Z\" or ts = \"9999-12-31T23:59:59.999999Z\""
        );
        assert_eq!(canon(""), "");
        assert_eq!(canon("  \n "), "");
    }

    #[test]
    fn example_from_docs() {
        assert_eq!(
            canon(
                "service in (\"checkout\", \"payments\") and status >= 500 and \
                 endpoint ~ \"^/api/v[12]/orders\" and not region = \"eu-west-1\""
                    .replace("region", "service")
                    .as_str()
            ),
            "endpoint ~ \"^/api/v[12]/orders\" and not service = \"eu-west-1\" and \
             service in (\"checkout\", \"payments\") and status >= 500"
        );
    }

    #[test]
    fn value_order_is_total() {
        let mut vs = [
            Value::Float(f64::NAN),
            Value::Float(1.0),
            Value::Integer(2),
            Value::String("x".into()),
            Value::Float(-1.0),
            Value::Time(3),
            Value::Boolean(true),
        ];
        vs.sort_by(cmp_values);
        assert_eq!(vs.first(), Some(&Value::String("x".into())));
        assert_eq!(vs.last(), Some(&Value::Time(3)));
    }
}
