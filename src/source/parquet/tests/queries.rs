//! Schema, identity, order, time ranges, paging and fields.

use super::*;
use crate::filter::Order;
use futures::StreamExt;

#[tokio::test]
async fn maps_schema_and_identity() {
    let (dir, src) = demo_source().await;
    let expected = [
        ("ts", FieldType::Time),
        ("service", FieldType::String),
        ("endpoint", FieldType::String),
        ("method", FieldType::String),
        ("status", FieldType::Integer),
        ("latency_ms", FieldType::Float),
        ("region", FieldType::String),
        ("customer", FieldType::String),
        ("bytes", FieldType::Integer),
        ("cached", FieldType::Boolean),
        ("message", FieldType::String),
    ];
    let got: Vec<(&str, FieldType)> = src
        .schema()
        .fields
        .iter()
        .map(|(n, t)| (n.as_str(), *t))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(src.schema().time_column, "ts");
    assert_eq!(src.schema_version().len(), 16);
    assert!(src.schema_version().chars().all(|c| c.is_ascii_hexdigit()));
    let canon = dir.path().canonicalize().unwrap();
    assert_eq!(src.id(), format!("files:{}", canon.display()));
    assert_eq!(src.segment_count(), DAYS as usize);
    // Same shape, same version, whatever the location.
    let again = open(&format!("{}/*.parquet", dir.path().display()), "ts")
        .await
        .unwrap();
    assert_eq!(again.schema_version(), src.schema_version());
    assert_ne!(again.id(), src.id());
}

