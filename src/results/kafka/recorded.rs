//! What this process knows a job's chunk index holds, without asking it.
//!
//! A publish normally starts with a look at the index (its count, and the
//! places of seqs already there): a resumed job skips what an earlier run
//! stored, re-publishing a stored seq is a no-op, and a batch past the
//! index's end is refused. The look is a Redis round trip before every
//! send; on a first chunk it is one of the few round trips the dashboard
//! waits for. It tells nothing this process does not already know when:
//! - the batch is a first attempt's seq 0 and this process has not
//!   published the job before: no other attempt exists to have stored
//!   anything (a job taken over runs as attempt 2 or later);
//! - the batch starts right after one of the same attempt that this
//!   process published and recorded in full.
//!
//! A newer attempt that took the job over in between is still caught: the
//! index write refuses what it superseded (`record_chunks.lua`), and the
//! job store refuses the older attempt's progress. Any other failure makes
//! the job's next publish look again.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::{Chunk, JobId};
use crate::results::ResultError;

/// The attempt the first worker to start a job runs as.
const FIRST_ATTEMPT: u32 = 1;

/// As in `loss.rs`: past this many jobs the map is cleared (a job that
/// failed mid-stream keeps its entry until its delete); a cleared job's
/// next publish looks at the index, unless it is a first attempt's seq 0.
const MAX_TRACKED_JOBS: usize = 100_000;

#[derive(Default)]
pub(super) struct OwnRecords {
    jobs: Mutex<HashMap<JobId, Known>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// `attempt`'s chunks are indexed up to, not including, `next`.
    Through { attempt: u32, next: u64 },
    /// A publish failed: what it sent may or may not be indexed.
    Unsure,
}

impl OwnRecords {
    /// Whether a batch starting with `first` can skip the look at the index.
    pub(super) fn known_before(&self, first: &Chunk) -> bool {
        match crate::lock(&self.jobs).get(&first.job_id) {
            None => first.chunk_seq == 0 && first.attempt == FIRST_ATTEMPT,
            Some(Known::Through { attempt, next }) => {
                *attempt == first.attempt && *next == first.chunk_seq
            }
            Some(Known::Unsure) => false,
        }
    }

    /// Learns from a publish of `chunks` (consecutive, of one job and attempt).
    pub(super) fn after(&self, chunks: &[Chunk], outcome: &Result<(), ResultError>) {
        let (Some(first), Some(last)) = (chunks.first(), chunks.last()) else {
            return;
        };
        let known = match outcome {
            // A job's last chunk, or an attempt that can publish nothing more.
            Ok(_) if last.is_last => None,
            Err(ResultError::Superseded { .. } | ResultError::Lost { .. }) => None,
            Ok(_) => Some(Known::Through {
                attempt: last.attempt,
                next: last.chunk_seq + 1,
            }),
            Err(_) => Some(Known::Unsure),
        };
        let mut jobs = crate::lock(&self.jobs);
        match known {
            None => {
                jobs.remove(&first.job_id);
            }
            Some(known) => {
                if jobs.len() >= MAX_TRACKED_JOBS && !jobs.contains_key(&first.job_id) {
                    jobs.clear();
                }
                jobs.insert(first.job_id, known);
            }
        }
    }

    /// The job was deleted.
    pub(super) fn forget(&self, job: JobId) {
        crate::lock(&self.jobs).remove(&job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Offset;

    fn chunk(job: JobId, seq: u64, attempt: u32, is_last: bool) -> Chunk {
        Chunk {
            job_id: job,
            offset: Offset(1),
            chunk_seq: seq,
            attempt,
            is_last,
            rows: Vec::new(),
            status: None,
            total_rows: None,
            truncated: None,
            error: None,
        }
    }

    #[test]
    fn only_a_first_attempts_first_chunk_is_known_unseen() {
        let own = OwnRecords::default();
        let job = JobId::new();
        assert!(own.known_before(&chunk(job, 0, 1, false)));
        // A taken-over job, or one resumed past its start: look.
        assert!(!own.known_before(&chunk(job, 0, 2, false)));
        assert!(!own.known_before(&chunk(job, 5, 1, false)));
    }

    #[test]
    fn a_batch_right_after_its_own_recorded_one_is_known() {
        let own = OwnRecords::default();
        let job = JobId::new();
        let batch = [chunk(job, 0, 1, false), chunk(job, 1, 1, false)];
        own.after(&batch, &Ok(()));
        assert!(own.known_before(&chunk(job, 2, 1, false)));
        // The same seqs again (a retry), a gap, or another attempt: look.
        assert!(!own.known_before(&chunk(job, 0, 1, false)));
        assert!(!own.known_before(&chunk(job, 3, 1, false)));
        assert!(!own.known_before(&chunk(job, 2, 2, false)));
    }

    #[test]
    fn after_a_failure_the_next_publish_looks_even_at_seq_0() {
        let own = OwnRecords::default();
        let job = JobId::new();
        let first = [chunk(job, 0, 1, false)];
        own.after(&first, &Err(ResultError::Timeout));
        assert!(!own.known_before(&first[0]));
        own.after(&first, &Ok(()));
        assert!(own.known_before(&chunk(job, 1, 1, false)));
    }

    #[test]
    fn an_ended_job_is_forgotten() {
        let own = OwnRecords::default();
        let job = JobId::new();
        own.after(&[chunk(job, 0, 1, false)], &Ok(()));
        own.after(&[chunk(job, 1, 1, true)], &Ok(()));
        assert!(crate::lock(&own.jobs).is_empty());
        own.after(&[chunk(job, 2, 1, false)], &Ok(()));
        own.forget(job);
        assert!(crate::lock(&own.jobs).is_empty());
    }
}
