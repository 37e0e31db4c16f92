//! Text → `ast::Expr`. Tokens (keywords, identifiers, operators, numbers) are
//! recognised with nom; the expression structure is a small recursive-descent
//! parser on top, because it must count nesting depth and nodes *while* it
//! descends (so `((((…` 100k deep fails with `TooDeep` instead of overflowing
//! the stack) and must report errors with positions and plain-words
//! expectations, which nom's generic errors cannot express.
//!
//! Layers, each using only those below it: `tokens` (nom recognisers and
//! the words of error messages), `literals` (strings with escapes, numbers),
//! `expressions` (the recursive descent with its limits).

mod expressions;
mod literals;
mod tokens;

#[cfg(test)]
mod tests;

use crate::filter::Limits;
use crate::filter::ast::{Expr, Position};
use crate::filter::error::{FilterError, FilterErrorKind};

pub use tokens::KEYWORDS;

/// Parse `text` into an AST, enforcing every limit except the regex size
/// (which needs the regex compiled, see `validate`).
///
/// Whitespace-only text parses to `Expr::And(vec![])`.
pub fn parse(text: &str, limits: &Limits) -> Result<Expr, FilterError> {
    check_length(text, limits)?;
    check_length(text, limits)?;
    expressions::filter(text, limits)
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
