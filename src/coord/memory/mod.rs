//! The embedded coordination: dedup, the offset pool, job records and
//! idempotency keys share one mutex-guarded state struct, because some of
//! their operations are atomic together (inserting a job makes its
//! fingerprint live; finishing its expiry drops the fingerprint and frees
//! the offset). Every decision happens under the lock, which is what makes
//! it atomic; the lock is never held across an await. Each trait has its
//! own handle on the shared state, in a file of its own.

mod chunks;
mod dedup;
mod idempotency;
mod jobs;
mod offsets;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{Coordination, IdempotencyKey, RequestHash};
use crate::filter::Fingerprint;
use crate::model::{JobId, JobRecord};

pub use chunks::MemoryChunkIndex;
pub use dedup::MemoryDedup;
pub use idempotency::MemoryIdempotencyKeys;
pub use jobs::MemoryJobStore;
pub use offsets::MemoryOffsetPool;

/// The embedded coordination for a pool of `pool_size` offsets: one state
/// behind the four traits.
pub fn coordination(pool_size: u32) -> Coordination {
    let shared = Shared::new(pool_size);
    Coordination {
        dedup: Arc::new(MemoryDedup(shared.clone())),
        offsets: Arc::new(MemoryOffsetPool(shared.clone())),
        job_store: Arc::new(MemoryJobStore(shared.clone())),
        idempotency: Arc::new(MemoryIdempotencyKeys(shared)),
        intake: None,
    }
}

/// The state the embedded traits share.
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn new(pool_size: u32) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State {
                jobs: HashMap::new(),
                fingerprints: HashMap::new(),
                leases: vec![None; pool_size as usize],
                cursor: 0,
                keys: HashMap::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way later calls would trip on, so a poisoned lock is still usable.
        crate::lock(&self.state)
    }
}

struct State {
    jobs: HashMap<JobId, Entry>,
    fingerprints: HashMap<Fingerprint, Holder>,
    /// `leases[n]` is the job holding offset n.
    leases: Vec<Option<JobId>>,
    /// Where the round-robin search for a free offset starts.
    cursor: usize,
    /// Idempotency keys; dropped by the expiry sweep once past `until` or
    /// once their job is gone.
    keys: HashMap<IdempotencyKey, KeyEntry>,
}

struct KeyEntry {
    request: RequestHash,
    job: Option<(JobId, bool)>,
    until: tokio::time::Instant,
}

struct Entry {
    record: JobRecord,
    /// Carries the record's version so long-polls wake on any change.
    changed: watch::Sender<u64>,
    /// Users of the job's tenant who joined it by dedup; forgotten with the job.
    joiners: HashSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Holder {
    Admitting(JobId),
    Live(JobId),
}
