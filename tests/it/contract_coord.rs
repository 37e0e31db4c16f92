//! What the coordination contract suites share: the Redis fixture, a job
//! spec, admitting a job the way submission does, a backend that fails on
//! cue for the timeout-and-retry wrapper's cases, and `coord_suite!`, which
//! stamps out one test per case for an implementation. Each trait's cases
//! live in its own `contract_*` module; the embedded and the distributed
//! implementations join with their own fixture.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use pseudostream::coord::policy::Policy;
use pseudostream::coord::redis::RedisCoordination;
use pseudostream::coord::{Claim, CoordError, Coordination};
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
        .into_coordination(Policy::default())
}

/// Two Redis coordinations sharing one prefix: two instances of one deployment.
pub async fn redis_pair(pool_size: u32) -> (Coordination, Coordination) {
    let prefix = redis_prefix();
    (
        redis_backends(&prefix, pool_size)
            .await
            .into_coordination(Policy::default()),
        redis_backends(&prefix, pool_size)
            .await
            .into_coordination(Policy::default()),
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
    insert_claimed(c, fp, id, user).await
}

/// Leases an offset for a job whose fingerprint claim was won and inserts
/// its record, the rest of admission.
pub async fn insert_claimed(c: &Coordination, fp: u8, id: JobId, user: &str) -> JobRecord {
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

/// Makes `calls` concurrent calls, alternating between two instances.
pub async fn on_both<R, Fut>(
    (a, b): &(Coordination, Coordination),
    calls: usize,
    call: impl Fn(Coordination) -> Fut,
) -> Vec<R>
where
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    for n in 0..calls {
        running.spawn(call(if n % 2 == 0 { a.clone() } else { b.clone() }));
    }
    running.join_all().await
}

/// A progress update: `rows` rows in `chunks` chunks so far.
pub fn progress(rows: u64, chunks: u64) -> JobUpdate {
    JobUpdate::Progress {
        rows,
        chunks,
        at: Utc::now(),
        attempt: 1,
    }
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
        attempt: None,
    }
}

/// A test backend for the timeout-and-retry wrapper: its first calls fail
/// (or hang), then calls go through to `inner`. Each trait's suite
/// implements the trait for it.
pub struct Flaky<T> {
    pub inner: T,
    pub script: Arc<FlakyScript>,
}

/// What a [`Flaky`] backend does, and how often it was called.
pub struct FlakyScript {
    failures: AtomicUsize,
    hangs: AtomicUsize,
    error: fn() -> CoordError,
    calls: AtomicUsize,
}

impl FlakyScript {
    /// The next `failures` calls fail with `error()`.
    pub fn failing(failures: usize, error: fn() -> CoordError) -> Arc<FlakyScript> {
        Arc::new(FlakyScript {
            failures: AtomicUsize::new(failures),
            hangs: AtomicUsize::new(0),
            error,
            calls: AtomicUsize::new(0),
        })
    }

    /// The next `hangs` calls never answer.
    pub fn hanging(hangs: usize) -> Arc<FlakyScript> {
        let script = FlakyScript::failing(0, unavailable);
        script.hangs.store(hangs, Ordering::SeqCst);
        script
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Called first by every operation of a `Flaky` backend.
    pub async fn gate(&self) -> Result<(), CoordError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let take = |n: &AtomicUsize| {
            n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        };
        if take(&self.hangs) {
            std::future::pending::<()>().await;
        }
        if take(&self.failures) {
            return Err((self.error)());
        }
        Ok(())
    }
}

impl<T> Flaky<T> {
    pub fn new(inner: T, script: &Arc<FlakyScript>) -> Flaky<T> {
        Flaky {
            inner,
            script: script.clone(),
        }
    }
}

pub fn unavailable() -> CoordError {
    CoordError::Unavailable("injected failure".into())
}

pub fn not_found() -> CoordError {
    CoordError::NotFound(JobId::new())
}

/// Short deadlines and backoffs, so the wrapper's cases run quickly: three
/// retries after the first attempt.
pub fn test_policy() -> Policy {
    Policy {
        call_timeout: Duration::from_millis(200),
        multi_call_timeout: Duration::from_millis(400),
        max_retries: 3,
        min_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(10),
    }
}

/// `op` around a backend that fails `failures` times with a retryable error
/// then answers: retried into success while the failures fit the retry
/// budget, the error once they do not. `make` wraps a script's `Flaky`
/// backend in the policy.
pub async fn assert_retried<W, R>(
    make: impl Fn(&Arc<FlakyScript>) -> W,
    op: impl AsyncFn(&W) -> Result<R, CoordError>,
) {
    let script = FlakyScript::failing(3, unavailable);
    op(&make(&script))
        .await
        .unwrap_or_else(|e| panic!("three failures are retried away, got {e}"));
    assert_eq!(script.calls(), 4);

    let script = FlakyScript::failing(4, unavailable);
    let error = op(&make(&script))
        .await
        .err()
        .expect("over the retry budget");
    assert!(matches!(error, CoordError::Unavailable(_)), "{error}");
    assert_eq!(script.calls(), 4);

    let script = FlakyScript::failing(1, not_found);
    let error = op(&make(&script)).await.err().expect("not retryable");
    assert!(matches!(error, CoordError::NotFound(_)), "{error}");
    assert_eq!(script.calls(), 1);

    let script = FlakyScript::hanging(1);
    op(&make(&script))
        .await
        .unwrap_or_else(|e| panic!("a hung attempt times out and is retried, got {e}"));
    assert_eq!(script.calls(), 2);
}

/// `op` is not idempotent: one failure, or one hang, is the caller's.
pub async fn assert_not_retried<W, R: std::fmt::Debug>(
    make: impl Fn(&Arc<FlakyScript>) -> W,
    op: impl AsyncFn(&W) -> Result<R, CoordError>,
) {
    let script = FlakyScript::failing(1, unavailable);
    let error = op(&make(&script)).await.expect_err("not retried");
    assert!(matches!(error, CoordError::Unavailable(_)), "{error}");
    assert_eq!(script.calls(), 1);

    let script = FlakyScript::hanging(1);
    let error = op(&make(&script)).await.expect_err("timed out");
    assert!(matches!(error, CoordError::Timeout), "{error}");
    assert_eq!(script.calls(), 1);
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
