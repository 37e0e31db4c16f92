//! The embedded result log: per job, an append-only list of encoded chunks,
//! kept for the job's TTL. Chunks stay in memory up to a budget; past it
//! they go to segment files on the disk (`spill`), up to a disk budget past
//! which new jobs get 503. Without spill files (a disk budget of 0), the
//! memory budget gates admission instead and running jobs may overshoot it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tracing::warn;

use super::spill::{self, SpillFiles, Spilled};
use super::{ChunkJson, HeldBytes, ResultError, ResultTopic};
use crate::model::{Chunk, JobId, Offset};

pub struct MemoryResultLog {
    jobs: Mutex<HashMap<JobId, JobLog>>,
    /// Bytes of chunk JSON held in memory, including reservations of
    /// publishes in progress.
    bytes: AtomicU64,
    budget_bytes: u64,
    spill: Option<Spill>,
}

struct Spill {
    files: Arc<SpillFiles>,
    /// Bytes of the chunks held in the files. Segments are freed whole, so
    /// the disk space taken (`SpillFiles::disk_bytes`) is more, by up to a
    /// segment per job still holding one.
    bytes: AtomicU64,
    budget_bytes: u64,
}

/// One job's chunks in seq order, and the attempt that wrote each.
#[derive(Default)]
struct JobLog {
    stored: Vec<Stored>,
    attempts: Vec<u32>,
}

#[derive(Clone)]
enum Stored {
    Memory(ChunkJson),
    Disk(Spilled),
}

impl Stored {
    fn in_memory(&self) -> Option<&ChunkJson> {
        match self {
            Stored::Memory(json) => Some(json),
            Stored::Disk(_) => None,
        }
    }

    fn on_disk(&self) -> Option<&Spilled> {
        match self {
            Stored::Memory(_) => None,
            Stored::Disk(place) => Some(place),
        }
    }

    fn memory_bytes(&self) -> u64 {
        self.in_memory().map_or(0, |json| json.len() as u64)
    }

    fn disk_bytes(&self) -> u64 {
        self.on_disk().map_or(0, Spilled::bytes)
    }
}

impl MemoryResultLog {
    /// A log that keeps everything in memory; at `budget_bytes` it is full.
    pub fn new(budget_bytes: u64) -> MemoryResultLog {
        MemoryResultLog {
            jobs: Mutex::new(HashMap::new()),
            bytes: AtomicU64::new(0),
            budget_bytes,
            spill: None,
        }
    }

    /// A log that keeps up to `memory_bytes` in memory and the rest in
    /// `files`; it is full when they take `disk_bytes` on the disk.
    pub fn with_spill(memory_bytes: u64, files: SpillFiles, disk_bytes: u64) -> MemoryResultLog {
        MemoryResultLog {
            spill: Some(Spill {
                files: Arc::new(files),
                bytes: AtomicU64::new(0),
                budget_bytes: disk_bytes,
            }),
            ..MemoryResultLog::new(memory_bytes)
        }
    }

    /// Bytes of chunk JSON held in memory now.
    pub fn bytes_held(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, JobLog>> {
        crate::lock(&self.jobs)
    }

    /// Reserves memory for as many of `sizes` (in order) as fit the budget;
    /// returns how many. Without spill files everything stays in memory.
    fn reserve_memory(&self, sizes: impl Iterator<Item = u64>) -> usize {
        if self.spill.is_none() {
            let (count, total) = sizes.fold((0, 0), |(n, sum), size| (n + 1, sum + size));
            self.bytes.fetch_add(total, Ordering::Relaxed);
            return count;
        }
        sizes
            .take_while(|size| {
                self.bytes
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                        (held + size <= self.budget_bytes).then_some(held + size)
                    })
                    .is_ok()
            })
            .count()
    }

    /// Appends `stored` (chunks `first_seq..`, written by `attempt`) to
    /// `job`'s log. Those already there are skipped when the same attempt
    /// wrote them (a resumed job publishing again) and replaced when an
    /// older one did; a newer attempt's refuses the whole batch.
    fn append(
        &self,
        job: JobId,
        first_seq: u64,
        attempt: u32,
        stored: Vec<Stored>,
    ) -> Result<(), ResultError> {
        let mut jobs = self.lock();
        let log = jobs.entry(job).or_default();
        let expected = log.stored.len() as u64;
        let already = usize::try_from(expected.saturating_sub(first_seq)).unwrap_or(usize::MAX);
        let start = usize::try_from(first_seq).unwrap_or(usize::MAX);
        let overlap = start..start.saturating_add(already.min(stored.len()));
        let newer = log
            .attempts
            .get(overlap.clone())
            .and_then(|a| a.iter().max());
        let refusal = match newer {
            _ if first_seq > expected => Some(ResultError::OutOfSequence {
                job,
                seq: first_seq,
                expected,
            }),
            Some(&newer) if newer > attempt => Some(ResultError::Superseded {
                job,
                seq: first_seq,
                attempt,
                newer,
            }),
            _ => None,
        };
        if let Some(refusal) = refusal {
            drop(jobs);
            self.forget(&stored);
            return Err(refusal);
        }
        let mut stored = stored;
        let mut dropped: Vec<Stored> = Vec::new();
        for (place, new) in overlap.zip(stored.drain(..already.min(stored.len()))) {
            if log.attempts[place] < attempt {
                log.attempts[place] = attempt;
                dropped.push(std::mem::replace(&mut log.stored[place], new));
            } else {
                dropped.push(new);
            }
        }
        log.attempts
            .extend(std::iter::repeat_n(attempt, stored.len()));
        log.stored.extend(stored);
        drop(jobs);
        self.forget(&dropped);
        Ok(())
    }

    /// Takes chunks that are no longer kept out of the byte counts.
    fn forget(&self, stored: &[Stored]) {
        let memory: u64 = stored.iter().map(Stored::memory_bytes).sum();
        self.bytes.fetch_sub(memory, Ordering::Relaxed);
        if let Some(spill) = &self.spill {
            let disk: u64 = stored.iter().map(Stored::disk_bytes).sum();
            spill.bytes.fetch_sub(disk, Ordering::Relaxed);
        }
    }
}

