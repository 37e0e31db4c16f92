//! What a push stream says, in order, whatever carries it (Server-Sent
//! Events or WebSocket): a job's chunks from a resume point, then its end;
//! or, for an offset, each job the offset holds in turn.
//!
//! A stream first reads what is already published straight from the topic,
//! at its client's pace, and joins the job's feed (`watch.rs`) only once it
//! has caught up, so a client resuming far behind never fills its queue
//! with chunks it cannot take yet. Chunks handed out by the feed before the
//! stream joined are read from the topic too; those it already sent are
//! skipped, so each `chunkSeq` goes out exactly once, in order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::read::MAX_CHUNKS_PER_READ;
use super::watch::{FeedEvent, Subscription};
use super::{JobError, Jobs};
use crate::model::{JobId, JobRecord, Offset, Principal};
use crate::results::ChunkJson;

/// How often an offset stream looks for the offset's next job once its
/// job is finished.
const OFFSET_POLL: Duration = Duration::from_secs(1);

/// One event of a push stream.
#[derive(Debug)]
pub enum PushEvent {
    /// Offset streams: the job the stream follows from now on.
    Job(Arc<JobRecord>),
    /// A chunk, as stored (the polling API's text).
    Chunk {
        job: JobId,
        seq: u64,
        chunk: ChunkJson,
    },
    /// The job's last chunk was sent; the job as it finished.
    End(Arc<JobRecord>),
    /// The stream ends early, and why. Always its last event.
    Closed(StreamEnd),
}

/// Why a stream ends before its job's end.
#[derive(Debug)]
pub enum StreamEnd {
    /// The client did not take chunks as fast as they came.
    SlowConsumer,
    /// The server is shutting down; resume on another instance.
    ShuttingDown,
    /// The job's result expired while the stream read it.
    Expired(JobId),
    /// A backend failed; resume later.
    Failed(JobError),
}

/// The chunks of one job from a resume point, then its end.
pub struct JobFollower {
    jobs: Arc<Jobs>,
    /// The job as last seen.
    job: JobRecord,
    /// The `chunkSeq` to fetch next.
    next: u64,
    /// Chunks `..target` are known to be published.
    target: u64,
    pending: VecDeque<(u64, ChunkJson)>,
    subscription: Option<Subscription>,
    done: bool,
}

impl JobFollower {
    pub fn new(jobs: Arc<Jobs>, job: JobRecord, from: u64) -> JobFollower {
        JobFollower {
            jobs,
            target: job.chunks,
            job,
            next: from,
            pending: VecDeque::new(),
            subscription: None,
            done: false,
        }
    }

    pub fn job_id(&self) -> JobId {
        self.job.id()
    }

    fn close(&mut self, why: StreamEnd) -> Option<PushEvent> {
        self.done = true;
        self.subscription = None;
        Some(PushEvent::Closed(why))
    }

    /// The next event, or `None` after the last.
    pub async fn next_event(&mut self) -> Option<PushEvent> {
        let closed = self.jobs.admission_closed.clone();
        while !self.done {
            if let Some((seq, chunk)) = self.pending.pop_front() {
                let job = self.job.id();
                return Some(PushEvent::Chunk { job, seq, chunk });
            }
            if closed.is_cancelled() {
                return self.close(StreamEnd::ShuttingDown);
            }
            if self.next < self.target {
                let read = self.jobs.read_published(
                    &self.job,
                    self.target,
                    self.next,
                    MAX_CHUNKS_PER_READ,
                );
                match read.await {
                    // The progress says these exist: a topic without them
                    // has lost them (expired under us).
                    Ok(chunks) if chunks.is_empty() => {
                        return self.close(StreamEnd::Expired(self.job.id()));
                    }
                    Ok(chunks) => {
                        for chunk in chunks {
                            self.pending.push_back((self.next, chunk));
                            self.next += 1;
                        }
                    }
                    Err(e) => return self.close(StreamEnd::Failed(e)),
                }
                continue;
            }
            let Some(subscription) = &mut self.subscription else {
                if self.job.status.is_finished() {
                    self.done = true;
                    return Some(PushEvent::End(Arc::new(self.job.clone())));
                }
                // Caught up with a live job: from here on the feed brings
                // the chunks, and the topic those it handed out before.
                let subscription = self.jobs.subscribe(&self.job);
                self.target = self.target.max(subscription.head);
                self.subscription = Some(subscription);
                continue;
            };
            let event = tokio::select! {
                event = subscription.events.recv() => event,
                () = closed.cancelled() => return self.close(StreamEnd::ShuttingDown),
            };
            match event {
                Some(FeedEvent::Chunk(seq, chunk)) if seq == self.next => {
                    self.next += 1;
                    self.target = self.target.max(self.next);
                    let job = self.job.id();
                    return Some(PushEvent::Chunk { job, seq, chunk });
                }
                // A gap (cannot happen while the feed hands out in order,
                // but cheap to cover): read it from the topic.
                Some(FeedEvent::Chunk(seq, _)) if seq > self.next => {
                    self.target = self.target.max(seq + 1);
                }
                // Sent already, from the topic.
                Some(FeedEvent::Chunk(..)) => {}
                Some(FeedEvent::End(job)) => {
                    self.subscription = None;
                    self.target = self.target.max(job.chunks);
                    self.job = JobRecord::clone(&job);
                }
                Some(FeedEvent::Gone) => return self.close(StreamEnd::Expired(self.job.id())),
                Some(FeedEvent::Overflow) | None => return self.close(StreamEnd::SlowConsumer),
            }
        }
        None
    }
}

