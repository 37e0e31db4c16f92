//! What the coordination contract suites share: the Redis fixture, a job
//! spec, admitting a job the way submission does, and `coord_suite!`, which
//! stamps out one test per case for an implementation. Each trait's cases
//! live in its own `contract_*` module; the embedded and the distributed
//! implementations join with their own fixture.

use chrono::{TimeDelta, Utc};
use pseudostream::coord::redis::RedisCoordination;
use pseudostream::coord::{Claim, Coordination};
use pseudostream::filter::{Fingerprint, Order};
use pseudostream::model::{JobId, JobRecord, JobSpec, JobStatus, JobUpdate, Offset};

/// The Redis the distributed contract runs against.
pub fn redis_url() -> String {
    std::env::var("PSEUDOSTREAM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test (or earlier run) uses.
pub fn redis_prefix() -> String {
    format!("pseudostream-test:{}", uuid::Uuid::new_v4())
}

/// Fresh Redis backends on `prefix`; fails loudly without Redis.
pub async fn redis_backends(prefix: &str, pool_size: u32) -> RedisCoordination {
    let url = redis_url();
    RedisCoordination::connect(&url, prefix, pool_size)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to Redis at {url} (set PSEUDOSTREAM_TEST_REDIS_URL): {e}")
        })
}

/// A fresh Redis coordination on its own prefix.
pub async fn redis_coordination(pool_size: u32) -> Coordination {
    redis_backends(&redis_prefix(), pool_size)
        .await
        .into_coordination()
}

/// Two Redis coordinations sharing one prefix: two instances of one deployment.
pub async fn redis_pair(pool_size: u32) -> (Coordination, Coordination) {
    let prefix = redis_prefix();
    (
        redis_backends(&prefix, pool_size).await.into_coordination(),
        redis_backends(&prefix, pool_size).await.into_coordination(),
    )
}

pub fn spec(job_id: JobId, offset: Offset, fp: u8, tenant: &str, user: &str) -> JobSpec {
    JobSpec {
        job_id,
        offset,
        fingerprint: Fingerprint([fp; 32]),
        tenant: tenant.into(),
        user: user.into(),
        filter: "status = 500".into(),
        from_us: 0,
        to_us: 1,
        fields: vec![],
        order: Order::Desc,
        max_rows: 100,
    }
}

/// Claims, leases and inserts a job the way submission does.
pub async fn admit(c: &Coordination, fp: u8, user: &str) -> JobRecord {
    let id = JobId::new();
    assert_eq!(
        c.dedup
            .claim_fingerprint(Fingerprint([fp; 32]), id)
            .await
            .unwrap(),
        Claim::Won
    );
    let offset = c
        .offsets
        .lease_offset(id)
        .await
        .unwrap()
        .expect("a free offset");
    let record = JobRecord::new(spec(id, offset, fp, "acme", user), Utc::now());
    c.job_store.insert_job(record.clone()).await.unwrap();
    record
}

/// A finished update whose result expires `expires_in_secs` from now.
pub fn finished(expires_in_secs: i64) -> JobUpdate {
    let at = Utc::now();
    JobUpdate::Finished {
        status: JobStatus::Completed,
        rows: 3,
        chunks: 1,
        truncated: false,
        error: None,
        at,
        expires_at: at + TimeDelta::seconds(expires_in_secs),
    }
}

/// Stamps out `mod $module` with one `#[tokio::test]` per case, each given a
/// fresh instance from `$make`. An attribute, e.g. `#[ignore = "needs
/// Redis"]`, goes on every test.
macro_rules! coord_suite {
    // This arm comes first: `#` could also start an expression.
    ($module:ident, #[$attr:meta], $make:expr; $($case:ident),* $(,)?) => {
        $crate::contract_coord::coord_suite!(@suite $module, [#[$attr]], $make; $($case),*);
    };
    ($module:ident, $make:expr; $($case:ident),* $(,)?) => {
        $crate::contract_coord::coord_suite!(@suite $module, [], $make; $($case),*);
    };
    (@suite $module:ident, $attrs:tt, $make:expr; $($case:ident),*) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $( $crate::contract_coord::coord_suite!(@case $attrs $make; $case); )*
        }
    };
    (@case [$(#[$attr:meta])*] $make:expr; $case:ident) => {
        #[tokio::test]
        $(#[$attr])*
        async fn $case() {
            super::$case($make).await;
        }
    };
}

pub(crate) use coord_suite;
