//! The distributed coordination backends on one Redis server: the
//! coordinator (dedup by fingerprint, the offset pool, job records, expiry,
//! change notification), the job queue (a stream with a consumer group) and
//! the per-user rate limit (GCRA). They keep the embedded implementations'
//! semantics so several API instances and workers can share the state.
//!
//! Key layout, every key under a configurable `{prefix}`:
//!
//! | key                              | type   | holds                                          |
//! |----------------------------------|--------|------------------------------------------------|
//! | `{prefix}:fp:{fingerprint hex}`  | string | `admitting:{jobId}` (with a TTL) or `live:{jobId}` |
//! | `{prefix}:offsets`               | hash   | offset number -> jobId holding its lease       |
//! | `{prefix}:offsets:cursor`        | string | where the round-robin search starts            |
//! | `{prefix}:job:{jobId}`           | string | the `JobRecord` as JSON                        |
//! | `{prefix}:user:{len}:{tenant}:{user}` | zset | the user's job ids (score 0: ids sort by time) |
//! | `{prefix}:expiry`                | zset   | finished job ids scored by `expires_at` (µs)    |
//! | `{prefix}:changes`               | pubsub | a job id, published on every change to it       |
//! | `{prefix}:queue`                 | stream | queued `JobSpec`s, consumer group `workers`    |
//! | `{prefix}:rate:{user}`           | string | the user's GCRA theoretical arrival time (µs)  |
//! | `{prefix}:idem:{key hash hex}`   | string | `reserved:{request hash}` (with a TTL) or `done:{request hash}:{0\|1 deduplicated}:{jobId}` (with the key TTL) |
//!
//! Every decision that reads and then writes runs as one Lua script, which
//! Redis executes without interleaving other commands: that is what keeps two
//! instances from leasing one offset or starting two jobs for one
//! fingerprint. Scripts never re-encode a record (Lua's cjson would turn an
//! empty `fields` array into `{}` and round large integers); records are
//! changed in Rust and written back with a compare-and-set script instead.
//! The claim script builds a job key from its arguments, so this needs a
//! single Redis server (or one hash slot), not a cluster.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, MultiplexedConnection, PubSub};
use ::redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use ::redis::{Client, RedisError, RedisResult, Script};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, warn};

use super::{
    Claim, CoordError, Coordinator, IDEMPOTENCY_RESERVATION_TTL, IdempotencyKey, JobQueue,
    KeyClaim, PoolUsage, QueuedJob, RateLimiter, RequestHash,
};
use crate::config::RateLimit;
use crate::filter::Fingerprint;
use crate::model::{JobId, JobRecord, JobSpec, JobStatus, JobUpdate, Offset};

/// Longest a single Redis call may take before the caller sees `Timeout`.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// An admitting claim outlives a crashed admitter by at most this long.
const ADMITTING_TTL: Duration = Duration::from_secs(30);
/// How often a long-poll re-reads its job while the change subscriber is down.
const POLL_WITHOUT_SUBSCRIBER: Duration = Duration::from_millis(200);
/// How long one blocking stream read waits; bounds how late shutdown and
/// takeovers are noticed.
const QUEUE_BLOCK: Duration = Duration::from_millis(1000);
/// Compare-and-set attempts before an update gives up under contention.
const MAX_CAS_ATTEMPTS: usize = 64;
const GROUP: &str = "workers";
/// The most job records one instance remembers having written (see
/// `WrittenRecords`): a few MiB. Live jobs hold an offset each, so a small
/// pool bounds them sooner.
const REMEMBERED_RECORDS: usize = 4096;

fn unavailable(e: RedisError) -> CoordError {
    CoordError::Unavailable(e.to_string())
}

/// Runs one Redis call under `limit`, mapping failures to `CoordError`.
async fn timed<T>(
    limit: Duration,
    call: impl Future<Output = RedisResult<T>>,
) -> Result<T, CoordError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(CoordError::Timeout),
    }
}

async fn call<T>(call: impl Future<Output = RedisResult<T>>) -> Result<T, CoordError> {
    timed(CALL_TIMEOUT, call).await
}

