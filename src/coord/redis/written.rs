//! A bounded cache of the record text this instance last wrote per job.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::model::JobId;

/// The record text this instance last wrote for each of its recent jobs, so
/// its next update of the same job (a worker's started, progress, finished)
/// compares and sets against it without reading the record first. An entry
/// another instance has since overwritten costs nothing extra: the update
/// script answers the mismatch with the current record. Bounded: past
/// `capacity` jobs the oldest entry goes.
pub struct WrittenRecords {
    capacity: usize,
    inner: Mutex<WrittenRecordsInner>,
}

#[derive(Default)]
struct WrittenRecordsInner {
    by_job: HashMap<JobId, String>,
    /// Jobs in the order they were first remembered; may name jobs since
    /// forgotten, which eviction skips.
    order: VecDeque<JobId>,
}

impl WrittenRecords {
    pub fn new(capacity: usize) -> WrittenRecords {
        WrittenRecords {
            capacity: capacity.max(1),
            inner: Mutex::new(WrittenRecordsInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WrittenRecordsInner> {
        // Every change is a single map or queue operation, so a poisoned
        // lock still guards consistent data.
        crate::lock(&self.inner)
    }

    pub fn get(&self, id: JobId) -> Option<String> {
        self.lock().by_job.get(&id).cloned()
    }

    pub fn remember(&self, id: JobId, json: String) {
        let mut inner = self.lock();
        if inner.by_job.insert(id, json).is_none() {
            inner.order.push_back(id);
        }
        // The queue may also hold forgotten jobs; let it grow to twice the
        // capacity before it is cut back, so the cut is rare.
        while inner.by_job.len() > self.capacity || inner.order.len() > 2 * self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.by_job.remove(&oldest);
        }
    }

    pub fn forget(&self, id: JobId) {
        self.lock().by_job.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_records_keep_the_newest_jobs_up_to_their_capacity() {
        let written = WrittenRecords::new(2);
        let [a, b, c] = [JobId::new(), JobId::new(), JobId::new()];
        written.remember(a, "a1".into());
        written.remember(b, "b1".into());
        written.remember(a, "a2".into()); // a rewrite keeps a's place
        assert_eq!(written.get(a).as_deref(), Some("a2"));
        written.remember(c, "c1".into());
        assert_eq!(written.get(a), None, "the oldest job goes first");
        assert_eq!(written.get(b).as_deref(), Some("b1"));
        assert_eq!(written.get(c).as_deref(), Some("c1"));
    }

    #[test]
    fn forgotten_jobs_do_not_grow_the_order_without_bound() {
        let written = WrittenRecords::new(4);
        for _ in 0..1_000 {
            let id = JobId::new();
            written.remember(id, "x".into());
            written.forget(id);
        }
        let inner = written.lock();
        assert!(inner.by_job.is_empty());
        assert!(inner.order.len() <= 8, "{}", inner.order.len());
    }
}
