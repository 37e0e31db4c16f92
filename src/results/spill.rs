//! Where the embedded result log keeps chunks once its memory budget is
//! used: append-only segment files in the data directory, so that the
//! budget bounds the process's memory instead of only gating admission.
//!
//! Each segment is created already unlinked (`tempfile_in`): its space is
//! this process's alone and goes back to the disk when the last chunk in it
//! is dropped, or when the process ends, crash included, so there is never
//! anything to clean up. A stored chunk holds its segment (an `Arc`), which
//! is what frees a segment: once every job with chunks in it has expired,
//! nothing holds it any more. A reader that copied a chunk's place before
//! its job expired still reads the right bytes, since a segment is never
//! rewritten.
//!
//! Every call here does file I/O and blocks: callers run it on tokio's
//! blocking pool.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::ChunkJson;

/// A new segment is started once the current one holds this much. Large
/// enough that a busy process opens a few files a minute, small enough that
/// one long-lived job keeps little else on the disk with it.
const SEGMENT_BYTES: u64 = 64 << 20;

/// Segment files of one process, and the bytes they take on the disk.
pub struct SpillFiles {
    dir: PathBuf,
    /// The segment being appended to.
    current: Mutex<Option<Arc<Segment>>>,
    /// Bytes of every segment still open (the disk space they hold).
    disk_bytes: Arc<AtomicU64>,
}

struct Segment {
    file: File,
    /// Bytes written or reserved by a write in progress: where the next
    /// append starts, and what `disk_bytes` gives back when it closes.
    size: AtomicU64,
    disk_bytes: Arc<AtomicU64>,
}

impl Drop for Segment {
    fn drop(&mut self) {
        self.disk_bytes
            .fetch_sub(self.size.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// Where a spilled chunk's JSON is.
#[derive(Clone)]
pub struct Spilled {
    segment: Arc<Segment>,
    at: u64,
    len: u32,
}

impl Spilled {
    /// The chunk's size in bytes.
    pub fn bytes(&self) -> u64 {
        u64::from(self.len)
    }
}

impl SpillFiles {
    /// Segment files go in `dir` (created if missing).
    pub fn new(dir: &Path) -> io::Result<SpillFiles> {
        std::fs::create_dir_all(dir)?;
        Ok(SpillFiles {
            dir: dir.to_owned(),
            current: Mutex::new(None),
            disk_bytes: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Bytes the open segment files take on the disk now.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes.load(Ordering::Relaxed)
    }

    /// Writes `chunks` one after another with one write, and returns where
    /// each went.
    pub fn append(&self, chunks: &[ChunkJson]) -> io::Result<Vec<Spilled>> {
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        let (segment, start) = self.reserve(total as u64)?;
        let mut bytes = Vec::with_capacity(total);
        let mut places = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            places.push(Spilled {
                segment: segment.clone(),
                at: start + bytes.len() as u64,
                len: u32::try_from(chunk.len())
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "chunk too large"))?,
            });
            bytes.extend_from_slice(chunk.as_bytes());
        }
        // Writers hold disjoint ranges, so they write without the lock.
        segment.file.write_all_at(&bytes, start)?;
        Ok(places)
    }

    /// A range of `len` bytes in the current segment, starting a new one
    /// when it is full. The range counts as disk space from now on, written
    /// or not, until its segment closes.
    fn reserve(&self, len: u64) -> io::Result<(Arc<Segment>, u64)> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        // Sizes change only under this lock.
        if let Some(segment) = current.as_ref()
            && segment.size.load(Ordering::Relaxed) + len <= SEGMENT_BYTES
        {
            let start = segment.size.fetch_add(len, Ordering::Relaxed);
            self.disk_bytes.fetch_add(len, Ordering::Relaxed);
            return Ok((segment.clone(), start));
        }
        let segment = Arc::new(Segment {
            file: tempfile::tempfile_in(&self.dir)?,
            size: AtomicU64::new(len),
            disk_bytes: self.disk_bytes.clone(),
        });
        self.disk_bytes.fetch_add(len, Ordering::Relaxed);
        *current = Some(segment.clone());
        Ok((segment, 0))
    }
}

/// Reads spilled chunks back, in order. Chunks written by one `append` lie
/// next to each other and are read with one read.
pub fn read(places: &[Spilled]) -> io::Result<Vec<ChunkJson>> {
    let mut chunks = Vec::with_capacity(places.len());
    let mut rest = places;
    while let Some(first) = rest.first() {
        let adjacent = rest
            .windows(2)
            .take_while(|w| {
                Arc::ptr_eq(&w[0].segment, &w[1].segment) && w[0].at + w[0].bytes() == w[1].at
            })
            .count();
        let (run, after) = rest.split_at(adjacent + 1);
        let len: u64 = run.iter().map(Spilled::bytes).sum();
        let mut bytes = vec![0; len as usize];
        first.segment.file.read_exact_at(&mut bytes, first.at)?;
        let mut from = 0;
        for place in run {
            let to = from + place.len as usize;
            let text = std::str::from_utf8(&bytes[from..to])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            chunks.push(ChunkJson::new(text.to_owned()));
            from = to;
        }
        rest = after;
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: &str) -> ChunkJson {
        ChunkJson::new(text.to_owned())
    }

    #[test]
    fn reads_back_what_was_appended_across_appends() {
        let dir = tempfile::tempdir().unwrap();
        let spill = SpillFiles::new(dir.path()).unwrap();
        let a = spill
            .append(&[chunk("{\"a\":1}"), chunk("{\"b\":22}")])
            .unwrap();
        let b = spill.append(&[chunk("{\"c\":333}")]).unwrap();
        let places: Vec<Spilled> = a.iter().chain(&b).rev().cloned().collect();
        let back = read(&places).unwrap();
        let texts: Vec<&str> = back.iter().map(|c| c.as_str()).collect();
        assert_eq!(texts, ["{\"c\":333}", "{\"b\":22}", "{\"a\":1}"]);
        assert_eq!(spill.disk_bytes(), 24);
        // Nothing is left in the directory: segments are unlinked files.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_segment_frees_its_disk_space_when_its_last_chunk_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let spill = SpillFiles::new(dir.path()).unwrap();
        let big = chunk(&"x".repeat(SEGMENT_BYTES as usize / 2 + 1));
        let first = spill.append(std::slice::from_ref(&big)).unwrap();
        let second = spill.append(std::slice::from_ref(&big)).unwrap();
        assert!(!Arc::ptr_eq(&first[0].segment, &second[0].segment));
        assert_eq!(spill.disk_bytes(), 2 * big.len() as u64);
        drop(first);
        assert_eq!(spill.disk_bytes(), big.len() as u64);
        // The current segment stays open for the next append.
        drop(second);
        assert_eq!(spill.disk_bytes(), big.len() as u64);
        assert_eq!(
            read(&spill.append(&[chunk("y")]).unwrap()).unwrap()[0].as_ref(),
            "y"
        );
    }
}
