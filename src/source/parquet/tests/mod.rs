//! The Parquet source answered like a client would ask it: schema and
//! identity, order, ranges, paging, predicates against an independent
//! evaluation, locations and errors. Each test opens its own source on its
//! own query runtime.

mod locations;
mod predicates;
mod queries;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{
    BooleanArray, Int32Array, ListArray, RecordBatch, StringArray, TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema as ArrowSchema, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use futures::TryStreamExt;
use serde_json::Value as Json;

use super::ParquetSource;
use crate::demo;
use crate::filter::{CompareOp, FieldType, Predicate, Schema, Value};
use crate::source::{QueryRuntime, QuerySource, Row, SourceError, SourceQuery};

/// Opens a source on a query runtime of its own.
async fn open(location: &str, time_column: &str) -> Result<ParquetSource, SourceError> {
    let runtime = QueryRuntime::new(2).expect("query runtime threads");
    ParquetSource::open(location, time_column, &runtime).await
}

const DAYS: u32 = 3;
const ROWS: u32 = 500;

fn end_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 1).unwrap()
}

fn gen_demo(dir: &Path) {
    demo::generate(dir, end_day(), DAYS, ROWS, demo::DEMO_SEED, &|_, _| {}).unwrap();
}

async fn demo_source() -> (tempfile::TempDir, ParquetSource) {
    let dir = tempfile::tempdir().unwrap();
    gen_demo(dir.path());
    let src = open(dir.path().to_str().unwrap(), "ts").await.unwrap();
    (dir, src)
}

fn query(predicate: Predicate) -> SourceQuery {
    SourceQuery {
        predicate,
        ..SourceQuery::everything()
    }
}

fn all() -> Predicate {
    Predicate::And(vec![])
}

/// A parsed row: tests look values up by name.
type Fields = serde_json::Map<String, Json>;

async fn run(src: &ParquetSource, q: SourceQuery) -> Vec<Fields> {
    let rows: Vec<Row> = src.query(q).await.unwrap().try_collect().await.unwrap();
    rows.iter().map(Row::fields).collect()
}

fn micros(v: &Json) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .timestamp_micros()
}

/// Independent evaluation of a predicate, SQL three-valued: `None` = unknown.
fn eval(p: &Predicate, row: &Fields, schema: &Schema) -> Option<bool> {
    use std::cmp::Ordering;
    let cmp = |field: &str, v: &Value| -> Option<Ordering> {
        let x = row.get(field)?;
        if x.is_null() {
            return None;
        }
        match (schema.field_type(field)?, v) {
            (FieldType::String, Value::String(s)) => Some(x.as_str()?.cmp(s.as_str())),
            (FieldType::Integer, Value::Integer(i)) => Some(x.as_i64()?.cmp(i)),
            (FieldType::Float, Value::Float(f)) => x.as_f64()?.partial_cmp(f),
            (FieldType::Boolean, Value::Boolean(b)) => Some(x.as_bool()?.cmp(b)),
            (FieldType::Time, Value::Time(t)) => Some(micros(x).cmp(t)),
            _ => panic!("bad test predicate"),
        }
    };
    match p {
        Predicate::And(ps) => {
            let rs: Vec<_> = ps.iter().map(|p| eval(p, row, schema)).collect();
            if rs.contains(&Some(false)) {
                Some(false)
            } else if rs.contains(&None) {
                None
            } else {
                Some(true)
            }
        }
        Predicate::Or(ps) => {
            let rs: Vec<_> = ps.iter().map(|p| eval(p, row, schema)).collect();
            if rs.contains(&Some(true)) {
                Some(true)
            } else if rs.contains(&None) {
                None
            } else {
                Some(false)
            }
        }
        Predicate::Not(p) => eval(p, row, schema).map(|b| !b),
        Predicate::Compare { field, op, value } => {
            let o = cmp(field, value)?;
            Some(match op {
                CompareOp::Eq => o == Ordering::Equal,
                CompareOp::Ne => o != Ordering::Equal,
                CompareOp::Lt => o == Ordering::Less,
                CompareOp::Le => o != Ordering::Greater,
                CompareOp::Gt => o == Ordering::Greater,
                CompareOp::Ge => o != Ordering::Less,
            })
        }
        Predicate::In {
            field,
            negated,
            values,
        } => {
            let mut found = false;
            for v in values {
                found |= cmp(field, v)? == Ordering::Equal;
            }
            Some(found != *negated)
        }
        Predicate::Regex {
            field,
            negated,
            pattern,
        } => {
            let s = row.get(field)?.as_str()?;
            Some(regex::Regex::new(pattern).unwrap().is_match(s) != *negated)
        }
        Predicate::Contains { field, needle } => {
            Some(row.get(field)?.as_str()?.contains(needle.as_str()))
        }
    }
}

