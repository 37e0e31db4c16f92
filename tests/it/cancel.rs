//! Cancel: the stream ends with a last chunk that says cancelled.

use std::sync::Arc;
use std::time::Duration;

use pseudostream::jobs::Hooks;
use tokio::sync::Semaphore;

use crate::support::*;

#[tokio::test]
async fn cancel_mid_stream_ends_with_a_cancelled_last_chunk() {
    let (server, gate) = Server::start_gated(2).await;
    let job = server.submit(ALICE, "").await;
    let job_id = job["jobId"].as_str().unwrap().to_owned();
    let path = format!("/v1/jobs/{job_id}");
    // Two chunks pass the gate, then the worker is held.
    wait_until("two chunks are out", Duration::from_secs(10), || async {
        server.get(ALICE, &path).await.1["chunks"] == 2
    })
    .await;

    let (status, body) = server.delete(ALICE, &path).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["cancelRequested"], true);
    gate.add_permits(1000);

    let chunks = server.read_all(ALICE, &job_id).await;
    let last = chunks.last().unwrap();
    assert_eq!(last["status"], "cancelled");
    assert!(
        chunks.len() <= 4,
        "stopped soon after the cancel, not at the end"
    );
    let (_, view) = server.get(ALICE, &path).await;
    assert_eq!(view["status"], "cancelled");

    // Cancelling a finished job changes nothing.
    let (status, body) = server.delete(ALICE, &path).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "cancelled");
    server.stop().await;
}

/// A sparse query scans for long before its first row, so no chunk's
/// progress update comes to tell it of a cancel; the scan is held here by
/// the scan gate for as long as the test needs.
#[tokio::test]
async fn cancel_stops_a_job_still_scanning_for_its_first_row() {
    let gate = Arc::new(Semaphore::new(0));
    let server = Server::start_with(
        config(),
        Hooks {
            scan_gate: Some(gate.clone()),
            ..Hooks::default()
        },
    )
    .await;
    let job = server
        .submit(
            ALICE,
            r#"message ~ "(\\w+\\s+){4}(q|z){3}" or endpoint ~ "(\\w+/){5}zz""#,
        )
        .await;
    let job_id = job["jobId"].as_str().unwrap().to_owned();
    let path = format!("/v1/jobs/{job_id}");
    wait_until("the job is scanning", Duration::from_secs(10), || async {
        server.get(ALICE, &path).await.1["status"] == "running"
    })
    .await;

    let (status, body) = server.delete(ALICE, &path).await;
    assert_eq!(status, 202, "{body}");
    // The scan gate stays shut: only the job's own look-out can stop it.
    let chunks = server.read_all(ALICE, &job_id).await;
    assert_eq!(chunks.len(), 1, "{chunks:?}");
    assert_eq!(chunks[0]["status"], "cancelled");
    assert_eq!(chunks[0]["totalRows"], 0);
    assert_eq!(server.get(ALICE, &path).await.1["status"], "cancelled");
    server.stop().await;
}
