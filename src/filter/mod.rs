//! The filter language: how a client says which rows it wants. Text is parsed
//! ([`parse`]), typed against the source's [`Schema`] and checked against
//! [`Limits`], then rewritten into one canonical form ([`compile`]) whose
//! printed text feeds the result [`Fingerprint`]. Nothing here does I/O, and
//! no input can make it panic or recurse deeper than `Limits::max_depth`.
//!
//! # Grammar
//!
//! ```text
//! filter     ::= ws [ or_expr ] ws                       (* empty = match all *)
//! or_expr    ::= and_expr { ws "or" ws and_expr }
//! and_expr   ::= unary { ws "and" ws unary }
//! unary      ::= "not" ws unary
//!              | "(" ws or_expr ws ")"
//!              | condition
//! condition  ::= field ws cmp_op ws literal
//!              | field ws [ "not" ws ] "in" ws "(" ws literal { ws "," ws literal } ws ")"
//!              | field ws ( "~" | "!~" ) ws string
//!              | field ws "contains" ws string
//! cmp_op     ::= "=" | "!=" | "<" | "<=" | ">" | ">="
//! field      ::= [A-Za-z_] [A-Za-z0-9_]*                 (* case-sensitive, not a keyword *)
//! literal    ::= string | integer | float | "true" | "false"
//! string     ::= '"' { char | "\\\"" | "\\\\" | "\\n" | "\\t" | "\\r" | "\\u{" hex{1,6} "}" } '"'
//! integer    ::= [ "-" ] digit+                          (* i64 range *)
//! float      ::= [ "-" ] digit+ ( "." digit+ [ exp ] | exp )
//! exp        ::= ( "e" | "E" ) [ "+" | "-" ] digit+
//! ws         ::= { " " | "\t" | "\n" | "\r" }
//! ```
//!
//! Keywords (`and or not in contains true false`) are case-insensitive and
//! must be followed by a non-identifier character. Precedence is
//! `not` > `and` > `or`. Regexes use Rust `regex` syntax and are unanchored.
//! Time fields take RFC 3339 strings; float fields take integers too.
//!
//! # Examples
//!
//! ```text
//! status >= 500
//! service in ("checkout", "payments") and status >= 500
//!     and endpoint ~ "^/api/v[12]/orders" and not region = "eu-west-1"
//! ts >= "2026-11-01T00:00:00Z" and ts < "2026-11-02T00:00:00Z"
//! (cached = false or latency_ms > 250.5) and endpoint contains "/v2/"
//! status NOT IN (404, 410)
//! ```

pub mod ast;
pub mod canonical;
pub mod error;
pub mod fingerprint;
pub mod parser;
pub mod predicate;
pub mod regexes;
pub mod schema;
pub mod time_range;
pub mod validate;

#[cfg(test)]
mod fuzz_corpus;
#[cfg(test)]
mod proptests;

/// The model's, re-exported: the language names them.
pub use crate::model::{Fingerprint, Order};
pub use error::{FilterError, FilterErrorKind};
pub use fingerprint::{FingerprintInput, RangeKey};
pub use predicate::{CompareOp, Predicate, Value};
pub use regexes::RegexCache;
pub use schema::{FieldType, Schema};
pub use time_range::{TimeRange, TimeRangeError};

/// Bounds on what a filter may cost to parse, store and evaluate. Each one
/// violated has its own `FilterErrorKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Characters (not bytes) of filter text; checked before parsing.
    pub max_length: usize,
    /// Nesting of parentheses and `not`; `(a = 1)` and `not a = 1` are depth 1.
    pub max_depth: usize,
    /// AST nodes: conditions, `not`s and `and`/`or` chains.
    pub max_nodes: usize,
    /// Values in one `in` / `not in` list.
    pub max_in_list: usize,
    /// Bytes a compiled regex (and its lazy DFA) may use.
    pub regex_size_limit: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_length: 4096,
            max_depth: 32,
            max_nodes: 256,
            max_in_list: 1000,
            regex_size_limit: 1 << 20,
        }
    }
}

/// A parsed, validated, canonical filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    predicate: Predicate,
    canonical: String,
}

impl Filter {
    /// The canonical typed predicate, ready for a source to translate.
    pub fn predicate(&self) -> &Predicate {
        &self.predicate
    }

    /// The canonical text: compiles back to the same filter, and is what
    /// fingerprints hash.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }
}

impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.canonical)
    }
}

/// Parse `text` into an untyped AST, enforcing the length, depth, node and
/// `in`-list limits.
pub fn parse(text: &str, limits: &Limits) -> Result<ast::Expr, FilterError> {
    parser::parse(text, limits)
}

