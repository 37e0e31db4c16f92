//! Decoded pages shared by the direct window reads of all jobs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use datafusion::arrow::array::RecordBatch;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

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

/// About one decoded page run. It only sizes how many recently evicted keys
/// the cache remembers (a key asked for again is kept longer).
const TYPICAL_PAGE_BYTES: usize = 1 << 20;

/// Decoded pages, shared by the windows of all jobs. Dashboards look at the
/// newest data, and relative ranges end on the same minute, so concurrent
/// jobs read the same few pages: each is decompressed and decoded once,
/// and every job filters and sorts its own copy of the references.
/// Bounded by the decoded bytes; past the budget the cache's policy picks
/// what goes (pages read again are kept over pages read once), and a page
/// no longer here is decoded again. Concurrent misses on one key decode
/// once; the others wait for that result.
pub(super) struct PageCache {
    pages: Cache<PageKey, Page, PageBytes>,
}

/// A decoded run with its size, measured once when decoded.
#[derive(Clone)]
struct Page {
    batches: Decoded,
    bytes: usize,
}

/// Weighs a page by its decoded bytes. At least 1: the cache never evicts
/// an entry of weight 0 (a run decoded to no batches).
#[derive(Clone)]
struct PageBytes;

impl Weighter<PageKey, Page> for PageBytes {
    fn weight(&self, _: &PageKey, page: &Page) -> u64 {
        page.bytes.max(1) as u64
    }
}

impl PageCache {
    pub(super) fn new(budget_bytes: usize) -> PageCache {
        PageCache {
            pages: crate::one_shard_cache(
                budget_bytes as u64,
                budget_bytes / TYPICAL_PAGE_BYTES,
                PageBytes,
            ),
        }
    }

    /// The decoded pages of `key`, decoded by `decode` on a miss. A failed
    /// decode leaves nothing behind: the next read (or a reader waiting on
    /// this one) tries again.
    pub(super) async fn get_or_decode(
        &self,
        key: PageKey,
        decode: impl FnOnce() -> Result<Vec<RecordBatch>, SourceError>,
    ) -> Result<Decoded, SourceError> {
        let page = self
            .pages
            .get_or_insert_async(&key, async {
                let batches: Decoded = decode()?.into();
                let bytes = batches.iter().map(|b| b.get_array_memory_size()).sum();
                Ok::<_, SourceError>(Page { batches, bytes })
            })
            .await?;
        Ok(page.batches)
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
        get(2).await; // over budget: one of 0 and 1 goes
        assert_eq!(decodes.load(Ordering::SeqCst), 3);
        assert_eq!(cache.pages.len(), 2);
        assert!(cache.pages.weight() <= (size * 2) as u64);
        // The newest stays and the other survivor too: only the one that
        // went is decoded again, and the budget still holds.
        let gone = [0, 1]
            .into_iter()
            .find(|rg| !cache.pages.contains_key(&key(*rg)))
            .expect("one of 0 and 1 went");
        get(2).await;
        get(1 - gone).await;
        assert_eq!(decodes.load(Ordering::SeqCst), 3);
        get(gone).await;
        assert_eq!(decodes.load(Ordering::SeqCst), 4);
        assert!(cache.pages.weight() <= (size * 2) as u64);
        // A failed decode is not kept: the next read decodes again.
        let failed = cache
            .get_or_decode(key(9), || Err(SourceError::Internal("disk".into())))
            .await;
        assert!(failed.is_err());
        assert!(!cache.pages.contains_key(&key(9)));
        get(9).await;
        assert_eq!(decodes.load(Ordering::SeqCst), 5);
    }
}
