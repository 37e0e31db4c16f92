//! The embedded job queue: a bounded channel shared by this process's workers.
//!
//! Its capacity is the offset pool size: every queued job holds an offset, so
//! an accepted job always fits and `enqueue` never waits. New jobs reach it
//! through `StoreThenQueue`, the embedded [`JobIntake`].

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use super::{CoordError, JobIntake, JobQueue, JobStore, QueuedJob};
use crate::model::{JobRecord, JobSpec};

pub struct LocalJobQueue {
    sender: mpsc::Sender<JobSpec>,
    receiver: Mutex<mpsc::Receiver<JobSpec>>,
}

impl LocalJobQueue {
    pub fn new(capacity: usize) -> LocalJobQueue {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        LocalJobQueue {
            sender,
            receiver: Mutex::new(receiver),
        }
    }
}

#[async_trait]
impl JobQueue for LocalJobQueue {
    async fn enqueue(&self, spec: JobSpec) -> Result<(), CoordError> {
        self.sender
            .send(spec)
            .await
            .map_err(|_| CoordError::Unavailable("the job queue is closed".into()))
    }

    async fn next(&self, shutdown: &CancellationToken) -> Result<Option<QueuedJob>, CoordError> {
        let mut receiver = tokio::select! {
            guard = self.receiver.lock() => guard,
            _ = shutdown.cancelled() => return Ok(None),
        };
        tokio::select! {
            spec = receiver.recv() => Ok(spec.map(|spec| QueuedJob { spec, receipt: String::new() })),
            _ = shutdown.cancelled() => Ok(None),
        }
    }
}

/// The intake of a job store and a queue that cannot act together (the
/// embedded ones): the record is stored, then the job queued. In one
/// process nothing outlives a crash between the two.
pub struct StoreThenQueue {
    pub store: Arc<dyn JobStore>,
    pub queue: Arc<dyn JobQueue>,
}

#[async_trait]
impl JobIntake for StoreThenQueue {
    async fn store_and_queue(&self, record: JobRecord) -> Result<(), CoordError> {
        if self.store.job(record.id()).await?.is_some() {
            return Ok(()); // taken in already
        }
        let spec = record.spec.clone();
        self.store.insert_job(record).await?;
        self.queue.enqueue(spec).await
    }
}
