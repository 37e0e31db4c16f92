//! A bounded cache of the record text this instance last wrote per job.

use quick_cache::UnitWeighter;
use quick_cache::sync::Cache;

use crate::model::JobId;

/// The record text this instance last wrote for each of its recent jobs, so
/// its next update of the same job (a worker's started, progress, finished)
/// compares and sets against it without reading the record first. An entry
/// another instance has since overwritten costs nothing extra: the update
/// script answers the mismatch with the current record. Bounded: past
/// `capacity` jobs one goes, chosen by the cache's policy (recently
/// remembered or read jobs are kept over idle ones); a job no longer here
/// only costs that read.
pub struct WrittenRecords {
    records: Cache<JobId, String, UnitWeighter>,
}

impl WrittenRecords {
    pub fn new(capacity: usize) -> WrittenRecords {
        let capacity = capacity.max(1);
        WrittenRecords {
            records: crate::one_shard_cache(capacity as u64, capacity, UnitWeighter),
        }
    }

    pub fn get(&self, id: JobId) -> Option<String> {
        self.records.get(&id)
    }

    pub fn remember(&self, id: JobId, json: String) {
        self.records.insert(id, json);
    }

    pub fn forget(&self, id: JobId) {
        self.records.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_records_keep_the_newest_job_within_their_capacity() {
        let written = WrittenRecords::new(2);
        let [a, b, c] = [JobId::new(), JobId::new(), JobId::new()];
        written.remember(a, "a1".into());
        written.remember(b, "b1".into());
        written.remember(a, "a2".into()); // a rewrite replaces the text
        assert_eq!(written.get(a).as_deref(), Some("a2"));
        written.remember(c, "c1".into());
        assert_eq!(written.records.len(), 2, "one of a and b goes");
        assert_eq!(written.get(c).as_deref(), Some("c1"));
        let survivor = [(a, "a2"), (b, "b1")]
            .into_iter()
            .find(|(id, _)| written.get(*id).is_some())
            .expect("one of a and b stays");
        assert_eq!(written.get(survivor.0).as_deref(), Some(survivor.1));
    }

    #[test]
    fn forgotten_jobs_leave_nothing_behind() {
        let written = WrittenRecords::new(4);
        for _ in 0..1_000 {
            let id = JobId::new();
            written.remember(id, "x".into());
            written.forget(id);
        }
        assert!(written.records.is_empty());
        assert_eq!(written.records.weight(), 0);
    }
}
