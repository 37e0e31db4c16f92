//! Freshness-tolerant sharing: a relative range is shared by its expression
//! while the live job's resolved end is at most `maxStaleness` old; past
//! that a fresh job takes the fingerprint over. The server reads a manual
//! clock, so these tests move time across minute and staleness boundaries.

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use pseudostream::config::Config;
use pseudostream::jobs::{Clock, Hooks, ManualClock};
use serde_json::{Value, json};

use crate::contract_coord::{redis_prefix, redis_url};
use crate::support::*;

const FILTER: &str = r#"service = "checkout" and status >= 200"#;

/// A manual clock set 1.5 s before a whole minute (of the real time, so
/// the demo data's days are in "the last 7 days").
fn manual_clock() -> ManualClock {
    let minute = TimeDelta::minutes(1);
    ManualClock::new(Utc::now().duration_trunc(minute).unwrap() + TimeDelta::milliseconds(58_500))
}

async fn server_on(clock: &ManualClock, mut config: Config) -> Server {
    config.expiry_interval = Duration::from_millis(50);
    let hooks = Hooks {
        clock: Clock::Manual(clock.clone()),
        ..Hooks::default()
    };
    Server::start_with(config, hooks).await
}

async fn server_on_a_manual_clock(config: Config) -> (Server, ManualClock) {
    let clock = manual_clock();
    (server_on(&clock, config).await, clock)
}

async fn submit(server: &Server, key: &str, extra: Value) -> Value {
    let mut body = json!({ "filter": FILTER, "timeRange": { "last": "7d" } });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (status, answer) = server.post(key, "/v1/jobs", body).await;
    assert_eq!(status, 202, "{answer}");
    answer
}

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap())
        .unwrap()
        .to_utc()
}

#[tokio::test]
async fn refreshes_across_a_minute_boundary_share_one_job_and_say_its_range() {
    let (server, clock) = server_on_a_manual_clock(config()).await;
    let first = submit(&server, ALICE, json!({})).await;
    assert_eq!(first["deduplicated"], false);
    let range = first["resolvedRange"].clone();
    assert_eq!(
        time(&range["to"]),
        clock.now().duration_trunc(TimeDelta::seconds(1)).unwrap() + TimeDelta::seconds(1),
        "a relative range ends at the next whole second"
    );
    assert_eq!(
        time(&range["to"]) - time(&range["from"]),
        TimeDelta::days(7)
    );

    clock.advance(Duration::from_secs(2)); // into the next minute
    let again = submit(&server, BOB, json!({})).await;
    assert_eq!(again["deduplicated"], true);
    assert_eq!(again["jobId"], first["jobId"]);
    assert_eq!(again["fingerprint"], first["fingerprint"]);
    assert_eq!(again["resolvedRange"], range, "the shared job's range");

    // Every answer about the job carries its resolved range.
    let job_id = first["jobId"].as_str().unwrap();
    let offset = first["offset"].as_u64().unwrap();
    for path in [
        format!("/v1/jobs/{job_id}"),
        format!("/v1/jobs/{job_id}/chunks?wait=1"),
        format!("/v1/offsets/{offset}"),
        format!("/v1/offsets/{offset}/chunks"),
    ] {
        let (status, body) = server.get(ALICE, &path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["resolvedRange"], range, "{path}");
    }
    let (_, listed) = server.get(ALICE, "/v1/jobs").await;
    assert_eq!(listed["jobs"][0]["resolvedRange"], range);
    let (status, waited) = server
        .post(
            BOB,
            "/v1/jobs?wait=1",
            json!({ "filter": FILTER, "timeRange": { "last": "7d" } }),
        )
        .await;
    assert_eq!(status, 202, "{waited}");
    assert_eq!(waited["resolvedRange"], range);

    // The joined submission's audit row has the joined job's range.
    let (_, audit) = server.get(OLGA_OPS, "/v1/audit?user=bob").await;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{audit}");
    for entry in entries {
        assert_eq!(entry["deduplicatedFrom"], job_id);
        assert_eq!(time(&entry["timeFrom"]), time(&range["from"]));
        assert_eq!(time(&entry["timeTo"]), time(&range["to"]));
    }
    server.stop().await;
}

#[tokio::test]
async fn past_max_staleness_a_fresh_job_takes_over_and_the_stale_one_lives_on() {
    let mut config = config();
    config.result_ttl = Duration::from_secs(120);
    let (server, clock) = server_on_a_manual_clock(config).await;
    let stale = submit(&server, ALICE, json!({})).await;
    let stale_id = stale["jobId"].as_str().unwrap().to_owned();
    let stale_chunks = server.read_all(ALICE, &stale_id).await;

    clock.advance(Duration::from_secs(60));
    let shared = submit(&server, BOB, json!({})).await;
    assert_eq!(shared["jobId"], stale["jobId"], "60 s old is still fresh");

    clock.advance(Duration::from_secs(2));
    let fresh = submit(&server, BOB, json!({})).await;
    assert_eq!(fresh["deduplicated"], false, "62 s old is stale");
    assert_ne!(fresh["jobId"], stale["jobId"]);
    assert_eq!(fresh["fingerprint"], stale["fingerprint"]);
    assert!(time(&fresh["resolvedRange"]["to"]) > time(&stale["resolvedRange"]["to"]));
    let fresh_id = fresh["jobId"].as_str().unwrap().to_owned();

    clock.advance(Duration::from_secs(1));
    let later = submit(&server, ALICE, json!({})).await;
    assert_eq!(
        later["jobId"], fresh["jobId"],
        "new submissions go to the fresh job"
    );
    assert_eq!(later["deduplicated"], true);

    // The stale job still serves its readers, unchanged.
    assert_eq!(server.read_all(ALICE, &stale_id).await, stale_chunks);
    let (status, _) = server.get(ALICE, &format!("/v1/jobs/{stale_id}")).await;
    assert_eq!(status, 200);
    server.read_all(BOB, &fresh_id).await;

    // Past the stale job's TTL (not the fresh one's), it expires and
    // leaves the fingerprint with the fresh job.
    clock.advance(Duration::from_secs(90));
    let path = format!("/v1/jobs/{stale_id}");
    wait_until("the stale job expires", Duration::from_secs(10), || async {
        server.get(ALICE, &path).await.0 == 404
    })
    .await;
    let tolerant = submit(&server, ALICE, json!({ "maxStaleness": "10m" })).await;
    assert_eq!(tolerant["jobId"], fresh["jobId"]);
    assert_eq!(tolerant["deduplicated"], true);
    server.stop().await;
}

