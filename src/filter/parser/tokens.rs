//! Token recognisers (nom) and the short descriptions of what was found
//! where a token was expected.

use nom::{
    IResult, Parser,
    branch::alt,
    bytes::complete::{tag, tag_no_case, take_while, take_while1},
    character::complete::{char, digit1, multispace1, one_of, satisfy},
    combinator::{not, opt, recognize},
    sequence::terminated,
};

use crate::filter::ast::Operator;
use crate::filter::predicate::CompareOp;

/// Words that can never be field names, matched case-insensitively.
pub const KEYWORDS: [&str; 7] = ["and", "or", "not", "in", "contains", "true", "false"];

/// Token recognisers only need to say "not here"; the structural parser
/// knows what was expected and builds the real error.
pub(super) type TokResult<'a, T> = IResult<&'a str, T, ()>;

pub(super) fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

pub(super) fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

pub(super) fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

/// A keyword, case-insensitive, not followed by an identifier character (so
/// `order` is not `or` + `der`).
pub(super) fn keyword<'a>(kw: &'static str) -> impl Parser<&'a str, Output = &'a str, Error = ()> {
    terminated(tag_no_case(kw), not(satisfy(is_ident_char)))
}

pub(super) fn identifier(i: &str) -> TokResult<'_, &str> {
    recognize((satisfy(is_ident_start), take_while(is_ident_char))).parse(i)
}

pub(super) fn operator(i: &str) -> TokResult<'_, Operator> {
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
pub(super) fn number(i: &str) -> TokResult<'_, &str> {
    recognize((
        opt(char('-')),
        digit1,
        opt((char('.'), digit1)),
        opt((one_of("eE"), opt(one_of("+-")), digit1)),
    ))
    .parse(i)
}

pub(super) fn boolean(i: &str) -> TokResult<'_, bool> {
    alt((
        keyword("true").map(|_| true),
        keyword("false").map(|_| false),
    ))
    .parse(i)
}

/// "unexpected `word`" for the token at the start of `rest`, kept short so
/// one bad filter cannot produce a huge error message.
pub(super) fn describe_found(rest: &str) -> String {
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

pub(super) fn truncate(s: &str) -> String {
    const MAX: usize = 32;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or("")),
        None => s.to_string(),
    }
}
