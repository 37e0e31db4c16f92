//! The Grafana dashboard (`deploy/grafana/pseudostream.json`) queries only
//! metrics the service exposes, and Prometheus scrapes where they are.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::*;

fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/pseudostream.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).expect("JSON")
}

/// Every `pseudostream_*` name in a panel's queries, without the suffixes
/// Prometheus gives a histogram's series.
fn queried_metrics(dashboard: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            let mut rest = expr;
            while let Some(at) = rest.find("pseudostream_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                names.insert(base.to_owned());
            }
        }
    }
    names
}

#[tokio::test]
async fn every_metric_a_panel_queries_is_exposed() {
    let dashboard = dashboard();
    let queried = queried_metrics(&dashboard);
    assert!(queried.len() >= 8, "{queried:?}");
    let server = Server::start().await;
    server.submit(ALICE, "status = 503").await;
    let exposed: BTreeSet<String> = server
        .metrics()
        .await
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let missing: Vec<_> = queried.difference(&exposed).collect();
    assert!(missing.is_empty(), "queried but not exposed: {missing:?}");
    server.stop().await;
}
