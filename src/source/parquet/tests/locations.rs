//! Directories, patterns, overlapping files and the errors for bad ones.

use super::*;
use crate::filter::Order;

#[tokio::test]
async fn glob_locations() {
    let dir = tempfile::tempdir().unwrap();
    gen_demo(dir.path());
    let pattern = format!("{}/events-2026-10-3*.parquet", dir.path().display());
    let src = open(&pattern, "ts").await.unwrap();
    assert_eq!(src.segment_count(), 2);
    let rows = run(&src, query(all())).await;
    assert_eq!(rows.len(), 2 * ROWS as usize);
    assert!(
        rows.iter()
            .all(|r| r["ts"].as_str().unwrap().starts_with("2026-10-3"))
    );
    let none = format!("{}/nothing-*.parquet", dir.path().display());
    let err = open(&none, "ts").await.unwrap_err();
    assert!(matches!(err, SourceError::NoFiles { .. }), "{err}");
    let bad = format!("{}/*/x.parquet", dir.path().display());
    let err = open(&bad, "ts").await.unwrap_err();
    assert!(matches!(err, SourceError::BadLocation { .. }), "{err}");
}

#[tokio::test]
async fn clear_errors_for_bad_locations_and_columns() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let err = open(missing.to_str().unwrap(), "ts").await.unwrap_err();
    assert!(matches!(err, SourceError::NotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("missing") && msg.contains("does not exist") && msg.contains(".parquet"),
        "{msg}"
    );
    let err = open(dir.path().to_str().unwrap(), "ts").await.unwrap_err();
    assert!(matches!(err, SourceError::NoFiles { .. }), "{err}");

    gen_demo(dir.path());
    let err = open(dir.path().to_str().unwrap(), "time")
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::NoTimeColumn { .. }), "{err}");
    let err = open(dir.path().to_str().unwrap(), "status")
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::TimeColumnType { .. }), "{err}");

    write_odd_file(&dir.path().join("zz-odd.parquet"));
    let err = open(dir.path().to_str().unwrap(), "ts").await.unwrap_err();
    assert!(matches!(err, SourceError::SchemaMismatch { .. }), "{err}");
    assert!(err.to_string().contains("zz-odd.parquet"), "{err}");
}

#[tokio::test]
async fn overlapping_files_share_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    gen_demo(dir.path());
    std::fs::copy(
        dir.path().join("events-2026-10-31.parquet"),
        dir.path().join("extra.parquet"),
    )
    .unwrap();
    let src = open(dir.path().to_str().unwrap(), "ts").await.unwrap();
    assert_eq!(src.segment_count(), DAYS as usize);
    for order in [Order::Asc, Order::Desc] {
        let full = run(
            &src,
            SourceQuery {
                order,
                ..query(all())
            },
        )
        .await;
        assert_eq!(full.len(), (DAYS + 1) as usize * ROWS as usize);
        let ts: Vec<i64> = full.iter().map(|r| micros(&r["ts"])).collect();
        assert!(ts.windows(2).all(|w| if order == Order::Asc {
            w[0] <= w[1]
        } else {
            w[0] >= w[1]
        }));
        let page = run(
            &src,
            SourceQuery {
                order,
                skip: 480,
                limit: 600,
                ..query(all())
            },
        )
        .await;
        assert_eq!(page, full[480..1080]);
    }
}
