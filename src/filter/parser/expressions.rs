//! The recursive descent over tokens: `or` / `and` chains, `not`,
//! parentheses and conditions, counting depth and nodes as it goes.

use nom::{
    Parser,
    bytes::complete::take_while1,
    character::complete::{char, multispace0},
};

use crate::filter::Limits;
use crate::filter::ast::{Condition, Expr, Literal, Operand, Operator, Position, Spanned};
use crate::filter::error::{FilterError, FilterErrorKind};

use super::literals::{StringError, number_literal, string_literal};
use super::tokens::{
    boolean, describe_found, identifier, is_ident_char, is_keyword, keyword, number, operator,
    truncate,
};

const EXPECTED_OPERATOR: &str =
    "a comparison operator (=, !=, <, <=, >, >=), `in`, `not in`, `~`, `!~` or `contains`";
const EXPECTED_LITERAL: &str = "a string, number or boolean";
const EXPECTED_OPERAND: &str = "a field name, `not` or `(`";

/// The whole filter after the length check: whitespace-only text parses to
/// `Expr::And(vec![])`; anything left after the expression is an error.
pub(super) fn filter(text: &str, limits: &Limits) -> Result<Expr, FilterError> {
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