async fn open(url: &str) -> Result<(Client, ConnectionManager), CoordError> {
    let client = Client::open(url).map_err(unavailable)?;
    let conn = call(ConnectionManager::new(client.clone())).await?;
    Ok((client, conn))
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn decode_record(id: impl std::fmt::Display, json: &str) -> Result<JobRecord, CoordError> {
    serde_json::from_str(json)
        .map_err(|e| CoordError::Unavailable(format!("job {id} has an unreadable record: {e}")))
}

fn encode_record(record: &JobRecord) -> Result<String, CoordError> {
    serde_json::to_string(record).map_err(|e| {
        CoordError::Unavailable(format!("job {} could not be encoded: {e}", record.id()))
    })
}

// ---------------------------------------------------------------------------
// Coordinator
// ---------------------------------------------------------------------------

/// Takes a fingerprint for `job` unless another submission is admitting it or
/// a live (not expired) job holds it. Atomic so that of any number of
/// concurrent claimants exactly one wins.
const CLAIM_FINGERPRINT: &str = r#"
-- KEYS[1] fingerprint key
-- ARGV[1] job id, ARGV[2] job key prefix, ARGV[3] admitting TTL (ms)
local holder = redis.call('GET', KEYS[1])
if holder then
  local kind, id = string.match(holder, '^(%a+):(.*)$')
  if kind == 'admitting' then
    if id == ARGV[1] then return {'won'} end
    return {'pending'}
  end
  if kind == 'live' then
    local record = redis.call('GET', ARGV[2] .. id)
    if record then
      local ok, decoded = pcall(cjson.decode, record)
      -- An expiring job's result is going away: start afresh.
      if ok and decoded['status'] ~= 'expired' then return {'existing', record} end
    end
  end
end
redis.call('SET', KEYS[1], 'admitting:' .. ARGV[1], 'PX', ARGV[3])
return {'won'}
"#;

/// Deletes a key only while it still holds the expected value.
const DELETE_IF_EQUAL: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Finds the next free offset from the cursor and moves the cursor past it.
/// Atomic so two instances never lease the same offset.
const LEASE_OFFSET: &str = r#"
-- KEYS[1] leases hash, KEYS[2] cursor; ARGV[1] pool size, ARGV[2] job id
local size = tonumber(ARGV[1])
if redis.call('HLEN', KEYS[1]) >= size then return -1 end
local start = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if start >= size then start = 0 end
for step = 0, size - 1 do
  local n = (start + step) % size
  if redis.call('HSETNX', KEYS[1], n, ARGV[2]) == 1 then
    redis.call('SET', KEYS[2], (n + 1) % size)
    return n
  end
end
return -1
"#;

/// Releases an offset only if `job` holds it.
const RELEASE_OFFSET: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"#;

/// Stores a new job and makes its fingerprint claim live, in one step so no
/// reader sees a live fingerprint without its record.
const INSERT_JOB: &str = r#"
-- KEYS[1] job, KEYS[2] fingerprint, KEYS[3] user index, KEYS[4] expiry index
-- ARGV[1] record JSON, ARGV[2] job id, ARGV[3] expiry score or '', ARGV[4] changes channel
redis.call('SET', KEYS[1], ARGV[1])
-- A plain SET also drops the admitting claim's TTL.
redis.call('SET', KEYS[2], 'live:' .. ARGV[2])
redis.call('ZADD', KEYS[3], 0, ARGV[2])
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2]) end
redis.call('PUBLISH', ARGV[4], ARGV[2])
return 0
"#;

/// Writes an updated record only if nobody changed it since it was read (the
/// optimistic half of `update_job`); indexes its expiry and announces it.
/// The record as read is named by its SHA-1, so the call carries the record
/// once. Answers `{1, ''}` when written, `{-1, ''}` when the job is gone, and
/// on a lost race `{0, current}`, the record to apply the update to instead
/// (saving the caller a `GET`).
const UPDATE_JOB: &str = r#"
-- KEYS[1] job, KEYS[2] expiry index
-- ARGV[1] SHA-1 (hex) of the record as read, ARGV[2] new record, ARGV[3] job id, ARGV[4] expiry score or '', ARGV[5] channel
local current = redis.call('GET', KEYS[1])
if not current then return {-1, ''} end
if redis.sha1hex(current) ~= ARGV[1] then return {0, current} end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3]) end
redis.call('PUBLISH', ARGV[5], ARGV[3])
return {1, ''}
"#;

/// Marks one due job expired and takes it out of the expiry index in the
/// same step: whichever caller's script runs first gets the job, every other
/// caller finds it no longer indexed. Returns 1 when this caller expired it,
/// 2 when the record changed since it was read (retry), 0 otherwise.
const EXPIRE_JOB: &str = r#"
-- KEYS[1] job, KEYS[2] expiry index
-- ARGV[1] record as read, ARGV[2] expired record, ARGV[3] job id, ARGV[4] now (µs), ARGV[5] channel
local score = redis.call('ZSCORE', KEYS[2], ARGV[3])
if not score or tonumber(score) > tonumber(ARGV[4]) then return 0 end
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('ZREM', KEYS[2], ARGV[3])
  return 0
end
if current ~= ARGV[1] then return 2 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[3])
return 1
"#;

/// Forgets an expired job; the fingerprint and the offset only if they still
/// belong to it (a new job may already hold the fingerprint).
const FINISH_EXPIRY: &str = r#"
-- KEYS[1] job, KEYS[2] fingerprint, KEYS[3] leases, KEYS[4] user index, KEYS[5] expiry index
-- ARGV[1] job id, ARGV[2] offset, ARGV[3] channel
redis.call('DEL', KEYS[1])
if redis.call('GET', KEYS[2]) == 'live:' .. ARGV[1] then redis.call('DEL', KEYS[2]) end
if redis.call('HGET', KEYS[3], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[3], ARGV[2]) end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 0
"#;

/// Presents an idempotency key: a live key answers for itself (mismatch,
/// pending, or replay of its job while the job is not expired); a free one,
/// or one whose job is gone, is reserved for this request. Atomic so that of
/// concurrent claims exactly one wins.
const CLAIM_IDEMPOTENCY_KEY: &str = r#"
-- KEYS[1] idempotency key
-- ARGV[1] request hash, ARGV[2] job key prefix, ARGV[3] reservation TTL (ms)
local held = redis.call('GET', KEYS[1])
if held then
  local kind, request, rest = string.match(held, '^(%a+):(%x+):?(.*)$')
  local live = kind == 'reserved'
  local dedup, id
  if kind == 'done' then
    dedup, id = string.match(rest, '^(%d):(.+)$')
    local record = id and redis.call('GET', ARGV[2] .. id)
    if record then
      local ok, decoded = pcall(cjson.decode, record)
      live = ok and decoded['status'] ~= 'expired'
    end
  end
  if live then
    if request ~= ARGV[1] then return {'mismatch'} end
    if kind == 'reserved' then return {'pending'} end
    return {'replay', id, dedup}
  end
end
redis.call('SET', KEYS[1], 'reserved:' .. ARGV[1], 'PX', ARGV[3])
return {'won'}
"#;

