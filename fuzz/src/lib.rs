//! pseudostream's filter language, compiled on its own for fuzzing.
//!
//! The filter module is pure (no I/O, nothing from the rest of the crate but
//! the shared types of `crate::model`, pure too), so it is included here
//! from source rather than through the `pseudostream` crate: that spares
//! instrumenting DataFusion, librdkafka
//! and sqlx, which would take longer to build than the fuzz run itself. The
//! code fuzzed is byte for byte `pseudostream::filter`; if the module ever
//! reaches outside itself, this build breaks, which is the point.

#[path = "../../src/filter/mod.rs"]
pub mod filter;

/// The shared types the filter names (`Fingerprint`, `Order`); pure too.
#[path = "../../src/model/mod.rs"]
pub mod model;
