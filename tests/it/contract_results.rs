//! The result-topic contract, run against every implementation.

use pseudostream::model::{Chunk, JobId, Offset};
use pseudostream::results::memory::MemoryResultLog;
use pseudostream::results::{ResultError, ResultTopic};

fn chunk(job: JobId, seq: u64, last: bool) -> Chunk {
    crate::kafka_results::chunk(job, Offset(7), seq, last)
}

fn decode(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

pub async fn case_chunks_read_back_in_order<T: ResultTopic>(topic: T) {
    let job = JobId::new();
    for seq in 0..5 {
        topic.publish(&chunk(job, seq, seq == 4)).await.unwrap();
    }
    let all = topic.read(job, Offset(7), 0, 100).await.unwrap();
    assert_eq!(all.len(), 5);
    for (n, c) in all.iter().enumerate() {
        let c = decode(c);
        assert_eq!(c["chunkSeq"], n as u64);
        assert_eq!(c["jobId"], job.to_string());
        assert_eq!(c["offset"], 7);
    }
    assert_eq!(decode(&all[4])["isLast"], true);
    assert_eq!(decode(&all[4])["status"], "completed");
    assert!(
        decode(&all[0]).get("status").is_none(),
        "only the last chunk says how it ended"
    );
    let page = topic.read(job, Offset(7), 2, 2).await.unwrap();
    assert_eq!(
        page.iter()
            .map(|c| decode(c)["chunkSeq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [2, 3]
    );
    assert!(topic.read(job, Offset(7), 5, 10).await.unwrap().is_empty());
}

pub async fn case_republishing_a_seq_is_a_no_op_and_gaps_are_refused<T: ResultTopic>(topic: T) {
    let job = JobId::new();
    topic.publish(&chunk(job, 0, false)).await.unwrap();
    topic.publish(&chunk(job, 0, false)).await.unwrap();
    assert!(topic.publish(&chunk(job, 2, false)).await.is_err());
    assert_eq!(topic.read(job, Offset(7), 0, 10).await.unwrap().len(), 1);
}

/// A chunk as attempt `attempt` at the job writes it.
fn by_attempt(attempt: u32, job: JobId, seq: u64) -> Chunk {
    Chunk {
        attempt,
        ..chunk(job, seq, false)
    }
}

fn attempts(read: &[pseudostream::results::ChunkJson]) -> Vec<u64> {
    read.iter()
        .map(|c| decode(c)["attempt"].as_u64().unwrap())
        .collect()
}

/// A worker frozen past its lease (attempt 1) may land copies of seqs the
/// worker that took over (attempt 2) publishes too: readers get the newer
/// attempt's copy of each, and the frozen one is refused once the newer
/// attempt wrote a seq.
pub async fn case_the_newest_attempt_wins_a_seq<T: ResultTopic>(topic: T) {
    let job = JobId::new();
    topic.publish(&by_attempt(1, job, 0)).await.unwrap();
    // Published after the lease ran out, never counted in the job's progress.
    topic.publish(&by_attempt(1, job, 1)).await.unwrap();
    // The new attempt resumes after the last counted chunk, 0.
    topic
        .publish_batch(&[by_attempt(2, job, 1), by_attempt(2, job, 2)])
        .await
        .unwrap();
    topic.publish(&by_attempt(1, job, 3)).await.unwrap();
    topic.publish(&by_attempt(2, job, 3)).await.unwrap();
    let read = topic.read(job, Offset(7), 0, 10).await.unwrap();
    assert_eq!(attempts(&read), [1, 2, 2, 2]);

    // The frozen worker goes on: refused, and nothing changes.
    for refused in [
        topic.publish(&by_attempt(1, job, 2)).await,
        topic
            .publish_batch(&[by_attempt(1, job, 3), by_attempt(1, job, 4)])
            .await
            .map(drop),
    ] {
        assert!(
            matches!(
                refused,
                Err(ResultError::Superseded {
                    attempt: 1,
                    newer: 2,
                    ..
                })
            ),
            "{refused:?}"
        );
    }
    // The current attempt republishing is a no-op, as ever.
    topic.publish(&by_attempt(2, job, 3)).await.unwrap();
    let again = topic.read(job, Offset(7), 0, 10).await.unwrap();
    assert_eq!(again, read);
}

pub async fn case_delete_removes_a_job_and_only_it<T: ResultTopic>(topic: T) {
    let (a, b) = (JobId::new(), JobId::new());
    topic.publish(&chunk(a, 0, true)).await.unwrap();
    topic.publish(&chunk(b, 0, true)).await.unwrap();
    topic.delete(a, Offset(7), 1).await.unwrap();
    assert!(topic.read(a, Offset(7), 0, 10).await.unwrap().is_empty());
    assert_eq!(topic.read(b, Offset(7), 0, 10).await.unwrap().len(), 1);
}

/// Also: a batch hands back each chunk's JSON exactly as reads answer it
/// (what a cache in front keeps), skipped chunks of a resumed job included.
pub async fn case_a_batch_lands_in_order_and_resumes_cleanly<T: ResultTopic>(topic: T) {
    let job = JobId::new();
    let first: Vec<Chunk> = (0..3).map(|seq| chunk(job, seq, false)).collect();
    let mut published = topic.publish_batch(&first).await.unwrap();
    // A resumed job re-publishes a batch that overlaps what is stored.
    let again: Vec<Chunk> = (2..5).map(|seq| chunk(job, seq, seq == 4)).collect();
    let republished = topic.publish_batch(&again).await.unwrap();
    assert_eq!(republished.len(), again.len());
    assert_eq!(republished[0], published[2]);
    published.extend(republished.into_iter().skip(1));
    assert!(
        topic
            .publish_batch(&[chunk(job, 7, false), chunk(job, 8, false)])
            .await
            .is_err()
    );
    let read = topic.read(job, Offset(7), 0, 10).await.unwrap();
    assert_eq!(read.len(), 5);
    for (seq, json) in read.iter().enumerate() {
        let chunk: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(chunk["chunkSeq"], seq as u64);
    }
    assert_eq!(read, published);
}

/// Jobs publishing at once on one offset's partition (a Kafka producer packs
/// their chunks into shared record batches): every chunk of every job reads
/// back, also from the middle of a batch.
pub async fn case_concurrent_jobs_on_one_partition_all_read_back<T: ResultTopic>(topic: T) {
    const JOBS: usize = 20;
    const CHUNKS: u64 = 8;
    let jobs: Vec<JobId> = (0..JOBS).map(|_| JobId::new()).collect();
    let topic = &topic;
    let publishes = jobs.iter().map(|&job| async move {
        let batch: Vec<Chunk> = (0..CHUNKS)
            .map(|seq| chunk(job, seq, seq + 1 == CHUNKS))
            .collect();
        topic.publish_batch(&batch).await.unwrap();
    });
    futures::future::join_all(publishes).await;
    for &job in &jobs {
        for from in [0, 3, CHUNKS - 1] {
            let read = topic.read(job, Offset(7), from, 10).await.unwrap();
            assert_eq!(read.len() as u64, CHUNKS - from, "job {job} from {from}");
            for (k, json) in read.iter().enumerate() {
                let c = decode(json);
                assert_eq!(c["jobId"], job.to_string());
                assert_eq!(c["chunkSeq"], from + k as u64);
            }
        }
    }
}

/// Stamps the contract for one implementation; `$make` is evaluated (and
/// may `.await`) inside each test. Attributes after it, such as `#[ignore]`
/// for implementations that need a server, go on every case.
macro_rules! result_topic_suite {
    ($module:ident, $make:expr $(, #[$attr:meta])*) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            result_topic_suite!(@cases { $(#[$attr])* } $make;
                case_chunks_read_back_in_order,
                case_republishing_a_seq_is_a_no_op_and_gaps_are_refused,
                case_delete_removes_a_job_and_only_it,
                case_the_newest_attempt_wins_a_seq,
                case_a_batch_lands_in_order_and_resumes_cleanly,
                case_concurrent_jobs_on_one_partition_all_read_back);
        }
    };
    (@cases $attrs:tt $make:expr; $($case:ident),*) => {
        $( result_topic_suite!(@case $attrs $make; $case); )*
    };
    (@case { $($attr:tt)* } $make:expr; $case:ident) => {
        #[tokio::test]
        $($attr)*
        async fn $case() {
            super::$case($make).await;
        }
    };
}

result_topic_suite!(embedded, MemoryResultLog::new(u64::MAX));
// The cache must keep the contract of what it wraps; a tiny budget makes it evict.
result_topic_suite!(
    cached,
    pseudostream::results::cache::CachedResultTopic::new(
        std::sync::Arc::new(MemoryResultLog::new(u64::MAX)),
        300,
        false
    )
);
// Filled by the publisher too: with a budget that evicts, and one that keeps all.
result_topic_suite!(
    cached_filled_evicting,
    pseudostream::results::cache::CachedResultTopic::new(
        std::sync::Arc::new(MemoryResultLog::new(u64::MAX)),
        300,
        true
    )
);
result_topic_suite!(
    cached_filled,
    pseudostream::results::cache::CachedResultTopic::new(
        std::sync::Arc::new(MemoryResultLog::new(u64::MAX)),
        1 << 20,
        true
    )
);
result_topic_suite!(
    kafka,
    crate::kafka_results::fresh_topic().await,
    #[ignore = "needs Kafka at PSEUDOSTREAM_TEST_KAFKA_BROKERS (default 127.0.0.1:9092) and Redis"]
);

#[tokio::test]
async fn embedded_log_is_full_past_its_budget() {
    let log = MemoryResultLog::new(10);
    assert!(!log.is_full());
    log.publish(&chunk(JobId::new(), 0, true)).await.unwrap();
    assert!(log.is_full());
}

/// Counts the reads that reach the wrapped topic.
struct CountingReads {
    inner: MemoryResultLog,
    reads: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl ResultTopic for CountingReads {
    async fn publish_batch(
        &self,
        chunks: &[Chunk],
    ) -> Result<Vec<pseudostream::results::ChunkJson>, pseudostream::results::ResultError> {
        self.inner.publish_batch(chunks).await
    }
    async fn read(
        &self,
        job: JobId,
        offset: Offset,
        from: u64,
        limit: usize,
    ) -> Result<Vec<pseudostream::results::ChunkJson>, pseudostream::results::ResultError> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.read(job, offset, from, limit).await
    }
    async fn delete(
        &self,
        job: JobId,
        offset: Offset,
        chunks: u64,
    ) -> Result<(), pseudostream::results::ResultError> {
        self.inner.delete(job, offset, chunks).await
    }
}

/// A process that serves what it publishes reads nothing back from the
/// topic; one that only serves reads through once, then from memory.
#[tokio::test]
async fn a_publishing_cache_serves_its_own_chunks_from_memory() {
    use pseudostream::results::cache::CachedResultTopic;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    for fill in [true, false] {
        let inner = Arc::new(CountingReads {
            inner: MemoryResultLog::new(u64::MAX),
            reads: Default::default(),
        });
        let topic = CachedResultTopic::new(inner.clone(), 1 << 20, fill);
        let job = JobId::new();
        let chunks: Vec<Chunk> = (0..5).map(|seq| chunk(job, seq, seq == 4)).collect();
        topic.publish(&chunks[0]).await.unwrap();
        topic.publish_batch(&chunks[1..]).await.unwrap();
        for _ in 0..3 {
            // Readers ask for no more than the job's progress says exists.
            let read = topic.read(job, Offset(7), 0, 5).await.unwrap();
            assert_eq!(read.len(), 5);
            assert_eq!(*read[3], *chunks[3].to_json());
        }
        assert_eq!(
            inner.reads.load(Ordering::SeqCst),
            usize::from(!fill),
            "fill {fill}"
        );
    }
}