/// Binds a reserved key to its job, unless the reservation lapsed and
/// another request took the key meanwhile.
const COMPLETE_IDEMPOTENCY_KEY: &str = r#"
-- KEYS[1] idempotency key; ARGV[1] the reservation, ARGV[2] the done value, ARGV[3] TTL (ms)
local held = redis.call('GET', KEYS[1])
if (not held) or held == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 0
"#;

struct CoordinatorScripts {
    claim_idempotency_key: Script,
    complete_idempotency_key: Script,
    claim_fingerprint: Script,
    delete_if_equal: Script,
    lease_offset: Script,
    release_offset: Script,
    insert_job: Script,
    update_job: Script,
    expire_job: Script,
    finish_expiry: Script,
}

impl CoordinatorScripts {
    fn new() -> CoordinatorScripts {
        CoordinatorScripts {
            claim_idempotency_key: Script::new(CLAIM_IDEMPOTENCY_KEY),
            complete_idempotency_key: Script::new(COMPLETE_IDEMPOTENCY_KEY),
            claim_fingerprint: Script::new(CLAIM_FINGERPRINT),
            delete_if_equal: Script::new(DELETE_IF_EQUAL),
            lease_offset: Script::new(LEASE_OFFSET),
            release_offset: Script::new(RELEASE_OFFSET),
            insert_job: Script::new(INSERT_JOB),
            update_job: Script::new(UPDATE_JOB),
            expire_job: Script::new(EXPIRE_JOB),
            finish_expiry: Script::new(FINISH_EXPIRY),
        }
    }
}

/// The long-polls of this process, by job. One subscriber task feeds them,
/// so thousands of waiters cost one Redis connection.
struct Waiters {
    by_job: Mutex<HashMap<JobId, watch::Sender<()>>>,
    /// Whether the change subscriber is connected; waiters poll while not.
    listening: AtomicBool,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, watch::Sender<()>>> {
        // The map is valid after any panic (inserts and removes are single
        // operations), so a poisoned lock is still usable.
        crate::lock(&self.by_job)
    }

    fn watch(self: &Arc<Self>, id: JobId) -> WaitRegistration {
        let changed = self
            .lock()
            .entry(id)
            .or_insert_with(|| watch::channel(()).0)
            .subscribe();
        WaitRegistration {
            waiters: self.clone(),
            id,
            changed,
        }
    }

    fn notify(&self, id: JobId) {
        if let Some(sender) = self.lock().get(&id) {
            sender.send_replace(());
        }
    }

    fn notify_all(&self) {
        for sender in self.lock().values() {
            sender.send_replace(());
        }
    }
}

/// A waiter's interest in one job; removes the job's entry when the last
/// waiter for it goes (also when a long-poll request is dropped).
struct WaitRegistration {
    waiters: Arc<Waiters>,
    id: JobId,
    changed: watch::Receiver<()>,
}

impl Drop for WaitRegistration {
    fn drop(&mut self) {
        let mut by_job = self.waiters.lock();
        // Our own receiver is still alive here, so 1 means "only us".
        if by_job
            .get(&self.id)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            by_job.remove(&self.id);
        }
    }
}

/// The record text this instance last wrote for each of its recent jobs, so
/// its next update of the same job (a worker's started, progress, finished)
/// compares and sets against it without reading the record first. An entry
/// another instance has since overwritten costs nothing extra: the update
/// script answers the mismatch with the current record. Bounded: past
/// `capacity` jobs the oldest entry goes.
struct WrittenRecords {
    capacity: usize,
    inner: Mutex<WrittenRecordsInner>,
}

#[derive(Default)]
struct WrittenRecordsInner {
    by_job: HashMap<JobId, String>,
    /// Jobs in the order they were first remembered; may name jobs since
    /// forgotten, which eviction skips.
    order: VecDeque<JobId>,
}

