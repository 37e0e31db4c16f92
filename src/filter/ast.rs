//! The parsed, untyped filter: exactly what the user wrote, with the position
//! of every token that validation may need to blame. Nothing here knows about
//! a schema; `validate` turns this into a typed `Predicate`.

use crate::filter::predicate::CompareOp;

/// Where a token starts in the filter text.
///
/// `line` and `column` are 1-based and `column` counts Unicode characters,
/// matching `FilterError`; `offset` is the byte offset, for tools that slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Position {
    pub offset: usize,
    pub line: u32,
    pub column: u32,
}

impl Position {
    /// The position of byte `offset` in `src`. An offset past the end or
    /// inside a character is clamped rather than trusted, so this never panics.
    pub fn at(src: &str, offset: usize) -> Position {
        let mut offset = offset.min(src.len());
        while !src.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = src.get(..offset).unwrap_or("");
        let mut line: u32 = 1;
        let mut column: u32 = 1;
        for c in before.chars() {
            if c == '\n' {
                line = line.saturating_add(1);
                column = 1;
            } else {
                column = column.saturating_add(1);
            }
        }
        Position {
            offset,
            line,
            column,
        }
    }
}

/// A value together with the position of its first character.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    pub node: T,
    pub pos: Position,
}

/// A boolean expression. `And`/`Or` are n-ary so that long chains stay flat
/// (no depth cost); parentheses leave no node of their own but do nest, e.g.
/// `(a = 1 and b = 2) and c = 3` is `And[And[a, b], c]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Never has exactly one operand; `And(vec![])` is the empty filter.
    And(Vec<Expr>),
    /// Always has at least two operands.
    Or(Vec<Expr>),
    /// `pos` is the position of the `not` keyword.
    Not {
        pos: Position,
        expr: Box<Expr>,
    },
    Condition(Condition),
}

/// `field <operator> <operand>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: Spanned<String>,
    pub op: Spanned<Operator>,
    pub operand: Operand,
}

/// Every operator of the language; which ones a field accepts depends on its
/// type and is checked by validation, not by the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    Compare(CompareOp),
    In,
    NotIn,
    /// `~`
    Matches,
    /// `!~`
    NotMatches,
    Contains,
}

impl Operator {
    /// The operator as written in the filter language.
    pub fn as_str(&self) -> &'static str {
        match self {
            Operator::Compare(op) => compare_op_str(*op),
            Operator::In => "in",
            Operator::NotIn => "not in",
            Operator::Matches => "~",
            Operator::NotMatches => "!~",
            Operator::Contains => "contains",
        }
    }
}

/// The comparison operator as written in the filter language.
pub fn compare_op_str(op: CompareOp) -> &'static str {
    match op {
        CompareOp::Eq => "=",
        CompareOp::Ne => "!=",
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
    }
}

/// The right-hand side of a condition: one literal, or the list of `in`.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Single(Spanned<Literal>),
    List(Vec<Spanned<Literal>>),
}

/// A literal as written, before it is typed to a field. Times are still
/// strings here: only the schema says a string is meant as a time.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    String(String),
    Integer(i64),
    /// Always finite; the parser rejects literals that overflow `f64`.
    Float(f64),
    Boolean(bool),
}

impl Literal {
    /// What kind of literal this is, for error messages ("a string").
    pub fn describe(&self) -> &'static str {
        match self {
            Literal::String(_) => "a string",
            Literal::Integer(_) => "an integer",
            Literal::Float(_) => "a float",
            Literal::Boolean(_) => "a boolean",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_counts_characters_not_bytes() {
        let src = "é = 1\nab ü x";
        assert_eq!(
            Position::at(src, 0),
            Position {
                offset: 0,
                line: 1,
                column: 1
            }
        );
        // "é" is two bytes but one column.
        assert_eq!(Position::at(src, 2).column, 2);
        let x = src.find('x').unwrap_or(0);
        assert_eq!(
            (Position::at(src, x).line, Position::at(src, x).column),
            (2, 6)
        );
    }

    #[test]
    fn position_clamps_bad_offsets() {
        let src = "é";
        assert_eq!(Position::at(src, 1).offset, 0);
        assert_eq!(Position::at(src, 99).offset, 2);
    }
}