#[tokio::test]
async fn max_staleness_zero_forces_a_fresh_job() {
    let (server, _clock) = server_on_a_manual_clock(config()).await;
    let first = submit(&server, ALICE, json!({})).await;
    let forced = submit(&server, ALICE, json!({ "maxStaleness": "0s" })).await;
    assert_eq!(forced["deduplicated"], false);
    assert_ne!(forced["jobId"], first["jobId"]);
    assert_eq!(forced["fingerprint"], first["fingerprint"]);
    let forced_again = submit(&server, ALICE, json!({ "maxStaleness": "0" })).await;
    assert_eq!(forced_again["deduplicated"], false);
    assert_ne!(forced_again["jobId"], forced["jobId"]);
    let shared = submit(&server, BOB, json!({})).await;
    assert_eq!(
        shared["jobId"], forced_again["jobId"],
        "the newest holds it"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_setting_is_the_default_a_request_overrides() {
    let mut config = config();
    config.max_staleness = Duration::from_secs(5);
    let (server, clock) = server_on_a_manual_clock(config).await;
    let first = submit(&server, ALICE, json!({})).await;
    clock.advance(Duration::from_secs(10));
    let tolerant = submit(&server, BOB, json!({ "maxStaleness": "2m" })).await;
    assert_eq!(tolerant["jobId"], first["jobId"]);
    let strict = submit(&server, BOB, json!({})).await;
    assert_eq!(
        strict["deduplicated"], false,
        "10 s is past the 5 s setting"
    );
    server.stop().await;
}

#[tokio::test]
async fn absolute_ranges_still_match_exactly() {
    let (server, clock) = server_on_a_manual_clock(config()).await;
    let to = clock.now().duration_trunc(TimeDelta::hours(1)).unwrap();
    let range = |to: DateTime<Utc>| json!({ "from": (to - TimeDelta::days(2)).to_rfc3339(), "to": to.to_rfc3339() });
    let first = submit(&server, ALICE, json!({ "timeRange": range(to) })).await;
    assert_eq!(time(&first["resolvedRange"]["to"]), to);

    // However old, an absolute range shares: its rows do not move.
    clock.advance(Duration::from_secs(600));
    let again = submit(
        &server,
        BOB,
        json!({ "timeRange": range(to), "maxStaleness": "0s" }),
    )
    .await;
    assert_eq!(again["jobId"], first["jobId"]);
    assert_eq!(again["deduplicated"], true);

    let shifted = submit(
        &server,
        BOB,
        json!({ "timeRange": range(to + TimeDelta::seconds(1)) }),
    )
    .await;
    assert_eq!(shifted["deduplicated"], false);
    assert_ne!(shifted["fingerprint"], first["fingerprint"]);

    // "The last 2 days" is another question than these two days, even
    // when it resolves to the same ends.
    clock.set(to - TimeDelta::seconds(1));
    let relative = submit(&server, ALICE, json!({ "timeRange": { "last": "2d" } })).await;
    assert_eq!(relative["resolvedRange"], first["resolvedRange"]);
    assert_ne!(relative["fingerprint"], first["fingerprint"]);
    server.stop().await;
}

#[tokio::test]
#[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"]
async fn two_instances_racing_on_a_stale_job_start_one_fresh_job() {
    let clock = manual_clock();
    let mut config = config();
    config.redis_url = Some(redis_url());
    config.redis_prefix = redis_prefix();
    let a = server_on(&clock, config.clone()).await;
    let b = server_on(&clock, config).await;
    let stale = submit(&a, ALICE, json!({})).await;

    clock.advance(Duration::from_secs(61));
    let body = json!({ "filter": FILTER, "timeRange": { "last": "7d" } });
    let mut racing = tokio::task::JoinSet::new();
    for n in 0..10 {
        let server = if n % 2 == 0 { &a } else { &b };
        let (http, url, body) = (server.http.clone(), server.url("/v1/jobs"), body.clone());
        racing.spawn(async move {
            let response = http.post(url).bearer_auth(BOB).json(&body).send().await;
            response.unwrap().json::<Value>().await.unwrap()
        });
    }
    let answers = racing.join_all().await;
    let fresh: Vec<&Value> = answers
        .iter()
        .filter(|a| a["deduplicated"] == false)
        .collect();
    assert_eq!(fresh.len(), 1, "{answers:?}");
    assert_ne!(fresh[0]["jobId"], stale["jobId"]);
    assert!(
        answers.iter().all(|a| a["jobId"] == fresh[0]["jobId"]),
        "{answers:?}"
    );
    a.stop().await;
    b.stop().await;
}