#[async_trait]
impl ResultTopic for MemoryResultLog {
    async fn publish_batch(&self, chunks: &[Chunk]) -> Result<Vec<ChunkJson>, ResultError> {
        let Some(first) = chunks.first() else {
            return Ok(Vec::new());
        };
        let published: Vec<ChunkJson> = chunks.iter().map(|c| c.to_json().into()).collect();
        let mut encoded = published.clone();
        let in_memory = self.reserve_memory(encoded.iter().map(|c| c.len() as u64));
        let to_disk = encoded.split_off(in_memory);
        let mut stored: Vec<Stored> = encoded.into_iter().map(Stored::Memory).collect();
        if let Some(spill) = &self.spill
            && !to_disk.is_empty()
        {
            let files = spill.files.clone();
            let written = tokio::task::spawn_blocking({
                let to_disk = to_disk.clone();
                move || files.append(&to_disk)
            })
            .await
            .map_err(|e| ResultError::Unavailable(e.to_string()))
            .and_then(|r| r.map_err(|e| ResultError::Unavailable(e.to_string())));
            match written {
                Ok(places) => {
                    let bytes: u64 = places.iter().map(Spilled::bytes).sum();
                    spill.bytes.fetch_add(bytes, Ordering::Relaxed);
                    stored.extend(places.into_iter().map(Stored::Disk));
                }
                Err(e) => {
                    // A full or failing disk must not lose accepted work:
                    // these chunks stay in memory, over its budget.
                    warn!(error = %e, job_id = %first.job_id, chunks = to_disk.len(),
                        "could not spill result chunks to disk; keeping them in memory");
                    self.bytes.fetch_add(
                        to_disk.iter().map(|c| c.len() as u64).sum(),
                        Ordering::Relaxed,
                    );
                    stored.extend(to_disk.into_iter().map(Stored::Memory));
                }
            }
        }
        self.append(first.job_id, first.chunk_seq, first.attempt, stored)?;
        Ok(published)
    }

    async fn read(
        &self,
        job: JobId,
        _offset: Offset,
        from: u64,
        limit: usize,
    ) -> Result<Vec<ChunkJson>, ResultError> {
        let stored: Vec<Stored> = {
            let jobs = self.lock();
            let Some(log) = jobs.get(&job) else {
                return Ok(Vec::new());
            };
            let from = usize::try_from(from).unwrap_or(usize::MAX);
            let wanted = log.stored.iter().skip(from).take(limit);
            // The common case, and the one thousands of pollers hit: all in
            // memory, answered without copying a byte.
            let in_memory: Option<Vec<ChunkJson>> =
                wanted.clone().map(|s| s.in_memory().cloned()).collect();
            if let Some(chunks) = in_memory {
                return Ok(chunks);
            }
            wanted.cloned().collect()
        };
        tokio::task::spawn_blocking(move || read_stored(&stored))
            .await
            .map_err(|e| ResultError::Unavailable(e.to_string()))?
            .map_err(|e| ResultError::Unavailable(format!("reading spilled chunks: {e}")))
    }

    async fn delete(&self, job: JobId, _offset: Offset, _chunks: u64) -> Result<(), ResultError> {
        let removed = self.lock().remove(&job);
        if let Some(JobLog { stored: log, .. }) = removed {
            self.forget(&log);
            // Dropping the log closes segment files no other job holds; that
            // is file I/O, so it happens off the async threads.
            if log.iter().any(|s| s.on_disk().is_some()) {
                tokio::task::spawn_blocking(move || drop(log));
            }
        }
        Ok(())
    }

    fn is_full(&self) -> bool {
        match &self.spill {
            Some(spill) => spill.bytes.load(Ordering::Relaxed) >= spill.budget_bytes,
            None => self.bytes_held() >= self.budget_bytes,
        }
    }

