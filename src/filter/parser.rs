//! Text → `ast::Expr`. Tokens (keywords, identifiers, operators, numbers) are
//! recognised with nom; the expression structure is a small recursive-descent
//! parser on top, because it must count nesting depth and nodes *while* it
//! descends (so `((((…` 100k deep fails with `TooDeep` instead of overflowing
//! the stack) and must report errors with positions and plain-words
//! expectations, which nom's generic errors cannot express.

use nom::{
    IResult, Parser,
    branch::alt,
    bytes::complete::{tag, tag_no_case, take_while, take_while1},
    character::complete::{char, digit1, multispace0, multispace1, one_of, satisfy},
    combinator::{not, opt, recognize},
    sequence::terminated,
};

use crate::filter::Limits;
use crate::filter::ast::{Condition, Expr, Literal, Operand, Operator, Position, Spanned};
use crate::filter::error::{FilterError, FilterErrorKind};
use crate::filter::predicate::CompareOp;

/// Words that can never be field names, matched case-insensitively.
pub const KEYWORDS: [&str; 7] = ["and", "or", "not", "in", "contains", "true", "false"];

const EXPECTED_OPERATOR: &str =
    "a comparison operator (=, !=, <, <=, >, >=), `in`, `not in`, `~`, `!~` or `contains`";
const EXPECTED_LITERAL: &str = "a string, number or boolean";
const EXPECTED_OPERAND: &str = "a field name, `not` or `(`";

/// Token recognisers only need to say "not here"; the structural parser
/// knows what was expected and builds the real error.
type TokResult<'a, T> = IResult<&'a str, T, ()>;

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

/// A keyword, case-insensitive, not followed by an identifier character (so
/// `order` is not `or` + `der`).
fn keyword<'a>(kw: &'static str) -> impl Parser<&'a str, Output = &'a str, Error = ()> {
    terminated(tag_no_case(kw), not(satisfy(is_ident_char)))
}

fn identifier(i: &str) -> TokResult<'_, &str> {
    recognize((satisfy(is_ident_start), take_while(is_ident_char))).parse(i)
}

fn operator(i: &str) -> TokResult<'_, Operator> {
    alt((
        tag("<=").map(|_| Operator::Compare(CompareOp::Le)),
        tag(">=").map(|_| Operator::Compare(CompareOp::Ge)),
        tag("!=").map(|_| Operator::Compare(CompareOp::Ne)),
        tag("!~").map(|_| Operator::NotMatches),
        tag("=").map(|_| Operator::Compare(CompareOp::Eq)),
        tag("<").map(|_| Operator::Compare(CompareOp::Lt)),
        tag(">").map(|_| Operator::Compare(CompareOp::Gt)),
        tag("~").map(|_| Operator::Matches),
        keyword("in").map(|_| Operator::In),
        keyword("contains").map(|_| Operator::Contains),
        (keyword("not"), multispace1, keyword("in")).map(|_| Operator::NotIn),
    ))
    .parse(i)
}

/// `-?digits(.digits)?([eE][+-]?digits)?`, as text; typing it is up to the caller.
fn number(i: &str) -> TokResult<'_, &str> {
    recognize((
        opt(char('-')),
        digit1,
        opt((char('.'), digit1)),
        opt((one_of("eE"), opt(one_of("+-")), digit1)),
    ))
    .parse(i)
}

fn boolean(i: &str) -> TokResult<'_, bool> {
    alt((
        keyword("true").map(|_| true),
        keyword("false").map(|_| false),
    ))
    .parse(i)
}

/// Why a string literal could not be read; offsets are relative to the input
/// handed to `string_literal`.
enum StringError {
    Unterminated,
    BadEscape { offset: usize, message: String },
}