#[tokio::test]
async fn orders_deterministically() {
    let (_dir, src) = demo_source().await;
    for order in [Order::Asc, Order::Desc] {
        let q = SourceQuery {
            order,
            ..query(all())
        };
        let a = run(&src, q.clone()).await;
        let b = run(&src, q).await;
        assert_eq!(a.len(), (DAYS * ROWS) as usize);
        assert_eq!(a, b);
        let ts: Vec<i64> = a.iter().map(|r| micros(&r["ts"])).collect();
        let sorted = ts.windows(2).all(|w| {
            if order == Order::Asc {
                w[0] <= w[1]
            } else {
                w[0] >= w[1]
            }
        });
        assert!(sorted, "{order:?} not sorted");
        assert!(a[0]["ts"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            a[0]["ts"].as_str().unwrap().len(),
            "2026-11-01T12:00:00.000000Z".len()
        );
    }
}

#[tokio::test]
async fn a_range_before_every_file_is_empty_but_still_checked() {
    let (_dir, src) = demo_source().await;
    let full = run(&src, query(all())).await;
    let first = full.iter().map(|r| micros(&r["ts"])).min().unwrap();
    let before = SourceQuery {
        from_us: first - 86_400_000_000,
        to_us: first,
        ..query(all())
    };
    assert!(run(&src, before.clone()).await.is_empty());
    // No file is read, but the request is checked as for any range.
    let unknown = SourceQuery {
        fields: vec!["no_such_field".into()],
        ..before
    };
    assert!(src.query(unknown).await.is_err());
}

#[tokio::test]
async fn time_range_is_half_open() {
    let (_dir, src) = demo_source().await;
    let full = run(&src, query(all())).await;
    let ts: Vec<i64> = full.iter().map(|r| micros(&r["ts"])).collect();
    let (from, to) = (ts[100], ts[1200]);
    let got = run(
        &src,
        SourceQuery {
            from_us: from,
            to_us: to,
            ..query(all())
        },
    )
    .await;
    let want: Vec<Fields> = full
        .iter()
        .filter(|r| (from..to).contains(&micros(&r["ts"])))
        .cloned()
        .collect();
    assert_eq!(got, want);
    assert_eq!(micros(&got[0]["ts"]), from);
    assert!(got.iter().all(|r| micros(&r["ts"]) != to));
    let empty = run(
        &src,
        SourceQuery {
            from_us: from,
            to_us: from,
            ..query(all())
        },
    )
    .await;
    assert!(empty.is_empty());
    let one = run(
        &src,
        SourceQuery {
            from_us: from,
            to_us: from + 1,
            ..query(all())
        },
    )
    .await;
    assert!(!one.is_empty() && one.iter().all(|r| micros(&r["ts"]) == from));
    let desc = run(
        &src,
        SourceQuery {
            from_us: from,
            to_us: to,
            order: Order::Desc,
            ..query(all())
        },
    )
    .await;
    assert_eq!(desc.len(), want.len());
}

#[tokio::test]
async fn skip_and_limit_resume_across_segments() {
    let (_dir, src) = demo_source().await;
    let errors = cmp("status", CompareOp::Ge, Value::Integer(400));
    for predicate in [all(), errors] {
        for order in [Order::Asc, Order::Desc] {
            let base = SourceQuery {
                order,
                predicate: predicate.clone(),
                ..query(all())
            };
            let full = run(&src, base.clone()).await;
            let n = full.len() as u64;
            let cases = [
                (0, 10),
                (495, 20),
                (499, 2),
                (500, 1),
                (1000, 600),
                (n / 3 + 1, n / 3),
                (n - 1, 10),
                (n, 5),
                (n + 7, 5),
                (10, 0),
            ];
            for (skip, limit) in cases {
                let got = run(
                    &src,
                    SourceQuery {
                        skip,
                        limit,
                        ..base.clone()
                    },
                )
                .await;
                let lo = (skip.min(n)) as usize;
                let hi = (skip.saturating_add(limit).min(n)) as usize;
                assert_eq!(
                    got,
                    full[lo..hi],
                    "{order:?} skip {skip} limit {limit} of {n}"
                );
            }
            // Resuming chunk by chunk reproduces the whole result.
            let mut resumed = Vec::new();
            loop {
                let chunk = run(
                    &src,
                    SourceQuery {
                        skip: resumed.len() as u64,
                        limit: 97,
                        ..base.clone()
                    },
                )
                .await;
                if chunk.is_empty() {
                    break;
                }
                resumed.extend(chunk);
            }
            assert_eq!(resumed, full);
        }
    }
}

#[tokio::test]
async fn selects_fields_but_sorts_by_time() {
    let (_dir, src) = demo_source().await;
    let full = run(
        &src,
        SourceQuery {
            order: Order::Desc,
            ..query(all())
        },
    )
    .await;
    let fields = vec!["status".to_string(), "service".to_string()];
    let got = run(
        &src,
        SourceQuery {
            fields: fields.clone(),
            order: Order::Desc,
            ..query(all())
        },
    )
    .await;
    assert_eq!(got.len(), full.len());
    assert!(
        got.iter()
            .all(|r| r.len() == 2 && r.contains_key("status") && r.contains_key("service"))
    );
    // Same time order: each row's projection agrees with the full row's
    // wherever timestamps are unique.
    let mismatches = got
        .iter()
        .zip(&full)
        .filter(|(g, f)| g["status"] != f["status"] || g["service"] != f["service"])
        .count();
    assert!(
        mismatches < full.len() / 20,
        "{mismatches} rows out of time order"
    );
    let err = src
        .query(SourceQuery {
            fields: vec!["nope".into()],
            ..query(all())
        })
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SourceError::UnknownField { .. }), "{err}");
}

#[tokio::test]
async fn first_row_arrives_and_drop_stops() {
    let (_dir, src) = demo_source().await;
    let full = run(
        &src,
        SourceQuery {
            order: Order::Desc,
            ..query(all())
        },
    )
    .await;
    let mut stream = src
        .query(SourceQuery {
            order: Order::Desc,
            ..query(all())
        })
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.fields(), full[0]);
    drop(stream);
    // The source stays usable after an abandoned query.
    let again = run(
        &src,
        SourceQuery {
            limit: 3,
            ..query(all())
        },
    )
    .await;
    assert_eq!(again.len(), 3);
}

/// A query's parts are planned in one partition each unless
/// `DATAFUSION_EXECUTION_TARGET_PARTITIONS` says otherwise (`engine_config`).
#[test]
fn plans_run_in_one_partition_unless_configured() {
    let config = super::super::engine_config().unwrap();
    match std::env::var("DATAFUSION_EXECUTION_TARGET_PARTITIONS") {
        Ok(n) => assert_eq!(config.target_partitions().to_string(), n),
        Err(_) => assert_eq!(config.target_partitions(), 1),
    }
}
