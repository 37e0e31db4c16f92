//! The `ChunkIndex` contract: where each chunk of a job landed, the newest
//! attempt's place wins (of one attempt's, the first recorded), and
//! forgetting a job forgets only it.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use pseudostream::coord::memory::MemoryChunkIndex;
use pseudostream::coord::policy::TimeoutAndRetry;
use pseudostream::coord::redis::RedisChunkIndex;
use pseudostream::coord::{ChunkIndex, ChunkPlace, CoordError, IndexedChunks, Recorded};
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
    by_attempt(1, partition, position)
}

fn by_attempt(attempt: u32, partition: i32, position: i64) -> ChunkPlace {
    ChunkPlace {
        partition,
        position,
        attempt,
    }
}

pub async fn case_records_places_and_counts<I: ChunkIndex>(index: I) {
    let job = JobId::new();
    let recorded = index
        .record(job, &[(0, place(1, 10)), (1, place(1, 11))])
        .await
        .unwrap();
    assert_eq!(recorded, Recorded::default());
    assert_eq!(index.count(job).await.unwrap(), 2);
    assert_eq!(
        index.probe(job, 1).await.unwrap(),
        IndexedChunks {
            written_by: Some(1),
            count: 2
        }
    );
    assert_eq!(index.probe(job, 2).await.unwrap().written_by, None);
    assert_eq!(
        index.places(job, 0..3).await.unwrap(),
        [Some(place(1, 10)), Some(place(1, 11)), None]
    );
    index.record(job, &[(2, place(1, 40))]).await.unwrap();
    assert_eq!(index.places(job, 2..3).await.unwrap(), [Some(place(1, 40))]);
}

/// A batch far larger than a publish batch (512 chunks) is recorded whole,
/// and recording it again changes nothing.
pub async fn case_a_large_batch_is_recorded_whole<I: ChunkIndex>(index: I) {
    let job = JobId::new();
    let landed: Vec<_> = (0..2_500u64)
        .map(|seq| (seq, place(3, 100 + seq as i64)))
        .collect();
    assert_eq!(
        index.record(job, &landed).await.unwrap(),
        Recorded::default()
    );
    assert_eq!(index.count(job).await.unwrap(), 2_500);
    let places = index.places(job, 0..2_501).await.unwrap();
    assert_eq!(places.len(), 2_501);
    assert!(
        landed
            .iter()
            .all(|(seq, p)| places[*seq as usize].as_ref() == Some(p))
    );
    assert_eq!(places[2_500], None);
    assert_eq!(
        index.record(job, &landed).await.unwrap(),
        Recorded::default()
    );
    assert_eq!(index.count(job).await.unwrap(), 2_500);
}

pub async fn case_first_place_recorded_wins<I: ChunkIndex>(index: I) {
    let job = JobId::new();
    index.record(job, &[(0, place(2, 5))]).await.unwrap();
    // A racing publisher's copy landed elsewhere: the index keeps the first.
    let recorded = index
        .record(job, &[(0, place(2, 9)), (1, place(2, 10))])
        .await
        .unwrap();
    assert_eq!(
        recorded,
        Recorded::default(),
        "the same attempt's copy is no refusal, nor written again"
    );
    assert_eq!(
        index.places(job, 0..2).await.unwrap(),
        [Some(place(2, 5)), Some(place(2, 10))]
    );
    assert_eq!(index.count(job).await.unwrap(), 2);
}

