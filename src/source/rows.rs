//! Turns Arrow record batches into JSON rows, the one representation every
//! source hands to the job runner, and converts timestamps between Arrow units
//! and the microseconds the filter language uses.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use serde_json::Value as Json;

use super::{Row, SourceError};

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

fn float(v: f64) -> Json {
    // JSON has no NaN/∞; null is the honest rendering of "no number".
    serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number)
}

/// Renders one cell; the array's type was checked when the schema was mapped,
/// but batches come from the engine, so an unexpected type is an error, not a panic.
fn cell(a: &ArrayRef, i: usize) -> Result<Json, SourceError> {
    if a.is_null(i) {
        return Ok(Json::Null);
    }
    Ok(match a.data_type() {
        DataType::Utf8 => Json::String(a.as_string::<i32>().value(i).to_owned()),
        DataType::LargeUtf8 => Json::String(a.as_string::<i64>().value(i).to_owned()),
        DataType::Utf8View => Json::String(a.as_string_view().value(i).to_owned()),
        DataType::Boolean => Json::Bool(a.as_boolean().value(i)),
        DataType::Int8 => a.as_primitive::<Int8Type>().value(i).into(),
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i).into(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).into(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).into(),
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(i).into(),
        DataType::UInt16 => a.as_primitive::<UInt16Type>().value(i).into(),
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(i).into(),
        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(i).into(),
        DataType::Float32 => float(f64::from(a.as_primitive::<Float32Type>().value(i))),
        DataType::Float64 => float(a.as_primitive::<Float64Type>().value(i)),
        DataType::Timestamp(unit, _) => {
            let raw = match unit {
                TimeUnit::Second => a.as_primitive::<TimestampSecondType>().value(i),
                TimeUnit::Millisecond => a.as_primitive::<TimestampMillisecondType>().value(i),
                TimeUnit::Microsecond => a.as_primitive::<TimestampMicrosecondType>().value(i),
                TimeUnit::Nanosecond => a.as_primitive::<TimestampNanosecondType>().value(i),
            };
            let text = to_micros(raw, *unit)
                .and_then(format_micros)
                .ok_or_else(|| {
                    SourceError::Engine(format!(
                        "timestamp {raw} ({unit:?}) is outside the representable date range"
                    ))
                })?;
            Json::String(text)
        }
        other => {
            return Err(SourceError::Engine(format!(
                "unexpected column type {other} in query result"
            )));
        }
    })
}

/// Converts every row of `batch` into a [`Row`], keeping the batch's column order.
pub(crate) fn batch_to_rows(batch: &RecordBatch) -> Result<Vec<Row>, SourceError> {
    let schema = batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut rows = vec![Row::new(); batch.num_rows()];
    // Column by column: each column's cells are read while it is in cache.
    for (name, col) in names.iter().zip(batch.columns()) {
        for (i, row) in rows.iter_mut().enumerate() {
            row.insert((*name).to_owned(), cell(col, i)?);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