impl WrittenRecords {
    fn new(capacity: usize) -> WrittenRecords {
        WrittenRecords {
            capacity: capacity.max(1),
            inner: Mutex::new(WrittenRecordsInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WrittenRecordsInner> {
        // Every change is a single map or queue operation, so a poisoned
        // lock still guards consistent data.
        crate::lock(&self.inner)
    }

    fn get(&self, id: JobId) -> Option<String> {
        self.lock().by_job.get(&id).cloned()
    }

    fn remember(&self, id: JobId, json: String) {
        let mut inner = self.lock();
        if inner.by_job.insert(id, json).is_none() {
            inner.order.push_back(id);
        }
        // The queue may also hold forgotten jobs; let it grow to twice the
        // capacity before it is cut back, so the cut is rare.
        while inner.by_job.len() > self.capacity || inner.order.len() > 2 * self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.by_job.remove(&oldest);
        }
    }

    fn forget(&self, id: JobId) {
        self.lock().by_job.remove(&id);
    }
}

/// Keys of one coordinator deployment.
struct CoordKeys {
    prefix: String,
    leases: String,
    cursor: String,
    expiry: String,
    changes: String,
}

impl CoordKeys {
    fn new(prefix: &str) -> CoordKeys {
        CoordKeys {
            prefix: prefix.to_owned(),
            leases: format!("{prefix}:offsets"),
            cursor: format!("{prefix}:offsets:cursor"),
            expiry: format!("{prefix}:expiry"),
            changes: format!("{prefix}:changes"),
        }
    }

    fn job_prefix(&self) -> String {
        format!("{}:job:", self.prefix)
    }

    fn job(&self, id: JobId) -> String {
        format!("{}:job:{id}", self.prefix)
    }

    fn fingerprint(&self, fingerprint: Fingerprint) -> String {
        format!("{}:fp:{fingerprint}", self.prefix)
    }

    fn idempotency(&self, key: IdempotencyKey) -> String {
        format!("{}:idem:{key}", self.prefix)
    }

    /// The tenant's length keeps `a:b`/`c` apart from `a`/`b:c`.
    fn user(&self, tenant: &str, user: &str) -> String {
        format!("{}:user:{}:{tenant}:{user}", self.prefix, tenant.len())
    }
}

pub struct RedisCoordinator {
    conn: ConnectionManager,
    keys: CoordKeys,
    pool_size: u32,
    scripts: CoordinatorScripts,
    waiters: Arc<Waiters>,
    written: WrittenRecords,
    /// Stops the change subscriber when the coordinator is dropped.
    _stop_listening: DropGuard,
}

impl RedisCoordinator {
    /// Connects to `url` and subscribes to change notifications before
    /// returning, so the first long-poll already wakes on changes.
    pub async fn connect(
        url: &str,
        prefix: &str,
        pool_size: u32,
    ) -> Result<RedisCoordinator, CoordError> {
        let (client, conn) = open(url).await?;
        let keys = CoordKeys::new(prefix);
        let pubsub = subscribe(&client, &keys.changes).await?;
        let waiters = Arc::new(Waiters {
            by_job: Mutex::new(HashMap::new()),
            listening: AtomicBool::new(true),
        });
        let stop = CancellationToken::new();
        tokio::spawn(listen_for_changes(
            client,
            keys.changes.clone(),
            waiters.clone(),
            pubsub,
            stop.clone(),
        ));
        Ok(RedisCoordinator {
            conn,
            keys,
            pool_size,
            scripts: CoordinatorScripts::new(),
            waiters,
            written: WrittenRecords::new(REMEMBERED_RECORDS.min(2 * pool_size as usize)),
            _stop_listening: stop.drop_guard(),
        })
    }

    async fn record_json(&self, id: JobId) -> Result<Option<String>, CoordError> {
        let mut conn = self.conn.clone();
        call(
            ::redis::cmd("GET")
                .arg(self.keys.job(id))
                .query_async(&mut conn),
        )
        .await
    }
}

async fn subscribe(client: &Client, channel: &str) -> Result<PubSub, CoordError> {
    let mut pubsub = call(client.get_async_pubsub()).await?;
    call(pubsub.subscribe(channel)).await?;
    Ok(pubsub)
}

/// The process's one change subscriber: forwards each published job id to
/// the local waiters for that job, reconnecting when the connection drops.
async fn listen_for_changes(
    client: Client,
    channel: String,
    waiters: Arc<Waiters>,
    first: PubSub,
    stop: CancellationToken,
) {
    let mut connected = Some(first);
    let mut backoff = POLL_WITHOUT_SUBSCRIBER;
    loop {
        let pubsub = match connected.take() {
            Some(pubsub) => pubsub,
            None => {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                match subscribe(&client, &channel).await {
                    Ok(pubsub) => pubsub,
                    Err(e) => {
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        warn!(error = %e, "change subscriber cannot reconnect; long-polls keep polling");
                        continue;
                    }
                }
            }
        };
        backoff = POLL_WITHOUT_SUBSCRIBER;
        waiters.listening.store(true, Ordering::SeqCst);
        // Changes published while we were away are lost: let every waiter re-read.
        waiters.notify_all();
        let mut messages = pubsub.into_on_message();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                message = messages.next() => match message {
                    Some(message) => match message.get_payload::<String>().map(|p| p.parse::<JobId>()) {
                        Ok(Ok(id)) => waiters.notify(id),
                        _ => debug!("ignoring a malformed change notification"),
                    },
                    None => break,
                },
            }
        }
        waiters.listening.store(false, Ordering::SeqCst);
        // Wake everyone so they switch to polling instead of waiting for a
        // notification that cannot come.
        waiters.notify_all();
        warn!("change subscriber lost its connection; long-polls poll until it is back");
    }
}

