use super::suggest::edit_distance;
use super::*;
use crate::filter::parser::parse;
use crate::filter::predicate::Value;

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
    validate(
        &parse(text, &limits)?,
        &test_schema(),
        &limits,
        &RegexCache::default(),
    )
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
        .and_then(|ast| validate(&ast, &test_schema(), &limits, &RegexCache::default()))
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
