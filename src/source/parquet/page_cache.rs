//! Decoded pages shared by the direct window reads of all jobs.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use datafusion::arrow::array::RecordBatch;
use tokio::sync::OnceCell;

use super::index::{IndexedFile, PageRun};
use crate::source::SourceError;

/// Which decoded rows: a run of pages of one version of a file, some columns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct PageKey {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    run: PageRun,
    roots: Vec<usize>,
}

impl PageKey {
    /// Root columns `roots` (ascending) of `run` in `file` as it is now.
    pub(super) fn new(file: &IndexedFile, run: &PageRun, roots: &[usize]) -> PageKey {
        PageKey {
            path: file.path.clone(),
            len: file.len,
            modified: file.modified,
            run: run.clone(),
            roots: roots.to_vec(),
        }
    }
}

type Decoded = Arc<[RecordBatch]>;

/// Decoded pages, shared by the windows of all jobs. Dashboards look at the
/// newest data, and relative ranges end on the same minute, so concurrent
/// jobs read the same few pages: each is decompressed and decoded once,
/// and every job filters and sorts its own copy of the references.
/// Bounded by bytes, oldest first out. Concurrent misses on one key decode
/// once; the others wait for that result.
pub(super) struct PageCache {
    budget_bytes: usize,
    state: Mutex<PageCacheState>,
}

#[derive(Default)]
struct PageCacheState {
    entries: HashMap<PageKey, Arc<OnceCell<Decoded>>>,
    /// Decoded entries, oldest first, with their sizes.
    order: VecDeque<(PageKey, usize)>,
    bytes: usize,
}

impl PageCache {
    pub(super) fn new(budget_bytes: usize) -> PageCache {
        PageCache {
            budget_bytes,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PageCacheState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) async fn get_or_decode(
        &self,
        key: PageKey,
        decode: impl FnOnce() -> Result<Vec<RecordBatch>, SourceError>,
    ) -> Result<Decoded, SourceError> {
        let cell = Arc::clone(self.lock().entries.entry(key.clone()).or_default());
        let mut decoded_here = None;
        let got = cell
            .get_or_try_init(|| async {
                let batches: Decoded = decode()?.into();
                decoded_here = Some(batches.iter().map(|b| b.get_array_memory_size()).sum());
                Ok(batches)
            })
            .await
            .cloned();
        let mut state = self.lock();
        match (&got, decoded_here) {
            (Ok(_), Some(bytes)) => {
                state.order.push_back((key, bytes));
                state.bytes += bytes;
                while state.bytes > self.budget_bytes {
                    let Some((old, size)) = state.order.pop_front() else {
                        break;
                    };
                    state.entries.remove(&old);
                    state.bytes -= size;
                }
            }
            // A failed decode leaves nothing behind; the next read tries again.
            (Err(_), _)
                if state
                    .entries
                    .get(&key)
                    .is_some_and(|c| Arc::ptr_eq(c, &cell) && c.get().is_none()) =>
            {
                state.entries.remove(&key);
            }
            _ => {}
        }
        got
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_page_cache_decodes_once_and_stays_in_budget() {
        use datafusion::arrow::array::{Array, Int64Array};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let batch = |n: i64| {
            RecordBatch::try_from_iter([(
                "n",
                Arc::new(Int64Array::from(vec![n; 1000])) as Arc<dyn Array>,
            )])
            .unwrap()
        };
        let size = batch(0).get_array_memory_size();
        let cache = Arc::new(PageCache::new(size * 2));
        let key = |row_group: usize| PageKey {
            path: PathBuf::from("/f.parquet"),
            len: 1,
            modified: None,
            run: PageRun {
                row_group,
                first_row: 0,
                rows: 1000,
            },
            roots: vec![0],
        };
        let decodes = Arc::new(AtomicUsize::new(0));
        let get = |rg: usize| {
            let (cache, decodes) = (Arc::clone(&cache), Arc::clone(&decodes));
            async move {
                cache
                    .get_or_decode(key(rg), || {
                        decodes.fetch_add(1, Ordering::SeqCst);
                        // Long enough for the other readers to find it in flight.
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        Ok(vec![batch(rg as i64)])
                    })
                    .await
                    .unwrap()
            }
        };
        let together = futures::future::join_all((0..8).map(|_| tokio::spawn(get(0)))).await;
        assert!(together.into_iter().all(|d| d.unwrap()[0] == batch(0)));
        assert_eq!(decodes.load(Ordering::SeqCst), 1);
        get(1).await;
        get(2).await; // over budget: the oldest (0) goes
        assert_eq!(decodes.load(Ordering::SeqCst), 3);
        get(2).await;
        get(1).await;
        assert_eq!(decodes.load(Ordering::SeqCst), 3);
        get(0).await;
        assert_eq!(decodes.load(Ordering::SeqCst), 4);
        assert!(cache.lock().bytes <= size * 2);
        // A failed decode is not kept: the next read decodes again.
        let failed = cache
            .get_or_decode(key(9), || Err(SourceError::Internal("disk".into())))
            .await;
        assert!(failed.is_err());
        assert!(!cache.lock().entries.contains_key(&key(9)));
    }
}
