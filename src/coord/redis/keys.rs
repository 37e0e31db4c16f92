//! Where the distributed backends keep their state on one Redis server.
//!
//! Key layout, every key under a configurable `{prefix}`:
//!
//! | key                              | type   | owner            | holds                                          |
//! |----------------------------------|--------|------------------|------------------------------------------------|
//! | `{prefix}:fp:{fingerprint hex}`  | string | `Dedup`          | `admitting:{jobId}` (with a TTL) or `live:{jobId}` |
//! | `{prefix}:offsets`               | hash   | `OffsetPool`     | offset number -> jobId holding its lease       |
//! | `{prefix}:offsets:cursor`        | string | `OffsetPool`     | where the round-robin search starts            |
//! | `{prefix}:offsets:epoch`         | string | `OffsetPool`     | `0`, written at connect; when missing, Redis lost its data and leasing pauses (the time it went missing, ms) |
//! | `{prefix}:job:{jobId}`           | string | `JobStore`       | the `JobRecord` as JSON                        |
//! | `{prefix}:offset:{n}`            | hash   | `JobStore`       | the offset's public view: `jobId`, `status`, `rows`, `chunks`, `updatedAt` (ms); written by the scripts that change its job; the one stable key (docs/REDIS.md) |
//! | `{prefix}:user:{len}:{tenant}:{user}` | zset | `JobStore`   | the user's job ids, started or joined by dedup (score 0: ids sort by time) |
//! | `{prefix}:joiners:{jobId}`       | set    | `JobStore`       | the user index keys of those who joined the job, for its expiry to clean |
//! | `{prefix}:expiry`                | zset   | `JobStore`       | finished job ids scored by `expires_at` (µs)    |
//! | `{prefix}:changes`               | pubsub | `JobStore`       | `{jobId}` on every change to the job, followed by ` {record JSON}` when the change wrote its record (insert, update), so long-polls woken by it need no read |
//! | `{prefix}:idem:{key hash hex}`   | string | `IdempotencyKeys`| `reserved:{request hash}` (with a TTL) or `done:{request hash}:{0\|1 deduplicated}:{jobId}` (with the key TTL) |
//! | `{prefix}:queue`                 | stream | `JobQueue`       | queued `JobSpec`s, consumer group `workers`; a new job's entry is written with its record (`JobIntake`) |
//! | `{prefix}:rate:{user}`           | string | `RateLimiter`    | the user's GCRA theoretical arrival time (µs)  |
//! | `{prefix}:chunks:{jobId}`        | hash   | `ChunkIndex`     | chunk seq -> `{partition}:{position}:{attempt}`: where the chunk landed in the Kafka result topic, and the job attempt that wrote it (7-day TTL) |
//!
//! Every decision that reads and then writes runs as one Lua script (in
//! `scripts/`), which Redis executes without interleaving other commands:
//! that is what keeps two instances from leasing one offset or starting two
//! jobs for one fingerprint. Taking a fingerprint over from a job too stale
//! to share is a compare-and-set from `live:{stale jobId}` to
//! `admitting:{new jobId}`, so two instances that found the same stale job
//! start one fresh job; finishing the stale job's expiry deletes the
//! fingerprint only while it still says `live:{stale jobId}`. Scripts never re-encode a record (Lua's cjson
//! would turn an empty `fields` array into `{}` and round large integers);
//! records are changed in Rust and written back with a compare-and-set
//! script instead.
//!
//! Some scripts touch keys of more than one owner, and say so in their
//! trait's doc: the fingerprint claim reads a job record (it builds the job
//! key from its arguments, so this needs a single Redis server or one hash
//! slot, not a cluster), inserting a job makes its fingerprint live (and,
//! taking a new job in, also queues it), and
//! finishing an expiry drops the fingerprint and the offset lease, and the
//! job from the user indexes its joiners set names (key names read from
//! data, another reason for one server).

use crate::coord::IdempotencyKey;
use crate::filter::Fingerprint;
use crate::model::{JobId, Offset};

/// The keys of one deployment (one prefix).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    pub leases: String,
    pub cursor: String,
    pub epoch: String,
    pub expiry: String,
    pub changes: String,
    pub queue: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            leases: format!("{prefix}:offsets"),
            cursor: format!("{prefix}:offsets:cursor"),
            epoch: format!("{prefix}:offsets:epoch"),
            expiry: format!("{prefix}:expiry"),
            changes: format!("{prefix}:changes"),
            queue: format!("{prefix}:queue"),
        }
    }

    /// What a job id is appended to for its record's key (scripts build job
    /// keys from it).
    pub fn job_prefix(&self) -> String {
        format!("{}:job:", self.prefix)
    }

    pub fn job(&self, id: impl std::fmt::Display) -> String {
        format!("{}:job:{id}", self.prefix)
    }

    pub fn fingerprint(&self, fingerprint: Fingerprint) -> String {
        format!("{}:fp:{fingerprint}", self.prefix)
    }

    pub fn idempotency(&self, key: IdempotencyKey) -> String {
        format!("{}:idem:{key}", self.prefix)
    }

    /// The tenant's length keeps `a:b`/`c` apart from `a`/`b:c`.
    pub fn user(&self, tenant: &str, user: &str) -> String {
        format!("{}:user:{}:{tenant}:{user}", self.prefix, tenant.len())
    }

    pub fn joiners(&self, job: JobId) -> String {
        format!("{}:joiners:{job}", self.prefix)
    }

    pub fn rate(&self, user: &str) -> String {
        format!("{}:rate:{user}", self.prefix)
    }

    /// The offset's public view for connectors that read Redis
    /// (docs/REDIS.md): a stable interface, unlike every other key here.
    pub fn offset(&self, offset: Offset) -> String {
        format!("{}:offset:{}", self.prefix, offset.0)
    }

    pub fn chunks(&self, job: JobId) -> String {
        format!("{}:chunks:{job}", self.prefix)
    }
}
