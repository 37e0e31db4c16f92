//! pseudostream turns slow ad-hoc queries into jobs whose results stream in
//! small chunks. The modules follow a query's path: `filter` (the language),
//! `api` (HTTP), `jobs` (submission, reading, expiry), `coord` (shared
//! state), `worker` (running a job), `source` (where rows come from),
//! `results` (where chunks go) and `audit`; `demo` writes the demo dataset.

pub mod api;
pub mod app;
pub mod audit;
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

/// Locks a mutex whose data stays valid whatever a panicking holder was
/// doing (each change under it is a single operation), so a poisoned lock
/// is still usable instead of a reason to fail every later caller.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
