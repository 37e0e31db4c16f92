//! Filters: against an independent evaluation, through both read paths, and
//! over nulls, narrow types and other time units.

use super::super::parts::WindowRows;
use super::*;
use crate::filter::Order;

#[tokio::test]
async fn predicates_match_independent_evaluation() {
    let (_dir, src) = demo_source().await;
    let full = run(&src, query(all())).await;
    let mut nonempty = 0;
    for p in sample_predicates(&full) {
        let want: Vec<Fields> = full
            .iter()
            .filter(|r| eval(&p, r, src.schema()) == Some(true))
            .cloned()
            .collect();
        let got = run(&src, query(p.clone())).await;
        assert_eq!(got.len(), want.len(), "{p:?}");
        assert_eq!(got, want, "{p:?}");
        nonempty += usize::from(!got.is_empty());
    }
    // The data set exercises nearly every predicate; the escaped ones match nothing.
    assert!(nonempty >= 28, "only {nonempty} predicates matched rows");
    // Unescaped, `t_0` would match `cust-0…`, `e%e` almost any message.
    assert!(
        full.iter()
            .any(|r| r["customer"].as_str().unwrap().contains("t-0"))
    );
}

/// Time windows read directly give exactly the planner's rows: for every
/// sample predicate, both orders, field subsets that leave out the time
/// column or name only filter-free columns, and skips and limits that
/// fall inside the windows or skip whole ones. Days of 5,000 rows span
/// three pages: cut by the default sizes and a window to a page.
#[tokio::test]
async fn direct_windows_match_the_planner() {
    let dir = tempfile::tempdir().unwrap();
    demo::generate(dir.path(), end_day(), 2, 5_000, demo::DEMO_SEED, &|_, _| {}).unwrap();
    let location = dir.path().to_str().unwrap();
    let direct = open(location, "ts").await.unwrap();
    // Windows of a page each: three to a day.
    let mut by_page = open(location, "ts").await.unwrap();
    by_page.window_rows = WindowRows { first: 1, max: 1 };
    let mut planned = open(location, "ts").await.unwrap();
    planned.direct_windows = false;
    let full = run(&direct, query(all())).await;
    assert_eq!(full, run(&planned, query(all())).await);
    assert_eq!(full, run(&by_page, query(all())).await);
    let day_start = micros(&full[0]["ts"]);
    let shapes: [(Order, Vec<&str>, u64, u64); 7] = [
        (Order::Desc, vec![], 0, u64::MAX),
        (Order::Asc, vec![], 0, u64::MAX),
        (Order::Desc, vec!["status", "service"], 7, 300),
        (Order::Asc, vec!["message"], 0, 25),
        (Order::Desc, vec!["latency_ms", "ts", "cached"], 2_000, 40),
        (Order::Asc, vec![], 2_500, 30),
        // Past every window of the first day, into the planned one.
        (Order::Desc, vec!["status"], 6_000, 50),
    ];
    for p in sample_predicates(&full) {
        for (order, fields, skip, limit) in &shapes {
            let q = SourceQuery {
                predicate: p.clone(),
                // Starts inside the first day, so the first window is cut mid-page.
                from_us: day_start + 1_234_567,
                to_us: i64::MAX,
                fields: fields.iter().map(|f| f.to_string()).collect(),
                order: *order,
                skip: *skip,
                limit: *limit,
            };
            let want = run(&planned, q.clone()).await;
            for src in [&direct, &by_page] {
                let got = run(src, q.clone()).await;
                assert_eq!(
                    got, want,
                    "{p:?} {order:?} {fields:?} skip {skip} limit {limit}"
                );
            }
        }
    }
}

#[tokio::test]
async fn nulls_units_and_exact_names() {
    let dir = tempfile::tempdir().unwrap();
    write_odd_file(&dir.path().join("odd.parquet"));
    let src = open(dir.path().to_str().unwrap(), "ts").await.unwrap();
    let names: Vec<&str> = src.schema().field_names().collect();
    assert_eq!(names, ["ts", "Name", "n", "ok"]);
    // The row with a null time never matches a time range.
    let full = run(&src, query(all())).await;
    assert_eq!(full.len(), 4);
    assert_eq!(full[0]["ts"], "1970-01-01T00:00:01.000000Z");
    assert_eq!(full[2]["ts"], "1970-01-01T00:00:01.000001Z");
    assert!(full[1]["Name"].is_null());

    let count = |p: Predicate| {
        let src = &src;
        async move { run(src, query(p)).await.len() }
    };
    let name_eq = cmp("Name", CompareOp::Eq, s("a_1"));
    assert_eq!(count(name_eq.clone()).await, 2);
    // SQL three-valued logic: `not` of a comparison with null is still unknown.
    assert_eq!(count(Predicate::Not(Box::new(name_eq))).await, 1);
    assert_eq!(count(cmp("Name", CompareOp::Ne, s("a_1"))).await, 1);
    assert_eq!(
        count(Predicate::Regex {
            field: "Name".into(),
            negated: true,
            pattern: "a".into()
        })
        .await,
        1
    );
    assert_eq!(
        count(Predicate::Contains {
            field: "Name".into(),
            needle: "%".into()
        })
        .await,
        1
    );
    assert_eq!(
        count(Predicate::Not(Box::new(Predicate::Contains {
            field: "Name".into(),
            needle: "_".into()
        })))
        .await,
        1
    );
    assert_eq!(
        count(Predicate::In {
            field: "n".into(),
            negated: true,
            values: vec![Value::Integer(1)]
        })
        .await,
        2
    );
    // Int32 column against literals beyond its range.
    assert_eq!(
        count(cmp("n", CompareOp::Lt, Value::Integer(5_000_000_000))).await,
        3
    );
    assert_eq!(
        count(cmp("n", CompareOp::Gt, Value::Integer(-5_000_000_000))).await,
        3
    );
    // Nanoseconds compare by the microsecond they fall in, like they are shown.
    assert_eq!(
        count(cmp("ts", CompareOp::Eq, Value::Time(1_000_000))).await,
        1
    );
    assert_eq!(
        count(cmp("ts", CompareOp::Eq, Value::Time(1_000_001))).await,
        2
    );
    assert_eq!(
        count(cmp("ts", CompareOp::Gt, Value::Time(1_000_000))).await,
        3
    );
    assert_eq!(
        count(cmp("ts", CompareOp::Le, Value::Time(1_000_001))).await,
        3
    );
    assert_eq!(
        count(cmp("ts", CompareOp::Ne, Value::Time(1_000_001))).await,
        2
    );
    let in_range = run(
        &src,
        SourceQuery {
            from_us: 1_000_001,
            to_us: 2_000_000,
            ..query(all())
        },
    )
    .await;
    assert_eq!(in_range.len(), 2);
    let err = src
        .query(query(cmp("tags", CompareOp::Eq, Value::Integer(1))))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SourceError::UnknownField { .. }), "{err}");
}