fn cmp(field: &str, op: CompareOp, value: Value) -> Predicate {
    Predicate::Compare {
        field: field.into(),
        op,
        value,
    }
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

fn sample_predicates(full: &[Fields]) -> Vec<Predicate> {
    let t = micros(&full[700]["ts"]);
    let t2 = micros(&full[20]["ts"]);
    vec![
        cmp("service", CompareOp::Eq, s("payments")),
        cmp("service", CompareOp::Ne, s("payments")),
        cmp("service", CompareOp::Lt, s("d")),
        cmp("status", CompareOp::Ge, Value::Integer(400)),
        cmp("status", CompareOp::Eq, Value::Integer(200)),
        cmp("bytes", CompareOp::Le, Value::Integer(1000)),
        cmp("latency_ms", CompareOp::Gt, Value::Float(100.0)),
        cmp("latency_ms", CompareOp::Le, Value::Float(20.5)),
        cmp("cached", CompareOp::Eq, Value::Boolean(true)),
        cmp("cached", CompareOp::Ne, Value::Boolean(true)),
        cmp("ts", CompareOp::Ge, Value::Time(t)),
        cmp("ts", CompareOp::Gt, Value::Time(t)),
        cmp("ts", CompareOp::Lt, Value::Time(t)),
        cmp("ts", CompareOp::Le, Value::Time(t)),
        cmp("ts", CompareOp::Eq, Value::Time(t)),
        cmp("ts", CompareOp::Ne, Value::Time(t)),
        Predicate::In {
            field: "status".into(),
            negated: false,
            values: vec![Value::Integer(404), Value::Integer(500)],
        },
        Predicate::In {
            field: "status".into(),
            negated: true,
            values: vec![Value::Integer(200), Value::Integer(201)],
        },
        Predicate::In {
            field: "region".into(),
            negated: false,
            values: vec![s("eu-west-1"), s("us-east-1")],
        },
        Predicate::In {
            field: "ts".into(),
            negated: false,
            values: vec![Value::Time(t2), Value::Time(t)],
        },
        Predicate::In {
            field: "ts".into(),
            negated: true,
            values: vec![Value::Time(t2), Value::Time(t)],
        },
        Predicate::Regex {
            field: "endpoint".into(),
            negated: false,
            pattern: r"^/api/v2/.*\d+$".into(),
        },
        Predicate::Regex {
            field: "message".into(),
            negated: true,
            pattern: "timeout|created".into(),
        },
        Predicate::Contains {
            field: "message".into(),
            needle: "% on node_".into(),
        },
        Predicate::Contains {
            field: "message".into(),
            needle: "quota_per".into(),
        },
        Predicate::Contains {
            field: "customer".into(),
            needle: "t_0".into(),
        },
        Predicate::Contains {
            field: "message".into(),
            needle: "e%e".into(),
        },
        Predicate::Not(Box::new(cmp("method", CompareOp::Eq, s("GET")))),
        Predicate::And(vec![
            cmp("service", CompareOp::Eq, s("search")),
            cmp("cached", CompareOp::Eq, Value::Boolean(true)),
        ]),
        Predicate::Or(vec![
            cmp("status", CompareOp::Eq, Value::Integer(504)),
            cmp("latency_ms", CompareOp::Gt, Value::Float(500.0)),
        ]),
        Predicate::Not(Box::new(Predicate::Or(vec![
            cmp("region", CompareOp::Eq, s("us-east-1")),
            Predicate::And(vec![]),
        ]))),
        all(),
    ]
}

/// A file with another schema: nullable strings (one upper-case name), an
/// Int32, nanosecond timestamps without zone, an unsupported list column,
/// and no statistics.
fn write_odd_file(path: &Path) {
    let schema = Arc::new(ArrowSchema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        Field::new("Name", DataType::Utf8, true),
        Field::new("n", DataType::Int32, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new_list("tags", Field::new_list_field(DataType::Int32, true), true),
    ]));
    let ts = TimestampNanosecondArray::from(vec![
        Some(1_000_000_500),
        Some(1_000_001_000),
        Some(1_000_001_999),
        Some(2_000_000_000),
        None,
    ]);
    let name = StringArray::from(vec![Some("a_1"), None, Some("b%2"), Some("a_1"), Some("c")]);
    let n = Int32Array::from(vec![Some(1), Some(2), None, Some(-4), Some(5)]);
    let ok = BooleanArray::from(vec![Some(true), None, Some(false), Some(true), Some(true)]);
    let tags = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1)]); 5]);
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(ts),
            Arc::new(name),
            Arc::new(n),
            Arc::new(ok),
            Arc::new(tags),
        ],
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_statistics_enabled(EnabledStatistics::None)
        .build();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}