#[async_trait]
impl Coordinator for RedisCoordinator {
    async fn claim_fingerprint(
        &self,
        fingerprint: Fingerprint,
        job: JobId,
    ) -> Result<Claim, CoordError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.claim_fingerprint.prepare_invoke();
        invocation
            .key(self.keys.fingerprint(fingerprint))
            .arg(job.to_string())
            .arg(self.keys.job_prefix())
            .arg(ADMITTING_TTL.as_millis() as u64);
        let reply: Vec<String> = call(invocation.invoke_async(&mut conn)).await?;
        match reply.as_slice() {
            [outcome] if outcome == "won" => Ok(Claim::Won),
            [outcome] if outcome == "pending" => Ok(Claim::Pending),
            [outcome, record] if outcome == "existing" => {
                let record = decode_record(fingerprint, record)?;
                Ok(Claim::Existing(Box::new(record)))
            }
            other => Err(CoordError::Unavailable(format!(
                "unexpected fingerprint claim reply {other:?}"
            ))),
        }
    }

    async fn claim_idempotency_key(
        &self,
        key: IdempotencyKey,
        request: RequestHash,
    ) -> Result<KeyClaim, CoordError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.claim_idempotency_key.prepare_invoke();
        invocation
            .key(self.keys.idempotency(key))
            .arg(request.to_string())
            .arg(self.keys.job_prefix())
            .arg(IDEMPOTENCY_RESERVATION_TTL.as_millis() as u64);
        let reply: Vec<String> = call(invocation.invoke_async(&mut conn)).await?;
        match reply.as_slice() {
            [outcome] if outcome == "won" => Ok(KeyClaim::Won),
            [outcome] if outcome == "pending" => Ok(KeyClaim::Pending),
            [outcome] if outcome == "mismatch" => Ok(KeyClaim::Mismatch),
            [outcome, job, deduplicated] if outcome == "replay" => {
                let job = job.parse().map_err(|_| {
                    CoordError::Unavailable(format!("idempotency key {key} holds job id {job:?}"))
                })?;
                Ok(KeyClaim::Replay {
                    job,
                    deduplicated: deduplicated == "1",
                })
            }
            other => Err(CoordError::Unavailable(format!(
                "unexpected idempotency key claim reply {other:?}"
            ))),
        }
    }

    async fn complete_idempotency_key(
        &self,
        key: IdempotencyKey,
        request: RequestHash,
        job: JobId,
        deduplicated: bool,
        ttl: Duration,
    ) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.complete_idempotency_key.prepare_invoke();
        invocation
            .key(self.keys.idempotency(key))
            .arg(format!("reserved:{request}"))
            .arg(format!("done:{request}:{}:{job}", u8::from(deduplicated)))
            .arg(ttl.as_millis().max(1) as u64);
        call(invocation.invoke_async::<()>(&mut conn)).await
    }

    async fn abandon_idempotency_key(
        &self,
        key: IdempotencyKey,
        request: RequestHash,
    ) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.delete_if_equal.prepare_invoke();
        invocation
            .key(self.keys.idempotency(key))
            .arg(format!("reserved:{request}"));
        call(invocation.invoke_async::<()>(&mut conn)).await
    }

    async fn abandon_fingerprint(
        &self,
        fingerprint: Fingerprint,
        job: JobId,
    ) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.delete_if_equal.prepare_invoke();
        invocation
            .key(self.keys.fingerprint(fingerprint))
            .arg(format!("admitting:{job}"));
        call(invocation.invoke_async::<()>(&mut conn)).await
    }

    async fn lease_offset(&self, job: JobId) -> Result<Option<Offset>, CoordError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.lease_offset.prepare_invoke();
        invocation
            .key(&self.keys.leases)
            .key(&self.keys.cursor)
            .arg(self.pool_size)
            .arg(job.to_string());
        let n: i64 = call(invocation.invoke_async(&mut conn)).await?;
        Ok(u32::try_from(n).ok().map(Offset))
    }

    async fn release_offset(&self, offset: Offset, job: JobId) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.release_offset.prepare_invoke();
        invocation
            .key(&self.keys.leases)
            .arg(offset.0)
            .arg(job.to_string());
        call(invocation.invoke_async::<()>(&mut conn)).await
    }

    async fn insert_job(&self, record: JobRecord) -> Result<(), CoordError> {
        let id = record.id();
        let expiry = match record.expires_at {
            Some(at) if record.status.is_finished() && record.status != JobStatus::Expired => {
                micros(at).to_string()
            }
            _ => String::new(),
        };
        let json = encode_record(&record)?;
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.insert_job.prepare_invoke();
        invocation
            .key(self.keys.job(id))
            .key(self.keys.fingerprint(record.spec.fingerprint))
            .key(self.keys.user(&record.spec.tenant, &record.spec.user))
            .key(&self.keys.expiry)
            .arg(&json)
            .arg(id.to_string())
            .arg(expiry)
            .arg(&self.keys.changes);
        call(invocation.invoke_async::<()>(&mut conn)).await?;
        self.written.remember(id, json);
        Ok(())
    }

    async fn job(&self, id: JobId) -> Result<Option<JobRecord>, CoordError> {
        self.record_json(id)
            .await?
            .map(|json| decode_record(id, &json))
            .transpose()
    }

    async fn job_at_offset(&self, offset: Offset) -> Result<Option<JobRecord>, CoordError> {
        let mut conn = self.conn.clone();
        let holder: Option<String> = call(
            ::redis::cmd("HGET")
                .arg(&self.keys.leases)
                .arg(offset.0)
                .query_async(&mut conn),
        )
        .await?;
        match holder.and_then(|h| h.parse::<JobId>().ok()) {
            Some(id) => self.job(id).await,
            None => Ok(None),
        }
    }

    async fn jobs_of(
        &self,
        tenant: &str,
        user: &str,
        status: Option<JobStatus>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, CoordError> {
        const PAGE: usize = 100;
        let mut conn = self.conn.clone();
        // Equal scores order members by their text, and hyphenated UUIDv7s
        // sort by creation time: reversed, that is newest first.
        let ids: Vec<String> = call(
            ::redis::cmd("ZREVRANGE")
                .arg(self.keys.user(tenant, user))
                .arg(0)
                .arg(-1)
                .query_async(&mut conn),
        )
        .await?;
        let mut jobs = Vec::new();
        for page in ids.chunks(PAGE) {
            if jobs.len() >= limit {
                break;
            }
            let keys: Vec<String> = page
                .iter()
                .map(|id| format!("{}{id}", self.keys.job_prefix()))
                .collect();
            let records: Vec<Option<String>> =
                call(::redis::cmd("MGET").arg(&keys).query_async(&mut conn)).await?;
            for (id, json) in page.iter().zip(records) {
                // A job expiring right now may have lost its record already.
                let Some(json) = json else { continue };
                let record = decode_record(id, &json)?;
                if status.is_none_or(|s| record.status == s) {
                    jobs.push(record);
                }
            }
        }
        jobs.truncate(limit);
        Ok(jobs)
    }

    async fn update_job(
        &self,
        id: JobId,
        update: JobUpdate,
    ) -> Result<Option<JobRecord>, CoordError> {
        let mut conn = self.conn.clone();
        let mut read = match self.written.get(id) {
            Some(json) => json,
            None => match self.record_json(id).await? {
                Some(json) => json,
                None => return Ok(None),
            },
        };
        for _ in 0..MAX_CAS_ATTEMPTS {
            let mut record = decode_record(id, &read)?;
            let was_expired = record.status == JobStatus::Expired;
            record.apply(&update);
            // Only finished jobs enter the expiry index, so running jobs never expire.
            let expiry = match (&update, record.expires_at) {
                (JobUpdate::Finished { .. }, Some(at)) if !was_expired => micros(at).to_string(),
                _ => String::new(),
            };
            let written = encode_record(&record)?;
            let mut invocation = self.scripts.update_job.prepare_invoke();
            invocation
                .key(self.keys.job(id))
                .key(&self.keys.expiry)
                .arg(sha1_smol::Sha1::from(&read).digest().to_string())
                .arg(&written)
                .arg(id.to_string())
                .arg(expiry)
                .arg(&self.keys.changes);
            let (outcome, current): (i64, String) =
                call(invocation.invoke_async(&mut conn)).await?;
            match outcome {
                1 if record.status.is_finished() => {
                    // Nothing of this instance's updates it again.
                    self.written.forget(id);
                    return Ok(Some(record));
                }
                1 => {
                    self.written.remember(id, written);
                    return Ok(Some(record));
                }
                -1 => {
                    self.written.forget(id);
                    return Ok(None);
                }
                _ => read = current, // changed under us: apply again to the record as it is
            }
        }
        Err(CoordError::Unavailable(format!(
            "job {id} changed too often to update; try again"
        )))
    }

    async fn wait_for_change(
        &self,
        id: JobId,
        seen_version: u64,
        timeout: Duration,
    ) -> Result<Option<JobRecord>, CoordError> {
        let deadline = Instant::now() + timeout;
        // Registered before reading, so a change between the read and the
        // wait still wakes us.
        let mut registration = self.waiters.watch(id);
        loop {
            let Some(record) = self.job(id).await? else {
                return Ok(None);
            };
            let now = Instant::now();
            if record.version > seen_version || now >= deadline {
                return Ok(Some(record));
            }
            let nap = if self.waiters.listening.load(Ordering::SeqCst) {
                deadline - now
            } else {
                POLL_WITHOUT_SUBSCRIBER.min(deadline - now)
            };
            tokio::select! {
                changed = registration.changed.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep(POLL_WITHOUT_SUBSCRIBER.min(nap)).await;
                    }
                }
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn begin_expiry(&self, now: DateTime<Utc>) -> Result<Vec<JobRecord>, CoordError> {
        const BATCH: usize = 500;
        let mut conn = self.conn.clone();
        let now_us = micros(now);
        let due: Vec<String> = call(
            ::redis::cmd("ZRANGEBYSCORE")
                .arg(&self.keys.expiry)
                .arg("-inf")
                .arg(now_us)
                .arg("LIMIT")
                .arg(0)
                .arg(BATCH)
                .query_async(&mut conn),
        )
        .await?;
        let mut expired = Vec::new();
        for raw_id in due {
            let Ok(id) = raw_id.parse::<JobId>() else {
                warn!(member = %raw_id, "dropping a malformed member of the expiry index");
                let _: Result<i64, _> = call(
                    ::redis::cmd("ZREM")
                        .arg(&self.keys.expiry)
                        .arg(&raw_id)
                        .query_async(&mut conn),
                )
                .await;
                continue;
            };
            for _ in 0..MAX_CAS_ATTEMPTS {
                // A missing record still goes through the script, which
                // drops the stale index entry.
                let read = self.record_json(id).await?.unwrap_or_default();
                let mut record = if read.is_empty() {
                    None
                } else {
                    Some(decode_record(id, &read)?)
                };
                let marked = match record.as_mut() {
                    Some(record) => {
                        record.status = JobStatus::Expired;
                        record.version += 1;
                        encode_record(record)?
                    }
                    None => String::new(),
                };
                let mut invocation = self.scripts.expire_job.prepare_invoke();
                invocation
                    .key(self.keys.job(id))
                    .key(&self.keys.expiry)
                    .arg(&read)
                    .arg(marked)
                    .arg(id.to_string())
                    .arg(now_us)
                    .arg(&self.keys.changes);
                match call(invocation.invoke_async::<i64>(&mut conn)).await? {
                    1 => {
                        expired.extend(record);
                        break;
                    }
                    2 => continue,
                    _ => break, // another instance took it, or it is gone
                }
            }
        }
        Ok(expired)
    }

    async fn finish_expiry(&self, record: &JobRecord) -> Result<(), CoordError> {
        let id = record.id();
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.finish_expiry.prepare_invoke();
        invocation
            .key(self.keys.job(id))
            .key(self.keys.fingerprint(record.spec.fingerprint))
            .key(&self.keys.leases)
            .key(self.keys.user(&record.spec.tenant, &record.spec.user))
            .key(&self.keys.expiry)
            .arg(id.to_string())
            .arg(record.spec.offset.0)
            .arg(&self.keys.changes);
        call(invocation.invoke_async::<()>(&mut conn)).await
    }

    async fn pool_usage(&self) -> Result<PoolUsage, CoordError> {
        let mut conn = self.conn.clone();
        let leased: u32 = call(
            ::redis::cmd("HLEN")
                .arg(&self.keys.leases)
                .query_async(&mut conn),
        )
        .await?;
        Ok(PoolUsage {
            leased,
            size: self.pool_size,
        })
    }
}

// ---------------------------------------------------------------------------
// Job queue
// ---------------------------------------------------------------------------

/// Resets a delivery's idle time only while this consumer still owns it, so
/// a slow worker cannot steal back a job another worker has taken over.
const HEARTBEAT: &str = r#"
-- KEYS[1] stream; ARGV[1] group, ARGV[2] entry id, ARGV[3] consumer
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[3])
if #pending == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
"#;