/// Parse, type against `schema`, and canonicalize. Regexes are compiled
/// (to check them) through `regexes`, which keeps them for the source.
pub fn compile(
    text: &str,
    schema: &Schema,
    limits: &Limits,
    regexes: &RegexCache,
) -> Result<Filter, FilterError> {
    let ast = parser::parse(text, limits)?;
    let typed = validate::validate(&ast, schema, limits, regexes)?;
    let predicate = canonical::canonicalize(&typed);
    let canonical = canonical::print(&predicate);
    Ok(Filter {
        predicate,
        canonical,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::validate::tests::test_schema;

    fn err(text: &str) -> String {
        err_with(text, &Limits::default())
    }

    fn err_with(text: &str, limits: &Limits) -> String {
        match compile(text, &test_schema(), limits, &RegexCache::default()) {
            Ok(f) => panic!("{text:?} compiled to {:?}", f.canonical()),
            Err(e) => format!("[{}] {e}", e.kind.slug()),
        }
    }

    #[test]
    fn empty_filter_matches_all() {
        let f = compile(
            " \n\t",
            &test_schema(),
            &Limits::default(),
            &RegexCache::default(),
        );
        assert_eq!(
            f.as_ref().map(|f| f.predicate()),
            Ok(&Predicate::And(vec![]))
        );
        assert_eq!(f.as_ref().map(|f| f.canonical()), Ok(""));
    }

    #[test]
    fn syntax_messages() {
        insta::assert_snapshot!(err("status 500"), @"[filter-syntax] 1:8: unexpected `500`; expected a comparison operator (=, !=, <, <=, >, >=), `in`, `not in`, `~`, `!~` or `contains`");
        insta::assert_snapshot!(err("status ="), @"[filter-syntax] 1:9: unexpected end of input; expected a string, number or boolean");
        insta::assert_snapshot!(err("service = checkout"), @"[filter-syntax] 1:11: unexpected `checkout`; expected a string, number or boolean (strings are written in double quotes)");
        insta::assert_snapshot!(err("(status = 500"), @"[filter-syntax] 1:14: unexpected end of input; expected a closing `)`");
        insta::assert_snapshot!(err("(status = 500 cached = true"), @"[filter-syntax] 1:15: unexpected `cached`; expected `and`, `or` or a closing `)`");
        insta::assert_snapshot!(err("status = 500 cached = true"), @"[filter-syntax] 1:14: unexpected input after the end of the filter; expected `and`, `or` or the end of the filter");
        insta::assert_snapshot!(err("status = 500)"), @"[filter-syntax] 1:13: unexpected `)` without a matching `(`");
        insta::assert_snapshot!(err("service = \"checkout"), @r#"[filter-syntax] 1:11: unterminated string; expected a closing `"`"#);
        insta::assert_snapshot!(err("status = 500 and"), @"[filter-syntax] 1:17: unexpected end of input; expected a field name, `not` or `(`");
        insta::assert_snapshot!(err("status = 500 and or cached = true"), @"[filter-syntax] 1:18: unexpected keyword `or`; expected a field name, `not` or `(`");
        insta::assert_snapshot!(err("status in ()"), @"[filter-syntax] 1:12: unexpected `)`; expected a string, number or boolean");
        insta::assert_snapshot!(err("status in (1 2)"), @"[filter-syntax] 1:14: unexpected `2`; expected `,` or a closing `)`");
        insta::assert_snapshot!(err("status in 1"), @"[filter-syntax] 1:11: unexpected `1`; expected `(` starting a list of values");
        insta::assert_snapshot!(err("status not 1"), @"[filter-syntax] 1:12: unexpected `1`; expected `in` after `not`");
        insta::assert_snapshot!(err("status == 1"), @"[filter-syntax] 1:9: unexpected `=`; expected a string, number or boolean");
        insta::assert_snapshot!(err("()"), @"[filter-syntax] 1:2: unexpected `)`; expected a field name, `not` or `(`");
    }

    #[test]
    fn literal_messages() {
        insta::assert_snapshot!(err("status = 99999999999999999999"), @"[invalid-literal] 1:10: integer `99999999999999999999` is out of range (-9223372036854775808 to 9223372036854775807)");
        insta::assert_snapshot!(err("latency_ms = 1e400"), @"[invalid-literal] 1:14: number `1e400` is too large for a float");
        insta::assert_snapshot!(err("status = 500ms"), @"[invalid-literal] 1:10: invalid number `500ms`");
        insta::assert_snapshot!(err(r#"service = "a\qb""#), @r#"[invalid-literal] 1:13: invalid escape `\q` in string; the escapes are \", \\, \n, \t, \r and \u{XXXX}"#);
        insta::assert_snapshot!(err(r#"service = "\u{d800}""#), @r#"[invalid-literal] 1:12: invalid unicode escape; write it as `\u{XXXX}` with 1 to 6 hex digits naming a Unicode scalar value"#);
        insta::assert_snapshot!(err(r#"ts > "2026-11-01""#), @r#"[invalid-literal] 1:6: `2026-11-01` is not an RFC 3339 time (premature end of input); expected an RFC 3339 time string such as "2026-11-01T00:00:00Z""#);
    }

    #[test]
    fn typing_messages() {
        insta::assert_snapshot!(err("stauts = 500"), @"[unknown-field] 1:1: unknown field `stauts` (did you mean `status`?); expected one of the fields `ts`, `service`, `endpoint`, `status`, `latency_ms`, `cached`");
        insta::assert_snapshot!(err("region = \"eu\""), @"[unknown-field] 1:1: unknown field `region`; expected one of the fields `ts`, `service`, `endpoint`, `status`, `latency_ms`, `cached`");
        insta::assert_snapshot!(err("status = 1.5"), @"[type-mismatch] 1:10: `status` is an integer field, but the value is a float; expected an integer");
        insta::assert_snapshot!(err("status = \"500\""), @"[type-mismatch] 1:10: `status` is an integer field, but the value is a string; expected an integer");
        insta::assert_snapshot!(err("status ~ \"5..\""), @"[type-mismatch] 1:8: operator `~` cannot be used with integer field `status`; expected =, !=, <, <=, >, >=, `in` or `not in`");
        insta::assert_snapshot!(err("cached < true"), @"[type-mismatch] 1:8: operator `<` cannot be used with boolean field `cached`; expected =, !=, `in` or `not in`");
        insta::assert_snapshot!(err("ts = 1700000000"), @r#"[type-mismatch] 1:6: `ts` is a time field, but the value is an integer; expected an RFC 3339 time string such as "2026-11-01T00:00:00Z""#);
        insta::assert_snapshot!(err("latency_ms in (1, \"2\")"), @"[type-mismatch] 1:19: `latency_ms` is a float field, but the value is a string; expected a number");
        insta::assert_snapshot!(err("service contains 5"), @"[type-mismatch] 1:18: `contains` needs a string, but the value is an integer; expected a string in double quotes");
        insta::assert_snapshot!(err("endpoint ~ \"^/api/(v1\""), @"[invalid-regex] 1:12: invalid regex: unclosed group");
    }

    #[test]
    fn limit_messages() {
        let small = Limits {
            max_length: 20,
            max_depth: 2,
            max_nodes: 3,
            max_in_list: 2,
            regex_size_limit: 1000,
        };
        insta::assert_snapshot!(err_with("status = 500 and service = \"x\"", &small), @"[filter-too-long] 1:21: filter is longer than the limit of 20 characters");
        insta::assert_snapshot!(err_with("(((status = 1)))", &small), @"[filter-too-deep] 1:3: filter nests parentheses and `not` deeper than 2 levels");
        insta::assert_snapshot!(err_with("not not not a=1", &small), @"[filter-too-deep] 1:9: filter nests parentheses and `not` deeper than 2 levels");
        insta::assert_snapshot!(err_with("a=1 or b=1 or c=1", &small), @"[filter-too-many-nodes] 1:15: filter has more than 3 conditions and operators");
        insta::assert_snapshot!(err_with("status in (1,2,3)", &small), @"[in-list-too-large] 1:16: `in` list has more than 2 values");
        insta::assert_snapshot!(err_with(
            "service ~ \"[a-z]{50}\"",
            &Limits { regex_size_limit: 1000, ..Limits::default() }
        ), @"[invalid-regex] 1:11: invalid regex: it compiles to more than the limit of 1000 bytes");
    }

    #[test]
    fn positions_are_lines_and_characters() {
        // Line 3; the error column counts "é" and "ü" as one character each.
        insta::assert_snapshot!(err("status = 500\n  and service = \"café\"\n  and endpoint = \"über\" and cached = maybe"), @"[filter-syntax] 3:38: unexpected `maybe`; expected a string, number or boolean (strings are written in double quotes)");
        // Tabs are one column, CRLF ends a line.
        insta::assert_snapshot!(err("status = 500 and\r\n\tstauts = 1"), @"[unknown-field] 2:2: unknown field `stauts` (did you mean `status`?); expected one of the fields `ts`, `service`, `endpoint`, `status`, `latency_ms`, `cached`");
        insta::assert_snapshot!(err("service = \"日本語\" and status ~ \"x\""), @"[type-mismatch] 1:28: operator `~` cannot be used with integer field `status`; expected =, !=, <, <=, >, >=, `in` or `not in`");
    }
}
