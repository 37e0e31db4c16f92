//! The fan-out behind push streams: one feed per job being watched in this
//! process, however many clients watch it. A feed is the long-poll of
//! `read.rs` run once on behalf of all of them: it waits for the job to
//! change (`JobStore::wait_for_change`, woken by the process's one change
//! subscriber in distributed mode), reads the new chunks once through the
//! result topic (its cache in front of Kafka), and hands each to every
//! subscriber. So a stream costs no Kafka consumer, no Redis connection and
//! no read of its own, and any instance serves any job: the chunks come from
//! the shared topic, not from the process that ran the job.
//!
//! Each subscriber has a bounded queue. The feed never waits for one: a
//! subscriber whose queue is full gets `Overflow` in the slot kept for it
//! and is dropped, so one slow client can neither hold the others back nor
//! make the process buffer without end. A feed stops when its last
//! subscriber goes, or after the job's last chunk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::read::MAX_CHUNKS_PER_READ;
use super::{JobError, Jobs};
use crate::model::{JobId, JobRecord};
use crate::results::ChunkJson;

/// How long a feed waits before reading again after a backend error; its
/// subscribers keep their place meanwhile.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(1);

/// What a feed hands its subscribers.
#[derive(Debug, Clone)]
pub enum FeedEvent {
    /// A published chunk, by `chunkSeq`.
    Chunk(u64, ChunkJson),
    /// Every chunk has been handed out; the job as it finished.
    End(Arc<JobRecord>),
    /// The job is gone (its result expired) before its end was handed out.
    Gone,
    /// This subscriber's queue was full: it is dropped.
    Overflow,
}

/// The feeds of this process, by job.
#[derive(Default)]
pub struct Watches {
    feeds: Mutex<HashMap<JobId, Arc<Feed>>>,
}

struct Feed {
    state: Mutex<FeedState>,
    /// Cancelled when the last subscriber goes.
    stop: CancellationToken,
}

struct FeedState {
    /// The `chunkSeq` the feed hands out next: every chunk before it is
    /// published and has been handed to the subscribers of the time.
    head: u64,
    subscribers: HashMap<u64, mpsc::Sender<FeedEvent>>,
    next_id: u64,
}

/// A place in a job's feed; leaving it (drop) stops the feed when it was
/// the last one.
pub struct Subscription {
    pub events: mpsc::Receiver<FeedEvent>,
    /// Chunks before this one were handed out before this subscription
    /// began: read them from the topic.
    pub head: u64,
    job: JobId,
    id: u64,
    feed: Arc<Feed>,
    jobs: Arc<Jobs>,
}

impl Watches {
    /// Jobs with a feed in this process now.
    pub fn feeds(&self) -> usize {
        crate::lock(&self.feeds).len()
    }
}

impl Jobs {
    /// Joins the feed of `job` (starting it at the job's progress when
    /// there is none), with a queue of `PSEUDOSTREAM_STREAM_BUFFER` chunks.
    pub fn subscribe(self: &Arc<Self>, job: &JobRecord) -> Subscription {
        // The one slot above the buffer is kept for `Overflow`.
        let (sender, events) = mpsc::channel(self.settings.stream_buffer.max(1) + 1);
        let mut feeds = crate::lock(&self.watches.feeds);
        let feed = feeds
            .entry(job.id())
            .or_insert_with(|| {
                let feed = Arc::new(Feed {
                    state: Mutex::new(FeedState {
                        head: job.chunks,
                        subscribers: HashMap::new(),
                        next_id: 0,
                    }),
                    stop: CancellationToken::new(),
                });
                tokio::spawn(run_feed(self.clone(), feed.clone(), job.clone()));
                feed
            })
            .clone();
        let mut state = crate::lock(&feed.state);
        let id = state.next_id;
        state.next_id += 1;
        state.subscribers.insert(id, sender);
        let head = state.head;
        drop(state);
        Subscription {
            events,
            head,
            job: job.id(),
            id,
            feed,
            jobs: self.clone(),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Lock order everywhere: the map, then a feed.
        let mut feeds = crate::lock(&self.jobs.watches.feeds);
        let mut state = crate::lock(&self.feed.state);
        state.subscribers.remove(&self.id);
        if state.subscribers.is_empty() {
            self.feed.stop.cancel();
            if feeds
                .get(&self.job)
                .is_some_and(|f| Arc::ptr_eq(f, &self.feed))
            {
                feeds.remove(&self.job);
            }
        }
    }
}

/// One feed's loop: long-poll the job from its head, hand out what came.
async fn run_feed(jobs: Arc<Jobs>, feed: Arc<Feed>, mut job: JobRecord) {
    let id = job.id();
    debug!(job_id = %id, "feed started");
    let last = loop {
        let head = crate::lock(&feed.state).head;
        // Shutdown ends every stream by itself, and a long-poll returns at
        // once from then on: stop rather than spin.
        if jobs.admission_closed.is_cancelled() {
            return;
        }
        let page = tokio::select! {
            page = jobs.chunks(job.clone(), head, MAX_CHUNKS_PER_READ, jobs.settings.max_wait) => page,
            () = feed.stop.cancelled() => return,
        };
        match page {
            Ok(page) => {
                job = page.job;
                if !page.chunks.is_empty() {
                    let dropped = feed.hand_out(head, page.chunks);
                    jobs.metrics.streams.slow_dropped_total.add(dropped);
                } else if job.status.is_finished() {
                    break FeedEvent::End(Arc::new(job));
                }
                // Else the wait ended: wait again.
            }
            Err(JobError::JobNotFound(_)) => break FeedEvent::Gone,
            Err(e) => {
                warn!(job_id = %id, error = %e, "a push feed cannot read its job; retrying");
                tokio::select! {
                    () = tokio::time::sleep(RETRY_AFTER_ERROR) => {}
                    () = feed.stop.cancelled() => return,
                }
            }
        }
    };
    // Out of the map first, so a new subscriber starts a new feed (which
    // finds the job finished at once) instead of joining this ended one.
    let mut feeds = crate::lock(&jobs.watches.feeds);
    if feeds.get(&id).is_some_and(|f| Arc::ptr_eq(f, &feed)) {
        feeds.remove(&id);
    }
    let mut state = crate::lock(&feed.state);
    for sender in state.subscribers.values() {
        // A full queue still has the slot kept for the last word.
        let _ = sender.try_send(last.clone());
    }
    state.subscribers.clear();
    debug!(job_id = %id, "feed ended");
}

impl Feed {
    /// Hands chunks `head..` to every subscriber, dropping those whose
    /// queue is full; returns how many were dropped.
    fn hand_out(&self, head: u64, chunks: Vec<ChunkJson>) -> u64 {
        let mut state = crate::lock(&self.state);
        let count = chunks.len() as u64;
        let mut dropped = 0;
        state.subscribers.retain(|_, sender| {
            for (seq, chunk) in (head..).zip(&chunks) {
                // One slot is always kept for `Overflow`.
                if sender.capacity() <= 1 {
                    let _ = sender.try_send(FeedEvent::Overflow);
                    dropped += 1;
                    return false;
                }
                if sender
                    .try_send(FeedEvent::Chunk(seq, chunk.clone()))
                    .is_err()
                {
                    // The subscriber is gone (its drop will tidy up).
                    return false;
                }
            }
            true
        });
        state.head = head + count;
        dropped
    }
}
