//! The generator as its users see it: files, determinism, resumption.

use super::*;
use crate::source::{ParquetSource, QueryRuntime, QuerySource, Row, SourceQuery};
use futures::TryStreamExt;

async fn all_rows(dir: &Path) -> Vec<Row> {
    let runtime = QueryRuntime::new(2).unwrap();
    let src = ParquetSource::open(dir.to_str().unwrap(), "ts", &runtime)
        .await
        .unwrap();
    let q = SourceQuery::everything();
    src.query(q).await.unwrap().try_collect().await.unwrap()
}

#[tokio::test]
async fn generation_is_deterministic_and_resumable() {
    let end = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let last = std::sync::Mutex::new((0, 0));
    generate(a.path(), end, 2, 300, DEMO_SEED, &|d, t| {
        *last.lock().unwrap() = (d, t)
    })
    .unwrap();
    assert_eq!(*last.lock().unwrap(), (600, 600));
    // b gets the days one at a time, as an extended range would.
    generate(
        b.path(),
        end.pred_opt().unwrap(),
        1,
        300,
        DEMO_SEED,
        &|_, _| {},
    )
    .unwrap();
    generate(b.path(), end, 2, 300, DEMO_SEED, &|_, _| {}).unwrap();
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(a.path()),
        ["events-2026-10-31.parquet", "events-2026-11-01.parquet"]
    );
    assert_eq!(names(b.path()), names(a.path()));
    let (ra, rb) = (all_rows(a.path()).await, all_rows(b.path()).await);
    assert_eq!(ra.len(), 600);
    assert_eq!(ra, rb);
    assert!(
        ra.iter()
            .map(Row::fields)
            .all(|r| r["ts"].as_str().unwrap() >= "2026-10-31T00:00:00"
                && r["ts"].as_str().unwrap() < "2026-11-02")
    );
    // A different seed gives different data.
    let c = tempfile::tempdir().unwrap();
    generate(c.path(), end, 2, 300, DEMO_SEED + 1, &|_, _| {}).unwrap();
    assert_ne!(all_rows(c.path()).await, ra);
}
