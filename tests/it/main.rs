//! The integration suite: one binary, a module per area. Every test drives
//! the real HTTP server on an ephemeral port.

mod support;

mod audit_views;
mod auth;
mod bad_input;
mod cancel;
mod cli;
mod conformance;
mod contract_audit;
mod contract_chunk_index;
mod contract_coord;
mod contract_dedup;
mod contract_idempotency;
mod contract_intake;
mod contract_job_store;
mod contract_limiter;
mod contract_offsets;
mod contract_queue;
mod contract_results;
mod correctness;
mod dashboard;
mod dedup;
mod deploy;
mod expiry;
mod faults;
mod flow;
mod freshness;
mod hostile;
mod idempotency;
mod kafka_results;
mod limits;
mod openapi;
mod ops_page;
mod push;
mod rejections;
mod scale_out;
mod tenancy;
mod traffic;