/// A double-quoted string with escapes `\" \\ \n \t \r \u{X..}`. Raw newlines
/// are allowed inside: long regexes are easier to read that way, and the
/// canonical printer escapes them anyway.
fn string_literal(i: &str) -> Result<(&str, String), StringError> {
    let Ok((body, _)) = char::<&str, ()>('"').parse(i) else {
        return Err(StringError::Unterminated);
    };
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((idx, c)) = chars.next() {
        match c {
            '"' => {
                let rest = body.get(idx + 1..).unwrap_or("");
                return Ok((rest, out));
            }
            '\\' => {
                let escape_offset = i.len() - body.len() + idx;
                match chars.next() {
                    Some((_, '"')) => out.push('"'),
                    Some((_, '\\')) => out.push('\\'),
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, 'u')) => {
                        let after_u = chars.as_str();
                        match unicode_escape(after_u) {
                            Some((consumed, ch)) => {
                                out.push(ch);
                                // Skip what unicode_escape consumed.
                                for _ in after_u.get(..consumed).unwrap_or("").chars() {
                                    chars.next();
                                }
                            }
                            None => {
                                return Err(StringError::BadEscape {
                                    offset: escape_offset,
                                    message: "invalid unicode escape; write it as `\\u{XXXX}` \
                                              with 1 to 6 hex digits naming a Unicode scalar value"
                                        .to_string(),
                                });
                            }
                        }
                    }
                    Some((_, other)) => {
                        return Err(StringError::BadEscape {
                            offset: escape_offset,
                            message: format!(
                                "invalid escape `\\{}` in string; the escapes are \\\", \\\\, \\n, \\t, \\r and \\u{{XXXX}}",
                                other.escape_default()
                            ),
                        });
                    }
                    None => return Err(StringError::Unterminated),
                }
            }
            _ => out.push(c),
        }
    }
    Err(StringError::Unterminated)
}

/// `{XXXX}` after `\u`: returns the bytes consumed and the character.
fn unicode_escape(i: &str) -> Option<(usize, char)> {
    let digits_and_brace = i.strip_prefix('{')?;
    let close = digits_and_brace.find('}')?;
    let digits = digits_and_brace.get(..close)?;
    if digits.is_empty() || digits.len() > 6 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let code = u32::from_str_radix(digits, 16).ok()?;
    let ch = char::from_u32(code)?;
    Some((close + 2, ch))
}

/// Parse `text` into an AST, enforcing every limit except the regex size
/// (which needs the regex compiled, see `validate`).
///
/// Whitespace-only text parses to `Expr::And(vec![])`.
pub fn parse(text: &str, limits: &Limits) -> Result<Expr, FilterError> {
    check_length(text, limits)?;
    let mut p = P {
        src: text,
        rest: text,
        limits,
        nodes: 0,
    };
    p.skip_ws();
    if p.rest.is_empty() {
        return Ok(Expr::And(Vec::new()));
    }
    let expr = p.or_expr(0)?;
    p.skip_ws();
    if p.rest.is_empty() {
        return Ok(expr);
    }
    if p.rest.starts_with(')') {
        return Err(FilterError::new(
            FilterErrorKind::Syntax,
            p.pos(),
            "unexpected `)` without a matching `(`",
        ));
    }
    Err(FilterError::new(
        FilterErrorKind::Syntax,
        p.pos(),
        "unexpected input after the end of the filter",
    )
    .with_expected("`and`, `or` or the end of the filter"))
}

/// Checked before anything else so that huge inputs cost only
/// `max_length` characters of scanning.
fn check_length(text: &str, limits: &Limits) -> Result<(), FilterError> {
    if let Some((offset, _)) = text.char_indices().nth(limits.max_length) {
        return Err(FilterError::new(
            FilterErrorKind::TooLong,
            Position::at(text, offset),
            format!(
                "filter is longer than the limit of {} characters",
                limits.max_length
            ),
        ));
    }
    Ok(())
}

struct P<'a> {
    src: &'a str,
    rest: &'a str,
    limits: &'a Limits,
    nodes: usize,
}

impl<'a> P<'a> {
    fn skip_ws(&mut self) {
        if let Ok((rest, _)) = multispace0::<&str, ()>(self.rest) {
            self.rest = rest;
        }
    }

    fn pos(&self) -> Position {
        Position::at(self.src, self.src.len() - self.rest.len())
    }

    /// Skip whitespace, then run a token recogniser; on success consume it.
    fn token<T>(&mut self, mut tok: impl Parser<&'a str, Output = T, Error = ()>) -> Option<T> {
        self.skip_ws();
        match tok.parse(self.rest) {
            Ok((rest, value)) => {
                self.rest = rest;
                Some(value)
            }
            Err(_) => None,
        }
    }