/// A Redis stream read by the consumer group `workers`. A delivery stays
/// pending until acked; one idle longer than the lease (its worker stopped
/// heartbeating) is claimed by the next worker that asks.
pub struct RedisJobQueue {
    client: Client,
    conn: ConnectionManager,
    /// Connections for blocking reads: a blocked read holds its connection,
    /// so each concurrent `next` gets its own, reused afterwards.
    readers: Mutex<Vec<MultiplexedConnection>>,
    stream: String,
    consumer: String,
    lease: Duration,
    heartbeat: Script,
    /// When this process next looks for deliveries whose worker went silent.
    next_takeover_check: Mutex<Instant>,
}

impl RedisJobQueue {
    /// `consumer` names this worker process in the group; it must differ
    /// between processes. A delivery not heartbeated for `lease` is handed
    /// to another worker.
    pub async fn connect(
        url: &str,
        prefix: &str,
        consumer: &str,
        lease: Duration,
    ) -> Result<RedisJobQueue, CoordError> {
        let (client, mut conn) = open(url).await?;
        let stream = format!("{prefix}:queue");
        let created: RedisResult<()> = tokio::time::timeout(
            CALL_TIMEOUT,
            ::redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn),
        )
        .await
        .map_err(|_| CoordError::Timeout)?;
        match created {
            Ok(()) => {}
            // Another process created the group first.
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(unavailable(e)),
        }
        Ok(RedisJobQueue {
            client,
            conn,
            readers: Mutex::new(Vec::new()),
            stream,
            consumer: consumer.to_owned(),
            lease,
            heartbeat: Script::new(HEARTBEAT),
            next_takeover_check: Mutex::new(Instant::now()),
        })
    }

    fn readers(&self) -> std::sync::MutexGuard<'_, Vec<MultiplexedConnection>> {
        // A Vec of idle connections cannot be left inconsistent by a panic.
        crate::lock(&self.readers)
    }

    /// Claims one delivery idle longer than the lease (its worker is gone),
    /// if it is time to look. A silent delivery is only due after a whole
    /// lease, so one look per process every third of a lease is soon
    /// enough; looking before every read cost each job an `XAUTOCLAIM`
    /// round trip. After a takeover more may be waiting: the next call
    /// looks again.
    async fn take_over_if_due(&self) -> Result<Option<StreamId>, CoordError> {
        let now = Instant::now();
        {
            let mut next = crate::lock(&self.next_takeover_check);
            if now < *next {
                return Ok(None);
            }
            *next = now + self.lease / 3;
        }
        let taken = self.take_over().await?;
        if taken.is_some() {
            *crate::lock(&self.next_takeover_check) = now;
        }
        Ok(taken)
    }

    /// Claims one delivery idle longer than the lease: its worker is gone.
    async fn take_over(&self) -> Result<Option<StreamId>, CoordError> {
        let mut conn = self.conn.clone();
        let reply: StreamAutoClaimReply = call(
            ::redis::cmd("XAUTOCLAIM")
                .arg(&self.stream)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(self.lease.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn),
        )
        .await?;
        Ok(reply.claimed.into_iter().next())
    }

    /// Waits up to `QUEUE_BLOCK` for a new delivery.
    async fn read_new(&self) -> Result<Option<StreamId>, CoordError> {
        let pooled = self.readers().pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => call(self.client.get_multiplexed_async_connection()).await?,
        };
        let reply: Option<StreamReadReply> = timed(
            QUEUE_BLOCK + CALL_TIMEOUT,
            ::redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(QUEUE_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(">")
                .query_async(&mut conn),
        )
        .await?;
        // Only an idle connection goes back; one dropped mid-read (shutdown,
        // error) is closed.
        self.readers().push(conn);
        Ok(reply
            .and_then(|r| r.keys.into_iter().next())
            .and_then(|key| key.ids.into_iter().next()))
    }

    /// Turns a delivery into a job; a malformed one is acked away so it
    /// cannot stall the queue.
    async fn parse(&self, entry: StreamId) -> Result<Option<QueuedJob>, CoordError> {
        let spec = entry
            .get::<String>("spec")
            .ok_or_else(|| "no `spec` field".to_owned())
            .and_then(|json| serde_json::from_str::<JobSpec>(&json).map_err(|e| e.to_string()));
        match spec {
            Ok(spec) => Ok(Some(QueuedJob {
                spec,
                receipt: entry.id,
            })),
            Err(e) => {
                warn!(receipt = %entry.id, error = %e, "dropping a malformed queue entry");
                self.remove(&entry.id).await?;
                Ok(None)
            }
        }
    }

    async fn remove(&self, receipt: &str) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("XACK")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(receipt)
            .ignore()
            .cmd("XDEL")
            .arg(&self.stream)
            .arg(receipt)
            .ignore();
        call(pipe.query_async::<()>(&mut conn)).await
    }
}

