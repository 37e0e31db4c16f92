//! The `ChunkIndex` contract: where each chunk of a job landed, first place
//! recorded wins, and forgetting a job forgets only it.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use pseudostream::coord::memory::MemoryChunkIndex;
use pseudostream::coord::policy::TimeoutAndRetry;
use pseudostream::coord::redis::RedisChunkIndex;
use pseudostream::coord::{ChunkIndex, ChunkPlace, CoordError, IndexedChunks};
use pseudostream::model::JobId;

use crate::contract_coord::{
    Flaky, FlakyScript, assert_retried, coord_suite, redis_prefix, redis_url, test_policy,
};

/// A fresh Redis chunk index on its own prefix; fails loudly without Redis.
async fn redis_chunk_index() -> RedisChunkIndex {
    let url = redis_url();
    RedisChunkIndex::connect(&url, &redis_prefix())
        .await
        .unwrap_or_else(|e| {
            panic!("cannot connect to Redis at {url} (set PSEUDOSTREAM_TEST_REDIS_URL): {e}")
        })
}

fn place(partition: i32, position: i64) -> ChunkPlace {
    ChunkPlace {
        partition,
        position,
    }
}

pub async fn case_records_places_and_counts<I: ChunkIndex>(index: I) {
    let job = JobId::new();
    index
        .record(job, &[(0, place(1, 10)), (1, place(1, 11))])
        .await
        .unwrap();
    assert_eq!(index.count(job).await.unwrap(), 2);
    assert_eq!(
        index.probe(job, 1).await.unwrap(),
        IndexedChunks {
            contains: true,
            count: 2
        }
    );
    assert!(!index.probe(job, 2).await.unwrap().contains);
    assert_eq!(
        index.places(job, 0..3).await.unwrap(),
        [Some(place(1, 10)), Some(place(1, 11)), None]
    );
    index.record(job, &[(2, place(1, 40))]).await.unwrap();
    assert_eq!(index.places(job, 2..3).await.unwrap(), [Some(place(1, 40))]);
}

pub async fn case_first_place_recorded_wins<I: ChunkIndex>(index: I) {
    let job = JobId::new();
    index.record(job, &[(0, place(2, 5))]).await.unwrap();
    // A racing publisher's copy landed elsewhere: the index keeps the first.
    index
        .record(job, &[(0, place(2, 9)), (1, place(2, 10))])
        .await
        .unwrap();
    assert_eq!(
        index.places(job, 0..2).await.unwrap(),
        [Some(place(2, 5)), Some(place(2, 10))]
    );
    assert_eq!(index.count(job).await.unwrap(), 2);
}

pub async fn case_forget_drops_only_that_job<I: ChunkIndex>(index: I) {
    let (a, b) = (JobId::new(), JobId::new());
    index.record(a, &[(0, place(0, 1))]).await.unwrap();
    index.record(b, &[(0, place(0, 2))]).await.unwrap();
    index.forget(a).await.unwrap();
    assert_eq!(index.count(a).await.unwrap(), 0);
    assert_eq!(index.places(a, 0..1).await.unwrap(), [None]);
    assert_eq!(index.places(b, 0..1).await.unwrap(), [Some(place(0, 2))]);
    index.forget(a).await.unwrap(); // forgetting twice is harmless
}

pub async fn case_an_unknown_job_has_no_chunks<I: ChunkIndex>(index: I) {
    let job = JobId::new();
    assert_eq!(index.count(job).await.unwrap(), 0);
    assert_eq!(
        index.probe(job, 0).await.unwrap(),
        IndexedChunks {
            contains: false,
            count: 0
        }
    );
    assert_eq!(index.places(job, 0..2).await.unwrap(), [None, None]);
    assert!(index.places(job, 3..3).await.unwrap().is_empty());
}

#[async_trait]
impl ChunkIndex for Flaky<Arc<dyn ChunkIndex>> {
    async fn count(&self, job: JobId) -> Result<u64, CoordError> {
        self.script.gate().await?;
        self.inner.count(job).await
    }

    async fn probe(&self, job: JobId, seq: u64) -> Result<IndexedChunks, CoordError> {
        self.script.gate().await?;
        self.inner.probe(job, seq).await
    }

    async fn record(&self, job: JobId, landed: &[(u64, ChunkPlace)]) -> Result<(), CoordError> {
        self.script.gate().await?;
        self.inner.record(job, landed).await
    }

    async fn places(
        &self,
        job: JobId,
        seqs: Range<u64>,
    ) -> Result<Vec<Option<ChunkPlace>>, CoordError> {
        self.script.gate().await?;
        self.inner.places(job, seqs).await
    }

    async fn forget(&self, job: JobId) -> Result<(), CoordError> {
        self.script.gate().await?;
        self.inner.forget(job).await
    }
}

/// Every operation is idempotent, so every one is retried.
pub async fn case_policy_retries_within_its_budget<I: ChunkIndex>(index: I) {
    let index: Arc<dyn ChunkIndex> = Arc::new(index);
    let make = |script: &Arc<FlakyScript>| {
        TimeoutAndRetry::with_policy(Flaky::new(index.clone(), script), test_policy())
    };
    let job = JobId::new();
    assert_retried(&make, async |i| i.record(job, &[(0, place(1, 7))]).await).await;
    assert_retried(&make, async |i| i.count(job).await).await;
    assert_retried(&make, async |i| i.probe(job, 0).await).await;
    assert_retried(&make, async |i| i.places(job, 0..1).await).await;
    assert_eq!(index.places(job, 0..1).await.unwrap(), [Some(place(1, 7))]);
    assert_retried(&make, async |i| i.forget(job).await).await;
    assert_eq!(index.count(job).await.unwrap(), 0);
}

coord_suite!(embedded, MemoryChunkIndex::new();
    case_records_places_and_counts,
    case_first_place_recorded_wins,
    case_forget_drops_only_that_job,
    case_an_unknown_job_has_no_chunks,
    case_policy_retries_within_its_budget);
coord_suite!(
    redis,
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"],
    redis_chunk_index().await;
    case_records_places_and_counts,
    case_first_place_recorded_wins,
    case_forget_drops_only_that_job,
    case_an_unknown_job_has_no_chunks,
    case_policy_retries_within_its_budget
);