/// A worker frozen past its lease (attempt 1) may land its copy of a seq
/// first; the attempt that took the job over (2) still gets its copy
/// indexed, and the frozen one can never take a seq back. Where an older
/// copy lies after the indexed one, the seq is to be written again.
pub async fn case_the_newest_attempt_wins_a_seq<I: ChunkIndex>(index: I) {
    let job = JobId::new();
    let stale = |position| by_attempt(1, 0, position);
    let current = |position| by_attempt(2, 0, position);
    let none = Recorded::default();
    assert_eq!(index.record(job, &[(0, current(1))]).await.unwrap(), none);
    // The frozen worker's copy of seq 1 lands first.
    assert_eq!(index.record(job, &[(1, stale(2))]).await.unwrap(), none);
    assert_eq!(index.probe(job, 1).await.unwrap().written_by, Some(1));
    // The current attempt publishes seq 1 again: its copy replaces it.
    let recorded = index
        .record(job, &[(1, current(3)), (2, current(4))])
        .await
        .unwrap();
    assert_eq!(recorded, none);
    assert_eq!(
        index.probe(job, 1).await.unwrap(),
        IndexedChunks {
            written_by: Some(2),
            count: 3
        }
    );
    // The frozen worker's later copies are refused, and change nothing;
    // those that landed after the indexed copy want it written again.
    let recorded = index
        .record(job, &[(2, stale(5)), (3, stale(6))])
        .await
        .unwrap();
    assert_eq!(
        recorded,
        Recorded {
            superseded: true,
            rewrite: vec![(2, 2)],
        }
    );
    assert_eq!(
        index.places(job, 0..4).await.unwrap(),
        [
            Some(current(1)),
            Some(current(3)),
            Some(current(4)),
            Some(stale(6))
        ]
    );
    // A stale copy indexed first, but landed after the current one (which
    // was in flight): replaced, and to be written again after it.
    let recorded = index.record(job, &[(3, current(5))]).await.unwrap();
    assert_eq!(
        recorded,
        Recorded {
            superseded: false,
            rewrite: vec![(3, 2)],
        }
    );
    assert_eq!(index.probe(job, 3).await.unwrap().written_by, Some(2));
}

/// A batch that starts at the count holds no seq the index has, whoever
/// sends it: it is written whole, with nothing refused. One that reaches
/// below the count is looked at seq by seq: a newer attempt's seq is kept
/// and refuses the sender, the sender's own keep their places, and a seq
/// the index did not hold is written.
pub async fn case_a_batch_at_the_count_is_written_whole<I: ChunkIndex>(index: I) {
    let job = JobId::new();
    let stale = |position| by_attempt(1, 0, position);
    let current = |position| by_attempt(2, 0, position);
    let batch = |from: u64, to: u64, at: &dyn Fn(i64) -> ChunkPlace| -> Vec<(u64, ChunkPlace)> {
        (from..to).map(|seq| (seq, at(10 * seq as i64))).collect()
    };
    let none = Recorded::default();
    assert_eq!(
        index.record(job, &batch(0, 3, &current)).await.unwrap(),
        none
    );
    // At the count: written as it is, even by the older attempt.
    assert_eq!(
        index.record(job, &batch(3, 600, &stale)).await.unwrap(),
        none
    );
    assert_eq!(index.count(job).await.unwrap(), 600);
    // Below it: seq 2 is the newer attempt's and stays; seq 600 is new.
    let recorded = index.record(job, &batch(2, 601, &stale)).await.unwrap();
    assert!(recorded.superseded);
    assert_eq!(index.count(job).await.unwrap(), 601);
    assert_eq!(
        index.places(job, 1..4).await.unwrap(),
        [Some(current(10)), Some(current(20)), Some(stale(30))]
    );
    assert_eq!(
        index.places(job, 600..601).await.unwrap(),
        [Some(stale(6_000))]
    );
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
            written_by: None,
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

    async fn record(
        &self,
        job: JobId,
        landed: &[(u64, ChunkPlace)],
    ) -> Result<Recorded, CoordError> {
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
    case_a_large_batch_is_recorded_whole,
    case_first_place_recorded_wins,
    case_the_newest_attempt_wins_a_seq,
    case_a_batch_at_the_count_is_written_whole,
    case_forget_drops_only_that_job,
    case_an_unknown_job_has_no_chunks,
    case_policy_retries_within_its_budget);
coord_suite!(
    redis,
    #[ignore = "needs Redis (PSEUDOSTREAM_TEST_REDIS_URL, default redis://127.0.0.1:6379)"],
    redis_chunk_index().await;
    case_records_places_and_counts,
    case_a_large_batch_is_recorded_whole,
    case_first_place_recorded_wins,
    case_the_newest_attempt_wins_a_seq,
    case_a_batch_at_the_count_is_written_whole,
    case_forget_drops_only_that_job,
    case_an_unknown_job_has_no_chunks,
    case_policy_retries_within_its_budget
);