    /// A syntax error at the current position naming what is there.
    fn unexpected(&self, expected: &str) -> FilterError {
        FilterError::new(
            FilterErrorKind::Syntax,
            self.pos(),
            describe_found(self.rest),
        )
        .with_expected(expected)
    }

    fn count_node(&mut self, pos: Position) -> Result<(), FilterError> {
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            return Err(FilterError::new(
                FilterErrorKind::TooManyNodes,
                pos,
                format!(
                    "filter has more than {} conditions and operators",
                    self.limits.max_nodes
                ),
            ));
        }
        Ok(())
    }

    fn enter(&self, depth: usize, pos: Position) -> Result<usize, FilterError> {
        let depth = depth + 1;
        if depth > self.limits.max_depth {
            return Err(FilterError::new(
                FilterErrorKind::TooDeep,
                pos,
                format!(
                    "filter nests parentheses and `not` deeper than {} levels",
                    self.limits.max_depth
                ),
            ));
        }
        Ok(depth)
    }

    fn or_expr(&mut self, depth: usize) -> Result<Expr, FilterError> {
        self.n_ary(depth, "or", Self::and_expr, Expr::Or)
    }

    fn and_expr(&mut self, depth: usize) -> Result<Expr, FilterError> {
        self.n_ary(depth, "and", Self::unary, Expr::And)
    }

    /// `operand { kw operand }`, flattened into one n-ary node.
    fn n_ary(
        &mut self,
        depth: usize,
        kw: &'static str,
        operand: fn(&mut Self, usize) -> Result<Expr, FilterError>,
        build: fn(Vec<Expr>) -> Expr,
    ) -> Result<Expr, FilterError> {
        let first = operand(self, depth)?;
        let mut operands = Vec::new();
        loop {
            self.skip_ws();
            let kw_pos = self.pos();
            if self.token(keyword(kw)).is_none() {
                break;
            }
            if operands.is_empty() {
                self.count_node(kw_pos)?;
            }
            operands.push(operand(self, depth)?);
        }
        if operands.is_empty() {
            return Ok(first);
        }
        operands.insert(0, first);
        Ok(build(operands))
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, FilterError> {
        self.skip_ws();
        let pos = self.pos();
        if self.token(keyword("not")).is_some() {
            let depth = self.enter(depth, pos)?;
            self.count_node(pos)?;
            let expr = self.unary(depth)?;
            return Ok(Expr::Not {
                pos,
                expr: Box::new(expr),
            });
        }
        if self.token(char('(')).is_some() {
            let depth = self.enter(depth, pos)?;
            let expr = self.or_expr(depth)?;
            self.skip_ws();
            if self.token(char(')')).is_none() {
                let expected = if self.rest.is_empty() {
                    "a closing `)`"
                } else {
                    "`and`, `or` or a closing `)`"
                };
                return Err(self.unexpected(expected));
            }
            return Ok(expr);
        }
        self.condition(pos)
    }

    fn condition(&mut self, pos: Position) -> Result<Expr, FilterError> {
        let Some(field) = self.token(identifier) else {
            return Err(self.unexpected(EXPECTED_OPERAND));
        };
        if is_keyword(field) {
            return Err(FilterError::new(
                FilterErrorKind::Syntax,
                pos,
                format!("unexpected keyword `{field}`"),
            )
            .with_expected(EXPECTED_OPERAND));
        }
        self.count_node(pos)?;
        let field = Spanned {
            node: field.to_string(),
            pos,
        };
        self.skip_ws();
        let op_pos = self.pos();
        let Some(op) = self.token(operator) else {
            // `field not <something>`: the user meant `not in`.
            if self.token(keyword("not")).is_some() {
                self.skip_ws();
                return Err(self.unexpected("`in` after `not`"));
            }
            return Err(self.unexpected(EXPECTED_OPERATOR));
        };
        let op = Spanned {
            node: op,
            pos: op_pos,
        };
        let operand = match op.node {
            Operator::In | Operator::NotIn => Operand::List(self.list()?),
            _ => Operand::Single(self.literal()?),
        };
        Ok(Expr::Condition(Condition { field, op, operand }))
    }

    fn list(&mut self) -> Result<Vec<Spanned<Literal>>, FilterError> {
        if self.token(char('(')).is_none() {
            return Err(self.unexpected("`(` starting a list of values"));
        }
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            let item_pos = self.pos();
            let item = self.literal()?;
            if items.len() >= self.limits.max_in_list {
                return Err(FilterError::new(
                    FilterErrorKind::InListTooLarge,
                    item_pos,
                    format!("`in` list has more than {} values", self.limits.max_in_list),
                ));
            }
            items.push(item);
            if self.token(char(',')).is_some() {
                continue;
            }
            if self.token(char(')')).is_some() {
                return Ok(items);
            }
            return Err(self.unexpected("`,` or a closing `)`"));
        }
    }

    fn literal(&mut self) -> Result<Spanned<Literal>, FilterError> {
        self.skip_ws();
        let pos = self.pos();
        let spanned = |node| Spanned { node, pos };

        if self.rest.starts_with('"') {
            return match string_literal(self.rest) {
                Ok((rest, s)) => {
                    self.rest = rest;
                    Ok(spanned(Literal::String(s)))
                }
                Err(StringError::Unterminated) => {
                    Err(
                        FilterError::new(FilterErrorKind::Syntax, pos, "unterminated string")
                            .with_expected("a closing `\"`"),
                    )
                }
                Err(StringError::BadEscape { offset, message }) => Err(FilterError::new(
                    FilterErrorKind::InvalidLiteral,
                    Position::at(self.src, pos.offset + offset),
                    message,
                )),
            };
        }
        if let Some(text) = self.token(number) {
            if self
                .rest
                .starts_with(|c: char| is_ident_char(c) || c == '.')
            {
                let (_, tail) = take_while1::<_, &str, ()>(|c: char| is_ident_char(c) || c == '.')
                    .parse(self.rest)
                    .unwrap_or(("", ""));
                return Err(FilterError::new(
                    FilterErrorKind::InvalidLiteral,
                    pos,
                    format!("invalid number `{}`", truncate(&format!("{text}{tail}"))),
                ));
            }
            return number_literal(text, pos).map(spanned);
        }
        if let Some(b) = self.token(boolean) {
            return Ok(spanned(Literal::Boolean(b)));
        }
        let expected = match identifier(self.rest) {
            Ok(_) => "a string, number or boolean (strings are written in double quotes)",
            Err(_) => EXPECTED_LITERAL,
        };
        Err(self.unexpected(expected))
    }
}

