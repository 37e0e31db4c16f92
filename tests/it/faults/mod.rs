//! The fault suite: the scenarios of `docs/RELIABILITY.md`, each against
//! its own Redis and Postgres (started on free ports, so no other test sees
//! the fault) and the shared broker. The scenarios time how fast a refusal
//! comes, so `.ci/run` runs them as a step of their own, one at a time:
//! `cargo test --test it faults:: -- --include-ignored --test-threads 1`.
//! Their time bounds are the service's promises (a 503 within 2 s, recovery
//! within 5 s), not speed measurements.

mod broker;
mod broker_loss;
mod harness;
mod postgres;
mod producer;
mod proxy;
mod redis;
mod worker;