#[async_trait]
impl JobQueue for RedisJobQueue {
    async fn enqueue(&self, spec: JobSpec) -> Result<(), CoordError> {
        let json = serde_json::to_string(&spec).map_err(|e| {
            CoordError::Unavailable(format!("job {} could not be encoded: {e}", spec.job_id))
        })?;
        let mut conn = self.conn.clone();
        call(
            ::redis::cmd("XADD")
                .arg(&self.stream)
                .arg("*")
                .arg("spec")
                .arg(json)
                .query_async::<String>(&mut conn),
        )
        .await
        .map(drop)
    }

    async fn next(&self, shutdown: &CancellationToken) -> Result<Option<QueuedJob>, CoordError> {
        while !shutdown.is_cancelled() {
            if let Some(entry) = self.take_over_if_due().await? {
                let receipt = entry.id.clone();
                if let Some(job) = self.parse(entry).await? {
                    warn!(job_id = %job.spec.job_id, offset = %job.spec.offset, receipt = %receipt,
                        "taking over a job whose worker stopped heartbeating");
                    return Ok(Some(job));
                }
                continue;
            }
            // A read cut short by shutdown may still deliver an entry to this
            // consumer; nobody acks it, so another worker takes it over after
            // the lease.
            let entry = tokio::select! {
                entry = self.read_new() => entry?,
                _ = shutdown.cancelled() => return Ok(None),
            };
            if let Some(entry) = entry
                && let Some(job) = self.parse(entry).await?
            {
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    async fn heartbeat(&self, job: &QueuedJob) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.heartbeat.prepare_invoke();
        invocation
            .key(&self.stream)
            .arg(GROUP)
            .arg(&job.receipt)
            .arg(&self.consumer);
        let owned: i64 = call(invocation.invoke_async(&mut conn)).await?;
        if owned == 0 {
            warn!(job_id = %job.spec.job_id, receipt = %job.receipt,
                "heartbeat for a job this worker no longer holds (taken over or acked)");
        }
        Ok(())
    }

    async fn ack(&self, job: &QueuedJob) -> Result<(), CoordError> {
        self.remove(&job.receipt).await
    }

    fn heartbeat_interval(&self) -> Option<Duration> {
        Some(self.lease / 3)
    }
}

// ---------------------------------------------------------------------------
// Rate limiter
// ---------------------------------------------------------------------------

/// GCRA, as governor computes it: a request is allowed when the theoretical
/// arrival time (TAT) is at most `burst - 1` intervals ahead of now. Uses the
/// server's clock so instances with skewed clocks agree. Returns -1 when
/// allowed, else the wait in microseconds.
const GCRA: &str = r#"
-- KEYS[1] the user's TAT; ARGV[1] emission interval (µs), ARGV[2] burst
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '') or now
if tat < now then tat = now end
local allow_at = tat - (burst - 1) * interval
if now < allow_at then return allow_at - now end
local new_tat = tat + interval
-- The key vanishes once the allowance is full again.
redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
  'PX', string.format('%.0f', math.ceil((new_tat - now) / 1000) + 1))