    fn held_bytes(&self) -> HeldBytes {
        HeldBytes {
            memory: self.bytes_held(),
            disk: self.spill.as_ref().map_or(0, |s| s.files.disk_bytes()),
        }
    }
}

/// Chunks in order, the spilled ones read back from their files.
fn read_stored(stored: &[Stored]) -> std::io::Result<Vec<ChunkJson>> {
    let mut chunks = Vec::with_capacity(stored.len());
    for run in stored.chunk_by(|a, b| a.on_disk().is_some() == b.on_disk().is_some()) {
        let places: Vec<Spilled> = run.iter().filter_map(Stored::on_disk).cloned().collect();
        if places.is_empty() {
            chunks.extend(run.iter().filter_map(Stored::in_memory).cloned());
        } else {
            chunks.extend(spill::read(&places)?);
        }
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Row;

    fn chunks(job: JobId, seqs: std::ops::Range<u64>) -> Vec<Chunk> {
        seqs.map(|seq| Chunk {
            job_id: job,
            offset: Offset(7),
            chunk_seq: seq,
            attempt: 1,
            is_last: false,
            rows: vec![Row::from_pairs([("n", &serde_json::json!(seq))])],
            status: None,
            total_rows: None,
            truncated: None,
            error: None,
        })
        .collect()
    }

    fn texts(chunks: &[Chunk]) -> Vec<String> {
        chunks.iter().map(Chunk::to_json).collect()
    }

    async fn read_all(log: &MemoryResultLog, job: JobId) -> Vec<String> {
        let read = log.read(job, Offset(7), 0, usize::MAX).await.unwrap();
        read.iter().map(|c| c.to_string()).collect()
    }

    #[tokio::test]
    async fn past_its_memory_budget_the_log_spills_and_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let one = chunks(JobId::new(), 0..1)[0].to_json().len() as u64;
        let log =
            MemoryResultLog::with_spill(3 * one, SpillFiles::new(dir.path()).unwrap(), 1 << 30);
        let (a, b) = (JobId::new(), JobId::new());
        let (first, rest) = (chunks(a, 0..2), chunks(a, 2..6));
        log.publish_batch(&first).await.unwrap();
        log.publish_batch(&chunks(b, 0..3)).await.unwrap();
        log.publish_batch(&rest).await.unwrap();

        assert_eq!(read_all(&log, a).await, texts(&[first, rest].concat()));
        assert_eq!(read_all(&log, b).await, texts(&chunks(b, 0..3)));
        // A read that starts on disk and one that spans memory and disk.
        let page = log.read(a, Offset(7), 1, 2).await.unwrap();
        assert_eq!(page.len(), 2);
        assert_eq!(page[1].as_str(), chunks(a, 2..3)[0].to_json());
        let held = log.held_bytes();
        assert!(held.memory <= 3 * one, "{held:?}");
        assert!(held.disk >= 6 * one, "{held:?}");

        log.delete(a, Offset(7), 6).await.unwrap();
        log.delete(b, Offset(7), 3).await.unwrap();
        assert_eq!(log.held_bytes().memory, 0);
        assert_eq!(log.spill.as_ref().unwrap().bytes.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn republished_chunks_are_kept_once_and_gaps_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = MemoryResultLog::with_spill(1, SpillFiles::new(dir.path()).unwrap(), 1 << 30);
        let job = JobId::new();
        log.publish_batch(&chunks(job, 0..3)).await.unwrap();
        let disk = log.spill.as_ref().unwrap().bytes.load(Ordering::Relaxed);
        // A resumed job publishes from an earlier seq again.
        log.publish_batch(&chunks(job, 1..5)).await.unwrap();
        assert_eq!(read_all(&log, job).await, texts(&chunks(job, 0..5)));
        let two_more: u64 = texts(&chunks(job, 3..5))
            .iter()
            .map(|t| t.len() as u64)
            .sum();
        assert_eq!(
            log.spill.as_ref().unwrap().bytes.load(Ordering::Relaxed),
            disk + two_more
        );
        assert!(matches!(
            log.publish_batch(&chunks(job, 7..8)).await,
            Err(ResultError::OutOfSequence {
                seq: 7,
                expected: 5,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn full_is_the_disk_budget_with_spill_files_and_the_memory_one_without() {
        let dir = tempfile::tempdir().unwrap();
        let spilling = MemoryResultLog::with_spill(1, SpillFiles::new(dir.path()).unwrap(), 1);
        let in_memory = MemoryResultLog::new(1);
        for log in [&spilling, &in_memory] {
            let job = JobId::new();
            assert!(!log.is_full());
            log.publish_batch(&chunks(job, 0..2)).await.unwrap();
            assert!(log.is_full());
            log.delete(job, Offset(7), 2).await.unwrap();
            assert!(!log.is_full());
        }
    }
}
