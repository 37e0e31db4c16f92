//! Turns Arrow record batches into JSON rows, the one representation every
//! source hands to the job runner, and converts timestamps between Arrow units
//! and the microseconds the filter language uses.
//!
//! A row is encoded to JSON text once, here, straight from the Arrow columns:
//! chunks and polls then only copy text. Building a `serde_json::Map` per row
//! and serialising it later cost two allocations per cell and a second pass.

use std::fmt::Write as _;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};

use super::SourceError;
use crate::model::{Row, push_json_str as push_str};

fn push_float(out: &mut String, v: f64) {
    // JSON has no NaN/∞; null is the honest rendering of "no number".
    // serde_json's own formatting, so every source writes a float alike.
    match serde_json::Number::from_f64(v) {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push_str("null"),
    }
}

/// Converts a timestamp in `unit` to µs, flooring sub-µs parts (so a
/// nanosecond value belongs to the microsecond it falls in). `None` on overflow.
pub(crate) fn to_micros(v: i64, unit: TimeUnit) -> Option<i64> {
    match unit {
        TimeUnit::Second => v.checked_mul(1_000_000),
        TimeUnit::Millisecond => v.checked_mul(1_000),
        TimeUnit::Microsecond => Some(v),
        TimeUnit::Nanosecond => Some(v.div_euclid(1_000)),
    }
}

