//! Reading a job back: its status, its chunks (with long-poll), the job an
//! offset holds now, and cancel. Tenancy is enforced here: another tenant's
//! job looks exactly like one that does not exist.

use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use super::{JobError, Jobs};
use crate::coord::JobsPage;
use crate::model::{JobId, JobRecord, JobStatus, JobUpdate, Offset, Principal};
use crate::results::ChunkJson;

/// A page of chunks and the cursor to ask for next.
#[derive(Debug, Clone)]
pub struct ChunkPage {
    pub job: JobRecord,
    pub chunks: Vec<ChunkJson>,
    pub next: u64,
}

/// Most chunks one read returns.
pub const MAX_CHUNKS_PER_READ: usize = 1000;

impl Jobs {
    pub async fn job(&self, who: &Principal, id: JobId) -> Result<JobRecord, JobError> {
        let not_found = || JobError::JobNotFound(id.to_string());
        let job = self
            .backends
            .job_store
            .job(id)
            .await?
            .ok_or_else(not_found)?;
        if job.spec.tenant != who.tenant {
            return Err(not_found());
        }
        Ok(job)
    }

    pub async fn job_at_offset(
        &self,
        who: &Principal,
        offset: Offset,
    ) -> Result<JobRecord, JobError> {
        let not_found = || JobError::OffsetNotFound(offset.to_string());
        let job = self
            .backends
            .offsets
            .job_at_offset(offset)
            .await?
            .ok_or_else(not_found)?;
        if job.spec.tenant != who.tenant {
            return Err(not_found());
        }
        Ok(job)
    }

    /// A page of the caller's jobs: started, or joined by dedup while live.
    pub async fn jobs_of(
        &self,
        who: &Principal,
        status: Option<JobStatus>,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<JobsPage, JobError> {
        Ok(self
            .backends
            .job_store
            .jobs_of(&who.tenant, &who.user, status, before, limit)
            .await?)
    }

    /// Chunks `from..` of `job`, at most `limit`. With a `wait`, holds the
    /// request until at least one chunk is there, the job has finished, or
    /// the wait (capped by the settings) is over.
    pub async fn chunks(
        &self,
        mut job: JobRecord,
        from: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<ChunkPage, JobError> {
        let limit = limit.clamp(1, MAX_CHUNKS_PER_READ);
        let deadline = Instant::now() + wait.min(self.settings.max_wait);
        loop {
            if job.chunks > from {
                let chunks = self.read_published(&job, job.chunks, from, limit).await?;
                let next = from + chunks.len() as u64;
                return Ok(ChunkPage { job, chunks, next });
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if job.status.is_finished() || remaining.is_zero() {
                return Ok(ChunkPage {
                    job,
                    chunks: Vec::new(),
                    next: from,
                });
            }
            let id = job.id();
            // Shutdown ends long-polls early so the server can drain.
            let changed = tokio::select! {
                changed = self.backends.job_store.wait_for_change(id, job.version, remaining) => changed?,
                _ = self.admission_closed.cancelled() => Some(job.clone()),
            };
            job = changed.ok_or_else(|| JobError::JobNotFound(id.to_string()))?;
            if self.admission_closed.is_cancelled() {
                return Ok(ChunkPage {
                    chunks: Vec::new(),
                    next: from,
                    job,
                });
            }
        }
    }

    /// Chunks `from..published` of `job` (at most `limit`), where
    /// `published` is a count its progress has reached. Only what progress
    /// says is published is asked for: a cached topic then answers from
    /// memory without asking for more.
    pub async fn read_published(
        &self,
        job: &JobRecord,
        published: u64,
        from: u64,
        limit: usize,
    ) -> Result<Vec<ChunkJson>, JobError> {
        let ready = usize::try_from(published.saturating_sub(from)).unwrap_or(usize::MAX);
        let limit = limit.clamp(1, MAX_CHUNKS_PER_READ).min(ready);
        if limit == 0 {
            return Ok(Vec::new());
        }
        Ok(self
            .backends
            .results
            .read(job.id(), job.spec.offset, from, limit)
            .await?)
    }

    /// Asks the job to stop. A queued or running job ends with a last chunk
    /// that says `cancelled`; a finished job is returned as it is.
    pub async fn cancel(&self, who: &Principal, id: JobId) -> Result<JobRecord, JobError> {
        let job = self.job(who, id).await?;
        if job.status.is_finished() {
            return Ok(job);
        }
        let job = self
            .backends
            .job_store
            .update_job(job.id(), JobUpdate::CancelRequested)
            .await?
            .ok_or_else(|| JobError::JobNotFound(id.to_string()))?;
        info!(job_id = %job.id(), user = %who.user, "cancel requested");
        Ok(job)
    }
}
