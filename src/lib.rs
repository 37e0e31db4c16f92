//! pseudostream turns slow ad-hoc queries into jobs whose results stream in
//! small chunks. The modules follow a query's path: `filter` (the language),
//! `api` (HTTP), `jobs` (submission, reading, expiry), `coord` (shared
//! state), `worker` (running a job), `source` (where rows come from),
//! `results` (where chunks go) and `audit`.

pub mod api;
pub mod app;
pub mod audit;
pub mod bench;
pub mod config;
pub mod coord;
pub mod explain;
pub mod filter;
pub mod jobs;
pub mod metrics;
pub mod results;
pub mod source;
pub mod worker;