fn number_literal(text: &str, pos: Position) -> Result<Literal, FilterError> {
    let is_float = text.contains(['.', 'e', 'E']);
    if is_float {
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Literal::Float(f)),
            _ => Err(FilterError::new(
                FilterErrorKind::InvalidLiteral,
                pos,
                format!("number `{}` is too large for a float", truncate(text)),
            )),
        }
    } else {
        text.parse::<i64>().map(Literal::Integer).map_err(|_| {
            FilterError::new(
                FilterErrorKind::InvalidLiteral,
                pos,
                format!(
                    "integer `{}` is out of range ({} to {})",
                    truncate(text),
                    i64::MIN,
                    i64::MAX
                ),
            )
        })
    }
}

/// "unexpected `word`" for the token at the start of `rest`, kept short so
/// one bad filter cannot produce a huge error message.
fn describe_found(rest: &str) -> String {
    if rest.is_empty() {
        return "unexpected end of input".to_string();
    }
    if rest.starts_with('"') {
        return "unexpected string".to_string();
    }
    let word = match take_while1::<_, &str, ()>(is_ident_char).parse(rest) {
        Ok((_, w)) => w,
        Err(_) => rest
            .char_indices()
            .nth(1)
            .and_then(|(i, _)| rest.get(..i))
            .unwrap_or(rest),
    };
    if is_keyword(word) {
        return format!("unexpected keyword `{word}`");
    }
    format!("unexpected `{}`", truncate(word).escape_default())
}

fn truncate(s: &str) -> String {
    const MAX: usize = 32;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or("")),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
