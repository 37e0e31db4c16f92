//! Literal values: double-quoted strings with their escapes, and numbers
//! typed as integers or floats.

use nom::{Parser, character::complete::char};

use crate::filter::ast::{Literal, Position};
use crate::filter::error::{FilterError, FilterErrorKind};

use super::tokens::truncate;

/// Why a string literal could not be read; offsets are relative to the input
/// handed to `string_literal`.
pub(super) enum StringError {
    Unterminated,
    BadEscape { offset: usize, message: String },
}

/// A double-quoted string with escapes `\" \\ \n \t \r \u{X..}`. Raw newlines
/// are allowed inside: long regexes are easier to read that way, and the
/// canonical printer escapes them anyway.
pub(super) fn string_literal(i: &str) -> Result<(&str, String), StringError> {
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

pub(super) fn number_literal(text: &str, pos: Position) -> Result<Literal, FilterError> {
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
