//! The unknown-field error, with a "did you mean" when a known field is a
//! typo away.

use crate::filter::ast::Spanned;
use crate::filter::error::{FilterError, FilterErrorKind};
use crate::filter::schema::Schema;

pub(super) fn unknown_field(field: &Spanned<String>, schema: &Schema) -> FilterError {
    let name = &field.node;
    let suggestion = schema
        .field_names()
        .map(|known| (edit_distance(name, known), known))
        .filter(|(d, known)| *d <= 2 && *d < name.chars().count().max(known.chars().count()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, known)| known);
    let message = match suggestion {
        Some(s) => format!("unknown field `{name}` (did you mean `{s}`?)"),
        None => format!("unknown field `{name}`"),
    };
    let err = FilterError::new(FilterErrorKind::UnknownField, field.pos, message);
    let names: Vec<String> = schema.field_names().map(|n| format!("`{n}`")).collect();
    match names.len() {
        0 => err.with_expected("no field at all (this source has none)"),
        1 => err.with_expected(format!("the field {}", names.join(""))),
        _ => err.with_expected(format!("one of the fields {}", names.join(", "))),
    }
}

/// Levenshtein distance over characters; names are short, so the quadratic
/// table is fine.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur.clear();
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev.last().copied().unwrap_or(0)
}
