//! pseudostream turns slow ad-hoc queries into jobs whose results stream in
//! small chunks. The modules follow a query's path: `filter` (the language),
//! `api` (HTTP), `jobs` (submission, reading, expiry), `coord` (shared
//! state), `worker` (running a job), `source` (where rows come from),
//! `results` (where chunks go) and `audit`; `demo` writes the demo dataset.

pub mod api;
pub mod app;
pub mod audit;
pub mod client;
pub mod config;
pub mod coord;
pub mod demo;
pub mod explain;
pub mod filter;
pub mod jobs;
pub mod metrics;
pub mod model;
pub mod results;
pub mod source;
pub mod worker;

/// Every process that links the service (the binary, the bench, the tests)
/// allocates through jemalloc: it hands freed pages back to the kernel after
/// a few seconds, where glibc's per-thread arenas kept them and a steady
/// load's RSS crept up by 10 % in ten minutes (docs/RELIABILITY.md, "Soak").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Locks a mutex whose data stays valid whatever a panicking holder was
/// doing (each change under it is a single operation), so a poisoned lock
/// is still usable instead of a reason to fail every later caller.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A cache holding at most `capacity` of weight (entries with
/// `UnitWeighter`, bytes with a byte weighter), in one shard. quick_cache
/// gives each shard its own share of the capacity, rounded up, and a shard
/// turns away an entry heavier than nearly all of its share: split, a small
/// capacity would drop entries from a busy shard while others had room,
/// large entries (decoded pages) would be refused though the whole budget
/// holds them, and a byte budget could be passed by the rounding. Each
/// operation is one map probe under the shard's lock (hits take it shared),
/// so one shard is not contended. `estimated_items` only sizes how many
/// recently evicted keys it remembers (a key asked for again is kept longer).
pub(crate) fn one_shard_cache<K, V, W>(
    capacity: u64,
    estimated_items: usize,
    weighter: W,
) -> quick_cache::sync::Cache<K, V, W>
where
    K: Eq + std::hash::Hash,
    V: Clone,
    W: quick_cache::Weighter<K, V> + Clone,
{
    let options = quick_cache::OptionsBuilder::new()
        .shards(1)
        .estimated_items_capacity(estimated_items.max(1))
        .weight_capacity(capacity)
        .build()
        .expect("both capacities are set");
    quick_cache::sync::Cache::with_options(
        options,
        weighter,
        quick_cache::DefaultHashBuilder::default(),
        quick_cache::sync::DefaultLifecycle::default(),
    )
}
