//! Results expire after the TTL; the offset returns to the pool and the
//! audit row says expired.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn a_finished_job_expires_and_frees_its_offset() {
    let mut config = config();
    config.result_ttl = Duration::from_millis(300);
    config.expiry_interval = Duration::from_millis(50);
    config.offset_pool_size = 1;
    let server = Server::start_with(config, Default::default()).await;
    let job = server.submit(ALICE, "status = 500").await;
    let job_id = job["jobId"].as_str().unwrap().to_owned();
    server.read_all(ALICE, &job_id).await;

    let path = format!("/v1/jobs/{job_id}");
    wait_until("the job is gone", Duration::from_secs(10), || async {
        server.get(ALICE, &path).await.0 == 404
    })
    .await;
    let (status, problem) = server
        .get(ALICE, &format!("/v1/jobs/{job_id}/chunks"))
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        problem["type"],
        "https://pseudostream.dev/problems/job-not-found"
    );
    let (status, _) = server.get(ALICE, "/v1/offsets/0").await;
    assert_eq!(status, 404, "the offset holds nothing");

    // The single offset is free again, and the same filter is a new job.
    let again = server.submit(ALICE, "status = 500").await;
    assert_eq!(again["deduplicated"], false);
    assert_ne!(again["jobId"], job["jobId"]);

    let (_, audit) = server.get(OLGA_OPS, "/v1/audit?user=alice").await;
    let expired = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["jobId"] == job_id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(expired["status"], "expired");
    assert!(expired["expiredAt"].is_string());
    server.stop().await;
}
