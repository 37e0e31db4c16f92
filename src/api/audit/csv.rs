//! Audit rows as CSV (RFC 4180): a header line, then one line per row, in
//! the JSON's field names and order. Written by hand: a handful of columns
//! does not need a CSV library.

use crate::audit::AuditEntry;

const HEADER: [&str; 21] = [
    "submissionId",
    "jobId",
    "fingerprint",
    "user",
    "tenant",
    "offset",
    "filter",
    "canonicalFilter",
    "timeFrom",
    "timeTo",
    "deduplicatedFrom",
    "status",
    "rows",
    "chunks",
    "truncated",
    "error",
    "submittedAt",
    "startedAt",
    "firstChunkAt",
    "finishedAt",
    "expiredAt",
];

/// The CSV document of one page of rows.
pub fn page(entries: &[AuditEntry]) -> String {
    let mut out = String::with_capacity(256 * (entries.len() + 1));
    line(&mut out, HEADER.iter().map(|h| h.to_string()));
    for e in entries {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        line(
            &mut out,
            [
                e.submission_id.clone(),
                e.job_id.clone(),
                e.fingerprint.clone(),
                e.user_id.clone(),
                e.tenant.clone(),
                e.result_offset.to_string(),
                e.filter_text.clone(),
                e.canonical_filter.clone(),
                e.time_from.clone(),
                e.time_to.clone(),
                text(&e.deduplicated_from),
                e.status.clone(),
                e.row_count.to_string(),
                e.chunk_count.to_string(),
                e.truncated.to_string(),
                text(&e.error),
                e.submitted_at.clone(),
                text(&e.started_at),
                text(&e.first_chunk_at),
                text(&e.finished_at),
                text(&e.expired_at),
            ],
        );
    }
    out
}

fn line(out: &mut String, fields: impl IntoIterator<Item = String>) {
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        cell(out, &field);
    }
    out.push_str("\r\n");
}

/// One field, quoted when it has to be. A field a spreadsheet would run as
/// a formula (filters and errors are the users' text) gets a leading `'`,
/// as OWASP advises for CSV meant to be opened in one.
fn cell(out: &mut String, field: &str) {
    let formula = field.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quoted = formula || field.contains([',', '"', '\n', '\r']);
    if quoted {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for c in field.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quoted {
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(field: &str) -> String {
        let mut out = String::new();
        cell(&mut out, field);
        out
    }

    #[test]
    fn fields_are_quoted_only_when_needed() {
        assert_eq!(one("plain"), "plain");
        assert_eq!(one(""), "");
        assert_eq!(one("a,b"), "\"a,b\"");
        assert_eq!(one(r#"path ~ "^/api""#), r#""path ~ ""^/api""""#);
        assert_eq!(one("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn a_field_a_spreadsheet_would_evaluate_is_defused() {
        assert_eq!(one("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(one("-1"), "\"'-1\"");
    }

    #[test]
    fn the_header_names_every_column_of_a_row() {
        let text = page(&[]);
        assert_eq!(text.trim_end().split(',').count(), HEADER.len());
    }
}