return -1
"#;

pub struct RedisRateLimiter {
    conn: ConnectionManager,
    prefix: String,
    /// `None` when the limit is disabled (count 0).
    gcra: Option<Gcra>,
}

struct Gcra {
    interval_us: u64,
    burst: u32,
    script: Script,
}

impl RedisRateLimiter {
    /// `limit.count` new jobs per `limit.per` and user, with a burst of
    /// `limit.count`; a count of 0 disables the limit.
    pub async fn connect(
        url: &str,
        prefix: &str,
        limit: RateLimit,
    ) -> Result<RedisRateLimiter, CoordError> {
        let (_, conn) = open(url).await?;
        let gcra = (limit.count > 0).then(|| Gcra {
            interval_us: ((limit.per.as_micros() / u128::from(limit.count)) as u64).max(1),
            burst: limit.count,
            script: Script::new(GCRA),
        });
        Ok(RedisRateLimiter {
            conn,
            prefix: prefix.to_owned(),
            gcra,
        })
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, user: &str) -> Result<(), Duration> {
        let Some(gcra) = &self.gcra else {
            return Ok(());
        };
        let mut conn = self.conn.clone();
        let mut invocation = gcra.script.prepare_invoke();
        invocation
            .key(format!("{}:rate:{user}", self.prefix))
            .arg(gcra.interval_us)
            .arg(gcra.burst);
        match call(invocation.invoke_async::<i64>(&mut conn)).await {
            Ok(wait) if wait > 0 => Err(Duration::from_micros(wait as u64)),
            Ok(_) => Ok(()),
            // Admission stays open when the limiter's backend is down: the
            // limit protects capacity, and the coordinator will refuse jobs
            // itself if Redis is really gone.
            Err(e) => {
                warn!(user, error = %e, "rate limiter unavailable; admitting without a limit");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_records_keep_the_newest_jobs_up_to_their_capacity() {
        let written = WrittenRecords::new(2);
        let [a, b, c] = [JobId::new(), JobId::new(), JobId::new()];
        written.remember(a, "a1".into());
        written.remember(b, "b1".into());
        written.remember(a, "a2".into()); // a rewrite keeps a's place
        assert_eq!(written.get(a).as_deref(), Some("a2"));
        written.remember(c, "c1".into());
        assert_eq!(written.get(a), None, "the oldest job goes first");
        assert_eq!(written.get(b).as_deref(), Some("b1"));
        assert_eq!(written.get(c).as_deref(), Some("c1"));
    }

    #[test]
    fn forgotten_jobs_do_not_grow_the_order_without_bound() {
        let written = WrittenRecords::new(4);
        for _ in 0..1_000 {
            let id = JobId::new();
            written.remember(id, "x".into());
            written.forget(id);
        }
        let inner = written.lock();
        assert!(inner.by_job.is_empty());
        assert!(inner.order.len() <= 8, "{}", inner.order.len());
    }
}
