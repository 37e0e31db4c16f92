//! Strategies for typed predicates over the shared test schema: every field
//! type, every operator, values at the edges of their printed forms.

use proptest::prelude::*;

use crate::filter::{CompareOp, Predicate, Value};

fn compare_op() -> impl Strategy<Value = CompareOp> {
    prop_oneof![
        Just(CompareOp::Eq),
        Just(CompareOp::Ne),
        Just(CompareOp::Lt),
        Just(CompareOp::Le),
        Just(CompareOp::Gt),
        Just(CompareOp::Ge),
    ]
}

fn eq_ne() -> impl Strategy<Value = CompareOp> {
    prop_oneof![Just(CompareOp::Eq), Just(CompareOp::Ne)]
}

fn string_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-c]{0,3}",
        prop::collection::vec(any::<char>(), 0..6).prop_map(|v| v.into_iter().collect()),
    ]
}

/// 1900-01-01 .. 2200-01-01, so every time has a four-digit year in any offset.
fn time_value() -> impl Strategy<Value = i64> {
    -2_208_988_800_000_000i64..7_258_118_400_000_000i64
}

fn float_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        Just(0.0),
        Just(-0.0),
        (-1000i32..1000).prop_map(|i| f64::from(i) / 4.0),
    ]
}

fn regex_pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("^/api/v[12]/orders".to_string()),
        Just("(?i)error|warn".to_string()),
        Just("a+b*\\d{2}$".to_string()),
        string_value().prop_map(|s| regex::escape(&s)),
    ]
}

fn string_field() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("service"), Just("endpoint")]
}

fn cmp(field: &str, op: CompareOp, value: Value) -> Predicate {
    Predicate::Compare {
        field: field.to_string(),
        op,
        value,
    }
}

fn in_list(field: &str, negated: bool, values: Vec<Value>) -> Predicate {
    Predicate::In {
        field: field.to_string(),
        negated,
        values,
    }
}

fn leaf() -> impl Strategy<Value = Predicate> {
    use prop::collection::vec;
    prop_oneof![
        (compare_op(), time_value()).prop_map(|(op, t)| cmp("ts", op, Value::Time(t))),
        (any::<bool>(), vec(time_value(), 1..4)).prop_map(|(n, v)| in_list(
            "ts",
            n,
            v.into_iter().map(Value::Time).collect()
        )),
        (string_field(), compare_op(), string_value()).prop_map(|(f, op, s)| cmp(
            f,
            op,
            Value::String(s)
        )),
        (string_field(), any::<bool>(), vec(string_value(), 1..4)).prop_map(|(f, n, v)| in_list(
            f,
            n,
            v.into_iter().map(Value::String).collect()
        )),
        (string_field(), any::<bool>(), regex_pattern()).prop_map(|(f, negated, pattern)| {
            Predicate::Regex {
                field: f.to_string(),
                negated,
                pattern,
            }
        }),
        (string_field(), string_value()).prop_map(|(f, needle)| Predicate::Contains {
            field: f.to_string(),
            needle
        }),
        (compare_op(), any::<i64>()).prop_map(|(op, i)| cmp("status", op, Value::Integer(i))),
        (any::<bool>(), vec(prop_oneof![any::<i64>(), 0i64..4], 1..5)).prop_map(|(n, v)| {
            in_list("status", n, v.into_iter().map(Value::Integer).collect())
        }),
        (compare_op(), float_value()).prop_map(|(op, f)| cmp("latency_ms", op, Value::Float(f))),
        (any::<bool>(), vec(float_value(), 1..5)).prop_map(|(n, v)| in_list(
            "latency_ms",
            n,
            v.into_iter().map(Value::Float).collect()
        )),
        (eq_ne(), any::<bool>()).prop_map(|(op, b)| cmp("cached", op, Value::Boolean(b))),
        (any::<bool>(), vec(any::<bool>(), 1..4)).prop_map(|(n, v)| in_list(
            "cached",
            n,
            v.into_iter().map(Value::Boolean).collect()
        )),
    ]
}

pub(super) fn predicate() -> impl Strategy<Value = Predicate> {
    leaf().prop_recursive(4, 40, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(Predicate::And),
            prop::collection::vec(inner.clone(), 1..4).prop_map(Predicate::Or),
            inner.prop_map(|p| Predicate::Not(Box::new(p))),
        ]
    })
}
