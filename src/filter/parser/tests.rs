use super::*;
use crate::filter::ast::{Condition, Literal, Operand, Operator};
use crate::filter::predicate::CompareOp;

fn limits() -> Limits {
    Limits::default()
}

fn p(text: &str) -> Expr {
    match parse(text, &limits()) {
        Ok(e) => e,
        Err(e) => panic!("{text:?} failed: {e}"),
    }
}

fn err(text: &str) -> FilterError {
    match parse(text, &limits()) {
        Ok(e) => panic!("{text:?} parsed: {e:?}"),
        Err(e) => e,
    }
}

/// A compact rendering of the AST shape for precedence tests.
fn shape(e: &Expr) -> String {
    match e {
        Expr::And(v) => format!(
            "and[{}]",
            v.iter().map(shape).collect::<Vec<_>>().join(", ")
        ),
        Expr::Or(v) => format!("or[{}]", v.iter().map(shape).collect::<Vec<_>>().join(", ")),
        Expr::Not { expr, .. } => format!("not[{}]", shape(expr)),
        Expr::Condition(c) => c.field.node.clone(),
    }
}

#[test]
fn empty_and_whitespace_only() {
    assert_eq!(p(""), Expr::And(vec![]));
    assert_eq!(p(" \t\n\r\n "), Expr::And(vec![]));
}

#[test]
fn precedence_not_and_or() {
    assert_eq!(shape(&p("a=1 or b=1 and c=1")), "or[a, and[b, c]]");
    assert_eq!(shape(&p("a=1 and b=1 or c=1")), "or[and[a, b], c]");
    assert_eq!(shape(&p("not a=1 and b=1")), "and[not[a], b]");
    assert_eq!(shape(&p("not (a=1 and b=1)")), "not[and[a, b]]");
    assert_eq!(shape(&p("(a=1 or b=1) and c=1")), "and[or[a, b], c]");
    assert_eq!(shape(&p("a=1 and b=1 and c=1")), "and[a, b, c]");
    assert_eq!(shape(&p("(a=1 and b=1) and c=1")), "and[and[a, b], c]");
    assert_eq!(shape(&p("not not a=1")), "not[not[a]]");
    assert_eq!(shape(&p("((a=1))")), "a");
}

#[test]
fn keywords_case_insensitive_fields_case_sensitive() {
    assert_eq!(shape(&p("a=1 AND b=1 Or NOT c=1")), "or[and[a, b], not[c]]");
    let Expr::Condition(c) = p("Status NOT IN (1)") else {
        panic!("not a condition")
    };
    assert_eq!(c.field.node, "Status");
    assert_eq!(c.op.node, Operator::NotIn);
    // A keyword prefix is still an identifier.
    assert_eq!(
        shape(&p("order = 1 and android = 2 or notes = 3")),
        "or[and[order, android], notes]"
    );
}

#[test]
fn every_operator() {
    let cases = [
        ("a = 1", Operator::Compare(CompareOp::Eq)),
        ("a != 1", Operator::Compare(CompareOp::Ne)),
        ("a < 1", Operator::Compare(CompareOp::Lt)),
        ("a <= 1", Operator::Compare(CompareOp::Le)),
        ("a > 1", Operator::Compare(CompareOp::Gt)),
        ("a >= 1", Operator::Compare(CompareOp::Ge)),
        ("a in (1)", Operator::In),
        ("a not in (1)", Operator::NotIn),
        ("a not\n\tin (1)", Operator::NotIn),
        ("a ~ \"x\"", Operator::Matches),
        ("a !~ \"x\"", Operator::NotMatches),
        ("a contains \"x\"", Operator::Contains),
        ("a>=1", Operator::Compare(CompareOp::Ge)),
        ("a in(1)", Operator::In),
    ];
    for (text, op) in cases {
        let Expr::Condition(c) = p(text) else {
            panic!("{text}: not a condition")
        };
        assert_eq!(c.op.node, op, "{text}");
    }
}

