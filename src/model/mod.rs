//! The shared vocabulary every layer speaks: jobs, their ids and public
//! offsets, fingerprints, chunks and rows. It sits at the bottom: it imports
//! nothing of the crate, and everything else may import it.

mod chunk;
mod fingerprint;
mod job;
mod row;

pub use chunk::Chunk;
pub use fingerprint::{Fingerprint, ParseFingerprintError};
pub use job::{
    JobId, JobRecord, JobSpec, JobStatus, JobUpdate, NotAJobId, Offset, Order, Principal, Role,
};
pub use row::{Row, push_str as push_json_str};
