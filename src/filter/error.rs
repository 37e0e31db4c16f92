//! The one error type of the filter language. Every failure — syntax, typing
//! or a limit — carries a stable kind (whose slug API clients match on), the
//! position of the offending token and a message written for the person who
//! typed the filter, because these errors are returned verbatim as API errors.

use crate::filter::ast::Position;

/// What went wrong, coarse enough for clients to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterErrorKind {
    /// The text is not in the filter grammar.
    Syntax,
    /// A field name that the source's schema does not have.
    UnknownField,
    /// An operator or literal that does not fit the field's type.
    TypeMismatch,
    /// A literal that is well-formed but not a usable value: an integer out of
    /// range, a bad escape, a time that is not RFC 3339.
    InvalidLiteral,
    /// A regex that does not compile, or compiles too big.
    InvalidRegex,
    /// More characters than `Limits::max_length`.
    TooLong,
    /// Parentheses and `not` nested deeper than `Limits::max_depth`.
    TooDeep,
    /// More AST nodes than `Limits::max_nodes`.
    TooManyNodes,
    /// An `in` list longer than `Limits::max_in_list`.
    InListTooLarge,
}

impl FilterErrorKind {
    /// A stable identifier for API responses; never changes once published.
    pub fn slug(&self) -> &'static str {
        match self {
            FilterErrorKind::Syntax => "filter-syntax",
            FilterErrorKind::UnknownField => "unknown-field",
            FilterErrorKind::TypeMismatch => "type-mismatch",
            FilterErrorKind::InvalidLiteral => "invalid-literal",
            FilterErrorKind::InvalidRegex => "invalid-regex",
            FilterErrorKind::TooLong => "filter-too-long",
            FilterErrorKind::TooDeep => "filter-too-deep",
            FilterErrorKind::TooManyNodes => "filter-too-many-nodes",
            FilterErrorKind::InListTooLarge => "in-list-too-large",
        }
    }
}

impl std::fmt::Display for FilterErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.slug())
    }
}

/// A filter that was rejected, and where.
///
/// `line` and `column` are 1-based. `column` counts Unicode characters (not
/// bytes) from the start of the line, so it matches what an editor shows for
/// text like `service = "café" and ...`. Lines are separated by `\n`.
///
/// Displays as `{line}:{column}: {message}`, followed by `; expected
/// {expected}` when there is something specific that would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}{}", expected_suffix(.expected))]
pub struct FilterError {
    pub kind: FilterErrorKind,
    pub line: u32,
    pub column: u32,
    /// What would have been accepted at this position, in plain words.
    pub expected: Option<String>,
    pub message: String,
}

fn expected_suffix(expected: &Option<String>) -> String {
    match expected {
        Some(e) => format!("; expected {e}"),
        None => String::new(),
    }
}

impl FilterError {
    pub fn new(kind: FilterErrorKind, pos: Position, message: impl Into<String>) -> Self {
        FilterError {
            kind,
            line: pos.line,
            column: pos.column,
            expected: None,
            message: message.into(),
        }
    }

    pub fn with_expected(mut self, expected: impl Into<String>) -> Self {
        self.expected = Some(expected.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_expected() {
        let pos = Position {
            offset: 0,
            line: 2,
            column: 7,
        };
        let e = FilterError::new(FilterErrorKind::Syntax, pos, "unexpected end of input");
        assert_eq!(e.to_string(), "2:7: unexpected end of input");
        let e = e.with_expected("a closing `)`");
        assert_eq!(
            e.to_string(),
            "2:7: unexpected end of input; expected a closing `)`"
        );
    }

    #[test]
    fn slugs_are_distinct() {
        let kinds = [
            FilterErrorKind::Syntax,
            FilterErrorKind::UnknownField,
            FilterErrorKind::TypeMismatch,
            FilterErrorKind::InvalidLiteral,
            FilterErrorKind::InvalidRegex,
            FilterErrorKind::TooLong,
            FilterErrorKind::TooDeep,
            FilterErrorKind::TooManyNodes,
            FilterErrorKind::InListTooLarge,
        ];
        let mut slugs: Vec<_> = kinds.iter().map(|k| k.slug()).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), kinds.len());
    }
}