/// RFC 3339 UTC with exactly six fractional digits, e.g. `2026-11-01T12:00:00.000000Z`.
pub(crate) fn format_micros(us: i64) -> Option<String> {
    // Not `format("…")`: that parses its pattern on every call, and a result
    // formats one of these per row.
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// Appends one column's cells to every row's text, prefixed by `key` (the
/// `{"name":` or `,"name":` that precedes the value). Column by column, so
/// the type is dispatched once per column and the column stays in cache.
fn push_column(a: &ArrayRef, key: &str, rows: &mut [String]) -> Result<(), SourceError> {
    // Every cell: the key, then null or the value `put` writes.
    fn each(a: &ArrayRef, key: &str, rows: &mut [String], mut put: impl FnMut(&mut String, usize)) {
        for (i, out) in rows.iter_mut().enumerate() {
            out.push_str(key);
            if a.is_null(i) {
                out.push_str("null");
            } else {
                put(out, i);
            }
        }
    }
    fn int<T: ArrowPrimitiveType>(a: &ArrayRef, key: &str, rows: &mut [String])
    where
        T::Native: std::fmt::Display,
    {
        let values = a.as_primitive::<T>();
        each(a, key, rows, |out, i| {
            let _ = write!(out, "{}", values.value(i));
        });
    }
    fn time<T: ArrowPrimitiveType<Native = i64>>(
        a: &ArrayRef,
        unit: TimeUnit,
        key: &str,
        rows: &mut [String],
    ) -> Result<(), SourceError> {
        let values = a.as_primitive::<T>();
        let mut bad = None;
        each(a, key, rows, |out, i| {
            let raw = values.value(i);
            match to_micros(raw, unit).and_then(format_micros) {
                Some(text) => {
                    out.push('"');
                    out.push_str(&text);
                    out.push('"');
                }
                None => {
                    bad.get_or_insert(raw);
                    out.push_str("null");
                }
            }
        });
        match bad {
            None => Ok(()),
            Some(raw) => Err(SourceError::Internal(format!(
                "timestamp {raw} ({unit:?}) is outside the representable date range"
            ))),
        }
    }
    match a.data_type() {
        DataType::Utf8 => {
            let v = a.as_string::<i32>();
            each(a, key, rows, |out, i| push_str(out, v.value(i)));
        }
        DataType::LargeUtf8 => {
            let v = a.as_string::<i64>();
            each(a, key, rows, |out, i| push_str(out, v.value(i)));
        }
        DataType::Utf8View => {
            let v = a.as_string_view();
            each(a, key, rows, |out, i| push_str(out, v.value(i)));
        }
        DataType::Boolean => {
            let v = a.as_boolean();
            each(a, key, rows, |out, i| {
                out.push_str(if v.value(i) { "true" } else { "false" })
            });
        }
        DataType::Int8 => int::<Int8Type>(a, key, rows),
        DataType::Int16 => int::<Int16Type>(a, key, rows),
        DataType::Int32 => int::<Int32Type>(a, key, rows),
        DataType::Int64 => int::<Int64Type>(a, key, rows),
        DataType::UInt8 => int::<UInt8Type>(a, key, rows),
        DataType::UInt16 => int::<UInt16Type>(a, key, rows),
        DataType::UInt32 => int::<UInt32Type>(a, key, rows),
        DataType::UInt64 => int::<UInt64Type>(a, key, rows),
        DataType::Float32 => {
            let v = a.as_primitive::<Float32Type>();
            each(a, key, rows, |out, i| {
                push_float(out, f64::from(v.value(i)))
            });
        }
        DataType::Float64 => {
            let v = a.as_primitive::<Float64Type>();
            each(a, key, rows, |out, i| push_float(out, v.value(i)));
        }
        DataType::Timestamp(unit, _) => match unit {
            TimeUnit::Second => time::<TimestampSecondType>(a, *unit, key, rows)?,
            TimeUnit::Millisecond => time::<TimestampMillisecondType>(a, *unit, key, rows)?,
            TimeUnit::Microsecond => time::<TimestampMicrosecondType>(a, *unit, key, rows)?,
            TimeUnit::Nanosecond => time::<TimestampNanosecondType>(a, *unit, key, rows)?,
        },
        // The array's type was checked when the schema was mapped, but batches
        // come from the engine, so an unexpected type is an error, not a panic.
        other => {
            return Err(SourceError::Internal(format!(
                "unexpected column type {other} in query result"
            )));
        }
    }
    Ok(())
}

/// Bytes reserved per row up front: a typical event row (ten fields, a
/// message) fits, so most rows never reallocate while columns are appended.
const ROW_CAPACITY: usize = 384;

/// Converts every row of `batch` into a [`Row`], keeping the batch's column order.
pub(crate) fn batch_to_rows(batch: &RecordBatch) -> Result<Vec<Row>, SourceError> {
    let schema = batch.schema();
    let mut rows: Vec<String> = (0..batch.num_rows())
        .map(|_| String::with_capacity(ROW_CAPACITY))
        .collect();
    let mut key = String::new();
    for (k, (field, col)) in schema.fields().iter().zip(batch.columns()).enumerate() {
        key.clear();
        key.push(if k == 0 { '{' } else { ',' });
        push_str(&mut key, field.name());
        key.push(':');
        push_column(col, &key, &mut rows)?;
    }
    Ok(rows.into_iter().map(Row::from_open_object).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use serde_json::Value as Json;
    use std::sync::Arc;

    #[test]
    fn formats_with_six_digits_and_floors_nanos() {
        assert_eq!(
            format_micros(1_793_534_400_000_000).as_deref(),
            Some("2026-11-01T12:00:00.000000Z")
        );
        assert_eq!(to_micros(-1, TimeUnit::Nanosecond), Some(-1));
        assert_eq!(to_micros(1_999, TimeUnit::Nanosecond), Some(1));
        assert_eq!(to_micros(i64::MAX, TimeUnit::Second), None);
    }

    /// The hand-written encoder must write what serde_json writes for the
    /// same values, in column order: escapes, floats, NaN as null, nulls.
    #[test]
    fn rows_are_the_json_serde_would_write_in_column_order() {
        let texts = [
            "plain",
            "quote \" back \\ slash",
            "ctl \n\t\r\u{8}\u{c}\u{1}\u{1f}",
            "ünï 😀",
            "",
        ];
        let floats = [1.0, 0.1, -2.5e-300, f64::NAN, 1e21];
        let schema = Arc::new(Schema::new(vec![
            Field::new("z", DataType::Utf8, true),
            Field::new("a", DataType::Float64, true),
            Field::new("m", DataType::Int64, true),
            Field::new("b", DataType::Boolean, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(
                    texts.iter().map(|s| Some(*s)).collect::<Vec<_>>(),
                )),
                Arc::new(Float64Array::from(floats.to_vec())),
                Arc::new(Int64Array::from(vec![
                    Some(i64::MIN),
                    None,
                    Some(0),
                    Some(-1),
                    Some(i64::MAX),
                ])),
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    Some(false),
                    None,
                    Some(true),
                    None,
                ])),
            ],
        )
        .unwrap();
        let rows = batch_to_rows(&batch).unwrap();
        assert_eq!(rows.len(), 5);
        for (i, row) in rows.iter().enumerate() {
            let int = [Some(i64::MIN), None, Some(0), Some(-1), Some(i64::MAX)][i];
            let boolean = [Some(true), Some(false), None, Some(true), None][i];
            let want = format!(
                "{{\"z\":{},\"a\":{},\"m\":{},\"b\":{}}}",
                serde_json::to_string(texts[i]).unwrap(),
                serde_json::to_string(&serde_json::Number::from_f64(floats[i])).unwrap(),
                serde_json::to_string(&int).unwrap(),
                serde_json::to_string(&boolean).unwrap(),
            );
            assert_eq!(row.as_json(), want);
            assert_eq!(row.fields()["z"], texts[i]);
            let pairs: Vec<(String, Json)> = row.fields().into_iter().collect();
            let again = Row::from_pairs(
                ["z", "a", "m", "b"]
                    .iter()
                    .map(|k| (*k, &pairs.iter().find(|(n, _)| n == k).unwrap().1)),
            );
            assert_eq!(again, *row, "from_pairs writes the same text");
        }
        assert_eq!(Row::from_pairs([]).as_json(), "{}");
    }
}