/// Where a stream resumes, from `Last-Event-ID` or `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// From this `chunkSeq` of the job.
    At(u64),
    /// After this chunk of this job (an offset stream's event id); a
    /// different job at the offset starts from its first chunk.
    After(JobId, u64),
}

impl Resume {
    /// Where to start in `job`.
    pub fn from_in(self, job: JobId) -> u64 {
        match self {
            Resume::At(seq) => seq,
            Resume::After(id, seq) if id == job => seq.saturating_add(1),
            Resume::After(..) => 0,
        }
    }
}

/// The jobs an offset holds, one after another, each from its first chunk
/// (the first from the resume point).
pub struct OffsetFollower {
    jobs: Arc<Jobs>,
    who: Principal,
    offset: Offset,
    current: Option<JobFollower>,
    /// The job the handler found at the offset, not announced yet.
    first: Option<(JobRecord, u64)>,
    last_job: Option<JobId>,
    done: bool,
}

impl OffsetFollower {
    pub fn new(
        jobs: Arc<Jobs>,
        who: Principal,
        offset: Offset,
        job: JobRecord,
        resume: Resume,
    ) -> OffsetFollower {
        let from = resume.from_in(job.id());
        OffsetFollower {
            jobs,
            who,
            offset,
            current: None,
            first: Some((job, from)),
            last_job: None,
            done: false,
        }
    }

    fn follow(&mut self, job: JobRecord, from: u64) -> Option<PushEvent> {
        self.last_job = Some(job.id());
        let announced = Arc::new(job.clone());
        self.current = Some(JobFollower::new(self.jobs.clone(), job, from));
        Some(PushEvent::Job(announced))
    }

    pub async fn next_event(&mut self) -> Option<PushEvent> {
        if let Some((job, from)) = self.first.take() {
            return self.follow(job, from);
        }
        let closed = self.jobs.admission_closed.clone();
        while !self.done {
            if let Some(current) = &mut self.current {
                match current.next_event().await {
                    // Its result expired: the offset moves on.
                    Some(PushEvent::Closed(StreamEnd::Expired(_))) | None => self.current = None,
                    Some(event @ PushEvent::Closed(_)) => {
                        self.done = true;
                        return Some(event);
                    }
                    event => return event,
                }
                continue;
            }
            // Another tenant's job at the offset looks like none: wait on.
            match self.jobs.job_at_offset(&self.who, self.offset).await {
                Ok(job) if Some(job.id()) != self.last_job => return self.follow(job, 0),
                Ok(_) | Err(JobError::OffsetNotFound(_)) => {}
                Err(e) => {
                    self.done = true;
                    return Some(PushEvent::Closed(StreamEnd::Failed(e)));
                }
            }
            tokio::select! {
                () = tokio::time::sleep(OFFSET_POLL) => {}
                () = closed.cancelled() => {
                    self.done = true;
                    return Some(PushEvent::Closed(StreamEnd::ShuttingDown));
                }
            }
        }
        None
    }
}

/// A job's stream or an offset's.
pub enum Follower {
    Job(Box<JobFollower>),
    Offset(Box<OffsetFollower>),
}

impl Follower {
    pub async fn next_event(&mut self) -> Option<PushEvent> {
        match self {
            Follower::Job(f) => f.next_event().await,
            Follower::Offset(f) => f.next_event().await,
        }
    }
}
