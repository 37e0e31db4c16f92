//! The rows of several filters, compared with an independent computation:
//! the Parquet files read row by row with the `parquet` crate and filtered
//! in plain Rust.

use std::fs::File;

use chrono::{DateTime, Duration as Days, Utc};
use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use datafusion::parquet::record::Field;
use serde_json::{Map, Value, json};

use crate::support::*;

type Row = Map<String, Value>;
/// A filter and the same condition written in plain Rust.
type Case = (String, Box<dyn Fn(&Row) -> bool>);

fn all_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(dataset()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        for record in reader.get_row_iter(None).unwrap() {
            let record = record.unwrap();
            let mut row = Row::new();
            for (name, field) in record.get_column_iter() {
                let value = match field {
                    Field::Null => Value::Null,
                    Field::Bool(b) => json!(b),
                    Field::Long(n) => json!(n),
                    Field::Int(n) => json!(n),
                    Field::Double(x) => json!(x),
                    Field::Str(s) => json!(s),
                    Field::TimestampMicros(us) => {
                        json!(
                            DateTime::<Utc>::from_timestamp_micros(*us)
                                .unwrap()
                                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                        )
                    }
                    other => panic!("unexpected parquet field {other:?} in {name}"),
                };
                row.insert(name.clone(), value);
            }
            rows.push(row);
        }
    }
    rows
}

fn s<'a>(row: &'a Row, k: &str) -> &'a str {
    row[k].as_str().unwrap()
}
fn i(row: &Row, k: &str) -> i64 {
    row[k].as_i64().unwrap()
}
fn f(row: &Row, k: &str) -> f64 {
    row[k].as_f64().unwrap()
}

#[tokio::test]
async fn rows_match_an_independent_computation() {
    let expected_rows = all_rows();
    assert_eq!(expected_rows.len() as u32, DEMO_DAYS * DEMO_ROWS_PER_DAY);
    let today = Utc::now().date_naive();
    let start = (today - Days::days(DEMO_DAYS as i64 - 1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let end = (today + Days::days(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let mid = start + Days::hours(30);
    let mid_text = mid.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let regex = regex::Regex::new("^/api/v2/orders").unwrap();

    let cases: Vec<Case> = vec![
        (
            r#"status >= 500 and service in ("checkout", "payments")"#.into(),
            Box::new(|r| {
                i(r, "status") >= 500 && ["checkout", "payments"].contains(&s(r, "service"))
            }),
        ),
        (
            r#"endpoint ~ "^/api/v2/orders" and not region = "eu-west-1""#.into(),
            Box::new(move |r| regex.is_match(s(r, "endpoint")) && s(r, "region") != "eu-west-1"),
        ),
        (
            r#"message contains "timeout" or latency_ms > 900.5"#.into(),
            Box::new(|r| s(r, "message").contains("timeout") || f(r, "latency_ms") > 900.5),
        ),
        (
            r#"cached = false and method != "GET" and status not in (200, 201)"#.into(),
            Box::new(|r| {
                r["cached"] == false
                    && s(r, "method") != "GET"
                    && ![200, 201].contains(&i(r, "status"))
            }),
        ),
        (
            format!(r#"ts >= "{mid_text}" and bytes < 2000 and region !~ "^us-""#),
            Box::new(move |r| {
                s(r, "ts")
                    >= mid
                        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                        .as_str()
                    && i(r, "bytes") < 2000
                    && !s(r, "region").starts_with("us-")
            }),
        ),
    ];

    let server = Server::start().await;
    let range = json!({ "from": start.to_rfc3339(), "to": end.to_rfc3339() });
    for (filter, predicate) in &cases {
        let (status, body) = server
            .post(
                ALICE,
                "/v1/jobs",
                json!({ "filter": filter, "timeRange": range }),
            )
            .await;
        assert_eq!(status, 202, "{filter}: {body}");
        let chunks = server
            .read_all(ALICE, body["jobId"].as_str().unwrap())
            .await;
        let got = rows(&chunks);
        let times: Vec<&str> = got.iter().map(|r| r["ts"].as_str().unwrap()).collect();
        assert!(
            times.windows(2).all(|w| w[0] >= w[1]),
            "{filter}: newest first"
        );

        let mut got: Vec<String> = got.iter().map(|r| r.to_string()).collect();
        let mut want: Vec<String> = expected_rows
            .iter()
            .filter(|r| predicate(r))
            .map(|r| Value::Object((*r).clone()).to_string())
            .collect();
        assert!(
            !want.is_empty(),
            "{filter}: the case should select something"
        );
        assert!(
            want.len() < expected_rows.len(),
            "{filter}: the case should reject something"
        );
        got.sort();
        want.sort();
        assert_eq!(got.len(), want.len(), "{filter}: row count");
        assert_eq!(got, want, "{filter}: rows");
    }
    server.stop().await;
}
