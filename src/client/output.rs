//! Rows printed as they arrive: JSON lines (each row exactly as the server
//! wrote it, so in its fields' order), CSV (RFC 4180: a header line with the
//! first row's fields, CRLF line ends, a field quoted only when it holds a
//! comma, a quote or a line break, no spreadsheet defusing: this output is
//! data for programs), or a table with aligned columns for a terminal, which
//! waits for the last row to know the widths.

use std::fmt;
use std::io::{self, Write};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
    Table,
}

/// A row's fields in the order the server wrote them (`serde_json::Value`
/// would sort them).
#[derive(Debug, PartialEq)]
pub struct OrderedRow(pub Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedRow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<OrderedRow, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = OrderedRow;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a row (a JSON object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedRow, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    fields.push(entry);
                }
                Ok(OrderedRow(fields))
            }
        }
        d.deserialize_map(Fields)
    }
}

/// The text of one value in a CSV or table cell: a string as itself, null
/// as nothing, anything else as JSON.
pub fn cell_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Writes rows to `out` in one format.
pub struct RowWriter<W: Write> {
    out: W,
    format: Format,
    /// The columns, from the first row (CSV, table).
    header: Option<Vec<String>>,
    /// The table's cells, held until `finish`.
    table: Vec<Vec<String>>,
}

impl<W: Write> RowWriter<W> {
    pub fn new(out: W, format: Format) -> RowWriter<W> {
        RowWriter {
            out,
            format,
            header: None,
            table: Vec::new(),
        }
    }

    /// Writes a chunk's rows and flushes them, so a reader downstream sees
    /// them now.
    pub fn write_rows(&mut self, rows: &[Box<RawValue>]) -> io::Result<()> {
        for raw in rows {
            if self.format == Format::Jsonl {
                writeln!(self.out, "{}", raw.get())?;
                continue;
            }
            let row: OrderedRow = serde_json::from_str(raw.get()).map_err(io::Error::other)?;
            let first = self.header.is_none();
            let header = self
                .header
                .get_or_insert_with(|| row.0.iter().map(|(name, _)| name.clone()).collect());
            // Rows of one job share their fields; look each column up by
            // name all the same, so a missing one is an empty cell.
            let cells: Vec<String> = header
                .iter()
                .map(|name| {
                    let value = row.0.iter().find(|(n, _)| n == name).map(|(_, v)| v);
                    value.map(cell_text).unwrap_or_default()
                })
                .collect();
            if self.format == Format::Csv {
                if first {
                    csv_line(&mut self.out, header)?;
                }
                csv_line(&mut self.out, &cells)?;
            } else {
                self.table.push(cells);
            }
        }
        self.out.flush()
    }

    /// Ends the output: the table is drawn now.
    pub fn finish(mut self) -> io::Result<()> {
        if self.format == Format::Table
            && let Some(header) = self.header.take()
        {
            let mut lines = vec![header];
            lines.append(&mut self.table);
            let rule: Vec<String> = widths(&lines).iter().map(|w| "-".repeat(*w)).collect();
            lines.insert(1, rule);
            write_table(&mut self.out, &lines)?;
        }
        self.out.flush()
    }
}

/// One CSV record (RFC 4180).
fn csv_line(out: &mut impl Write, cells: &[String]) -> io::Result<()> {
    let quoted: Vec<String> = cells
        .iter()
        .map(|c| match c.contains([',', '"', '\r', '\n']) {
            true => format!("\"{}\"", c.replace('"', "\"\"")),
            false => c.clone(),
        })
        .collect();
    write!(out, "{}\r\n", quoted.join(","))
}

/// Each column's width in characters.
fn widths(lines: &[Vec<String>]) -> Vec<usize> {
    let mut widths = Vec::new();
    for line in lines {
        widths.resize(widths.len().max(line.len()), 0);
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    widths
}

/// Columns left-aligned, two spaces apart, with no trailing blanks; a line
/// break inside a cell is shown as `\n`, so each row stays one line.
pub fn write_table(out: &mut impl Write, lines: &[Vec<String>]) -> io::Result<()> {
    let lines: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            l.iter()
                .map(|c| c.replace('\r', "\\r").replace('\n', "\\n"))
                .collect()
        })
        .collect();
    let widths = widths(&lines);
    for line in &lines {
        let mut text = String::new();
        for (n, (cell, width)) in line.iter().zip(&widths).enumerate() {
            if n > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            text.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
        }
        writeln!(out, "{}", text.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(rows: &[&str]) -> Vec<Box<RawValue>> {
        rows.iter()
            .map(|r| RawValue::from_string((*r).to_owned()).unwrap())
            .collect()
    }

    fn written(format: Format, rows: &[&str]) -> String {
        let mut out = Vec::new();
        let mut writer = RowWriter::new(&mut out, format);
        writer.write_rows(&raw(rows)).unwrap();
        writer.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    const ROWS: [&str; 2] = [
        r#"{"ts":"2026-12-01T00:00:00Z","status":503,"message":"said \"no\", twice","ok":null}"#,
        r#"{"ts":"2026-12-02T00:00:00Z","status":200,"message":"line\nbreak","ok":true}"#,
    ];

    #[test]
    fn jsonl_is_each_row_as_the_server_wrote_it() {
        assert_eq!(
            written(Format::Jsonl, &ROWS),
            format!("{}\n{}\n", ROWS[0], ROWS[1])
        );
    }

    #[test]
    fn csv_keeps_the_field_order_and_quotes_only_what_needs_it() {
        assert_eq!(
            written(Format::Csv, &ROWS),
            "ts,status,message,ok\r\n\
             2026-12-01T00:00:00Z,503,\"said \"\"no\"\", twice\",\r\n\
             2026-12-02T00:00:00Z,200,\"line\nbreak\",true\r\n"
        );
    }

    #[test]
    fn a_table_aligns_its_columns() {
        assert_eq!(
            written(Format::Table, &ROWS),
            "ts                    status  message           ok\n\
             --------------------  ------  ----------------  ----\n\
             2026-12-01T00:00:00Z  503     said \"no\", twice\n\
             2026-12-02T00:00:00Z  200     line\\nbreak       true\n"
        );
    }

    #[test]
    fn no_rows_print_nothing() {
        for format in [Format::Jsonl, Format::Csv, Format::Table] {
            assert_eq!(written(format, &[]), "");
        }
    }
}
