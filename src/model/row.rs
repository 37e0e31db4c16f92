//! A result row: the text of one JSON object, written once where the row is
//! read (see `source`) and only copied from then on.

use std::fmt::Write as _;

use serde_json::Value as Json;

/// One row of a result as the text of a JSON object, fields in the query's
/// column order. Time values are RFC 3339 UTC strings with microseconds
/// ("2026-11-01T12:00:00.000000Z"), integers/floats/bools JSON numbers/bools,
/// nulls null. Two rows are equal when their text is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(String);

impl Row {
    /// A row of named values, in the given order (sources that read cells one
    /// by one, and tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a Json)>) -> Row {
        let mut text = String::with_capacity(128);
        for (name, value) in pairs {
            text.push(if text.is_empty() { '{' } else { ',' });
            push_str(&mut text, name);
            text.push(':');
            push_value(&mut text, value);
        }
        close_object(&mut text);
        Row(text)
    }

    /// A row from an object's opening and members as a source wrote them
    /// with [`push_str`] (`{"a":1,"b":"x"`, or nothing for a row of no
    /// fields): closes the object.
    pub fn from_open_object(mut text: String) -> Row {
        close_object(&mut text);
        Row(text)
    }

    /// The row's JSON object text.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The row's fields, parsed: for readers that inspect values (tests,
    /// tools); the service itself only copies the text.
    pub fn fields(&self) -> serde_json::Map<String, Json> {
        // The text was written by this module as an object, so it parses.
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

fn close_object(text: &mut String) {
    if text.is_empty() {
        text.push('{');
    }
    text.push('}');
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // Escaped bytes are ASCII, so `start..i` are whole characters.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends a JSON value; writing to a `String` cannot fail.
fn push_value(out: &mut String, value: &Json) {
    match value {
        Json::String(s) => push_str(out, s),
        // serde_json's compact text: what `push_float` and the integer
        // columns write for the same numbers.
        other => {
            let _ = write!(out, "{other}");
        }
    }
}