fn lit(text: &str) -> Literal {
    match p(&format!("a = {text}")) {
        Expr::Condition(Condition {
            operand: Operand::Single(l),
            ..
        }) => l.node,
        other => panic!("{other:?}"),
    }
}

#[test]
fn literals() {
    assert_eq!(lit("42"), Literal::Integer(42));
    assert_eq!(lit("-42"), Literal::Integer(-42));
    assert_eq!(lit("-9223372036854775808"), Literal::Integer(i64::MIN));
    assert_eq!(lit("9223372036854775807"), Literal::Integer(i64::MAX));
    assert_eq!(lit("1.5"), Literal::Float(1.5));
    assert_eq!(lit("-0.25"), Literal::Float(-0.25));
    assert_eq!(lit("1e3"), Literal::Float(1000.0));
    assert_eq!(lit("2.5E-3"), Literal::Float(0.0025));
    assert_eq!(lit("true"), Literal::Boolean(true));
    assert_eq!(lit("FALSE"), Literal::Boolean(false));
    assert_eq!(lit(r#""""#), Literal::String(String::new()));
}

#[test]
fn string_escapes() {
    assert_eq!(
        lit(r#""a\"b\\c\nd\te\rf\u{41}\u{1F600}\u{e9}""#),
        Literal::String("a\"b\\c\nd\te\rfA😀é".to_string())
    );
    assert_eq!(
        lit("\"raw\nnewline ü\""),
        Literal::String("raw\nnewline ü".into())
    );
}

#[test]
fn literal_errors() {
    let cases = [
        ("a = 9223372036854775808", FilterErrorKind::InvalidLiteral),
        ("a = -9223372036854775809", FilterErrorKind::InvalidLiteral),
        ("a = 1e999", FilterErrorKind::InvalidLiteral),
        ("a = 500abc", FilterErrorKind::InvalidLiteral),
        ("a = 1.", FilterErrorKind::InvalidLiteral),
        ("a = .5", FilterErrorKind::Syntax),
        ("a = - 5", FilterErrorKind::Syntax),
        (r#"a = "\q""#, FilterErrorKind::InvalidLiteral),
        (r#"a = "\u{D800}""#, FilterErrorKind::InvalidLiteral),
        (r#"a = "\u{110000}""#, FilterErrorKind::InvalidLiteral),
        (r#"a = "\u{}""#, FilterErrorKind::InvalidLiteral),
        (r#"a = "\u41""#, FilterErrorKind::InvalidLiteral),
        (r#"a = "abc"#, FilterErrorKind::Syntax),
        (r#"a = "abc\"#, FilterErrorKind::Syntax),
        ("a = checkout", FilterErrorKind::Syntax),
    ];
    for (text, kind) in cases {
        assert_eq!(err(text).kind, kind, "{text}");
    }
}

#[test]
fn syntax_errors() {
    let cases = [
        "a",
        "a 1",
        "a =",
        "(a = 1",
        "a = 1)",
        "a = 1 b = 2",
        "and = 1",
        "a = 1 and",
        "a in ()",
        "a in (1,)",
        "a in (1 2)",
        "a in 1",
        "a not 1",
        "()",
        "not",
        "a == 1",
        "\"a\" = 1",
        "a = 1 or or b = 2",
        "true = 1",
    ];
    for text in cases {
        assert_eq!(err(text).kind, FilterErrorKind::Syntax, "{text}");
    }
}

#[test]
fn error_positions() {
    let e = err("a = 1 and\n  b 2");
    assert_eq!((e.line, e.column), (2, 5));
    let e = err("s = \"héllo\" and x");
    assert_eq!((e.line, e.column), (1, 18));
    let e = err("a = \"x\\q\"");
    assert_eq!((e.line, e.column), (1, 7));
}

#[test]
fn in_lists() {
    let Expr::Condition(c) = p("a in ( \"x\" ,\n\"y\", 3, 1.5, true )") else {
        panic!()
    };
    let Operand::List(items) = c.operand else {
        panic!()
    };
    let values: Vec<_> = items.into_iter().map(|s| s.node).collect();
    assert_eq!(
        values,
        vec![
            Literal::String("x".into()),
            Literal::String("y".into()),
            Literal::Integer(3),
            Literal::Float(1.5),
            Literal::Boolean(true)
        ]
    );
}

#[test]
fn limit_in_list() {
    let l = Limits {
        max_in_list: 3,
        ..Limits::default()
    };
    assert!(parse("a in (1, 2, 3)", &l).is_ok());
    let e = parse("a in (1, 2, 3, 4)", &l)
        .err()
        .map(|e| (e.kind, e.column));
    assert_eq!(e, Some((FilterErrorKind::InListTooLarge, 16)));
}

#[test]
fn limit_depth() {
    let l = Limits {
        max_depth: 3,
        ..Limits::default()
    };
    assert!(parse("(((a = 1)))", &l).is_ok());
    assert!(parse("not (not a = 1)", &l).is_ok());
    let e = parse("((((a = 1))))", &l).err().map(|e| (e.kind, e.column));
    assert_eq!(e, Some((FilterErrorKind::TooDeep, 4)));
    let e = parse("not not not not a = 1", &l).err().map(|e| e.kind);
    assert_eq!(e, Some(FilterErrorKind::TooDeep));
    // Depth is nesting, not count: siblings do not add up.
    assert!(parse("(((a = 1))) and (((b = 1))) or not not not c = 1", &l).is_ok());
}

#[test]
fn limit_depth_huge_input_does_not_overflow() {
    let l = Limits {
        max_length: 10_000_000,
        ..Limits::default()
    };
    let parens = format!("{}a = 1{}", "(".repeat(100_000), ")".repeat(100_000));
    assert_eq!(
        parse(&parens, &l).err().map(|e| e.kind),
        Some(FilterErrorKind::TooDeep)
    );
    let nots = format!("{}a = 1", "not ".repeat(100_000));
    assert_eq!(
        parse(&nots, &l).err().map(|e| e.kind),
        Some(FilterErrorKind::TooDeep)
    );
    let mixed = "not (".repeat(100_000);
    assert_eq!(
        parse(&mixed, &l).err().map(|e| e.kind),
        Some(FilterErrorKind::TooDeep)
    );
    // With the default limits the same inputs are rejected before parsing.
    assert_eq!(
        parse(&parens, &Limits::default()).err().map(|e| e.kind),
        Some(FilterErrorKind::TooLong)
    );
}

#[test]
fn limit_nodes() {
    let l = Limits {
        max_nodes: 5,
        ..Limits::default()
    };
    // and-node + 4 conditions = 5
    assert!(parse("a=1 and b=1 and c=1 and d=1", &l).is_ok());
    let e = parse("a=1 and b=1 and c=1 and d=1 and e=1", &l)
        .err()
        .map(|e| (e.kind, e.column));
    assert_eq!(e, Some((FilterErrorKind::TooManyNodes, 33)));
    let e = parse("not not not not not not a=1", &l)
        .err()
        .map(|e| e.kind);
    assert_eq!(e, Some(FilterErrorKind::TooManyNodes));
}

#[test]
fn limit_length_counts_characters() {
    let l = Limits {
        max_length: 9,
        ..Limits::default()
    };
    assert!(parse("a = \"ééé\"", &l).is_ok()); // 9 chars, more bytes
    let e = parse("a = \"éééé\"", &l).err().map(|e| (e.kind, e.column));
    assert_eq!(e, Some((FilterErrorKind::TooLong, 10)));
    // Checked before parsing: garbage that is too long is TooLong, not Syntax.
    let e = parse(")))))))))))", &l).err().map(|e| e.kind);
    assert_eq!(e, Some(FilterErrorKind::TooLong));
}
