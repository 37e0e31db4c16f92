//! A job: its identifiers (the id and the public offset), who asked for it,
//! the spec a worker runs, its states and the record the coordinator keeps.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Fingerprint;

/// A job's identity: a UUIDv7, so ids sort by submission time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub uuid::Uuid);

impl Default for JobId {
    fn default() -> Self {
        JobId::new()
    }
}

impl JobId {
    pub fn new() -> JobId {
        JobId(uuid::Uuid::now_v7())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Only the form the service writes: lower-case, hyphenated, 36
/// characters. Braced, `urn:uuid:`, upper-case and undashed spellings of
/// the same id are refused, so every id has one spelling.
impl FromStr for JobId {
    type Err = NotAJobId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let id = uuid::Uuid::try_parse(s).map_err(|_| NotAJobId)?;
        let mut canonical = uuid::Uuid::encode_buffer();
        if id.hyphenated().encode_lower(&mut canonical) == s {
            Ok(JobId(id))
        } else {
            Err(NotAJobId)
        }
    }
}

/// A string that is not a job id as the service writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a job id (a lower-case hyphenated UUID)")]
pub struct NotAJobId;

/// A slot of the fixed result pool (0..pool size): the number dashboards
/// embed. Not a Kafka partition offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Offset(pub u32);

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
    Expired,
}

impl JobStatus {
    /// A finished job publishes nothing more; its TTL is running.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled | JobStatus::Expired
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Expired => "expired",
        }
    }
}

impl FromStr for JobStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "completed" => JobStatus::Completed,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            "expired" => JobStatus::Expired,
            _ => return Err(()),
        })
    }
}

/// Who submitted a job: the API key's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Principal {
    pub user: String,
    pub tenant: String,
    pub role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Query,
    Ops,
}

/// Everything a worker needs to run a job, serialisable so a distributed
/// queue can carry it. The filter travels as canonical text: it re-parses to
/// the same predicate (a property the filter tests pin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    pub job_id: JobId,
    pub offset: Offset,
    pub fingerprint: Fingerprint,
    pub tenant: String,
    pub user: String,
    pub filter: String,
    pub from_us: i64,
    pub to_us: i64,
    pub fields: Vec<String>,
    pub order: Order,
    pub max_rows: u64,
}

/// The coordinator's view of a job: its spec plus where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    pub spec: JobSpec,
    pub status: JobStatus,
    pub rows: u64,
    pub chunks: u64,
    pub truncated: bool,
    pub error: Option<String>,
    pub cancel_requested: bool,
    pub submitted_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub first_chunk_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Set when the job finishes: the moment its result is dropped.
    pub expires_at: Option<DateTime<Utc>>,
    /// How many times a worker has started the job: 1 for the first worker,
    /// one more for each that took it over from a silent one. Progress and
    /// the finish of an older attempt are refused (see
    /// [`JobUpdate::is_stale_for`]), so a worker frozen past its lease
    /// cannot move the job on once it resumes. The number only grows while
    /// the record lives; a record lost with Redis's data ends its job
    /// (`failed`), so no worker starts that job again under a lower number.
    #[serde(default)]
    pub attempt: u32,
    /// Bumped on every change, so readers can wait for "anything new".
    pub version: u64,
}

impl JobRecord {
    pub fn new(spec: JobSpec, submitted_at: DateTime<Utc>) -> JobRecord {
        JobRecord {
            spec,
            status: JobStatus::Queued,
            rows: 0,
            chunks: 0,
            truncated: false,
            error: None,
            cancel_requested: false,
            submitted_at,
            started_at: None,
            first_chunk_at: None,
            finished_at: None,
            expires_at: None,
            attempt: 0,
            version: 0,
        }
    }

    pub fn id(&self) -> JobId {
        self.spec.job_id
    }
}

/// A change a worker or the API applies to a job record.
#[derive(Debug, Clone, PartialEq)]
pub enum JobUpdate {
    /// A worker starts the job (again, after a takeover): the record's
    /// attempt goes up by one, and the worker runs as that attempt.
    Started {
        at: DateTime<Utc>,
    },
    /// A chunk was published and acknowledged by the worker running
    /// `attempt`.
    Progress {
        rows: u64,
        chunks: u64,
        at: DateTime<Utc>,
        attempt: u32,
    },
    Finished {
        status: JobStatus,
        rows: u64,
        chunks: u64,
        truncated: bool,
        error: Option<String>,
        at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        /// The worker attempt that finishes the job; `None` when it is not
        /// a worker's doing (an admission undone, a record rebuilt).
        attempt: Option<u32>,
    },
    CancelRequested,
}

impl JobUpdate {
    /// A job that failed without a chunk to its name: refused part-way
    /// through admission, or rebuilt after its record was lost.
    pub fn failed(error: String, at: DateTime<Utc>, expires_at: DateTime<Utc>) -> JobUpdate {
        JobUpdate::Finished {
            status: JobStatus::Failed,
            rows: 0,
            chunks: 0,
            truncated: false,
            error: Some(error),
            at,
            expires_at,
            attempt: None,
        }
    }

    /// The worker attempt this update comes from, if it comes from one.
    fn attempt(&self) -> Option<u32> {
        match self {
            JobUpdate::Progress { attempt, .. } => Some(*attempt),
            JobUpdate::Finished { attempt, .. } => *attempt,
            JobUpdate::Started { .. } | JobUpdate::CancelRequested => None,
        }
    }

    /// Whether `record` has moved on to a newer attempt than the one this
    /// update comes from: its worker was taken over, and the update must
    /// not land.
    pub fn is_stale_for(&self, record: &JobRecord) -> bool {
        self.attempt()
            .is_some_and(|attempt| attempt < record.attempt)
    }
}

impl JobRecord {
    /// A job's record rebuilt from its spec with `update` applied: what its
    /// audit row is told when the stored record is gone or never was.
    pub fn rebuilt(spec: JobSpec, submitted_at: DateTime<Utc>, update: &JobUpdate) -> JobRecord {
        let mut record = JobRecord::new(spec, submitted_at);
        record.apply(update);
        record
    }

    /// Applies an update; the one place that knows how each changes the
    /// record. Returns `false`, changing nothing, for an update from an
    /// attempt older than the record's ([`JobUpdate::is_stale_for`]).
    pub fn apply(&mut self, update: &JobUpdate) -> bool {
        if update.is_stale_for(self) {
            return false;
        }
        // A record that knows of a lower attempt than a live worker's
        // (rolled back by a Redis that lost its last writes) catches up, so
        // the next takeover still gets a higher number than any worker had.
        if let Some(attempt) = update.attempt() {
            self.attempt = self.attempt.max(attempt);
        }
        match update {
            JobUpdate::Started { at } => {
                if self.status == JobStatus::Queued {
                    self.status = JobStatus::Running;
                }
                if !self.status.is_finished() {
                    self.attempt += 1;
                }
                self.started_at.get_or_insert(*at);
            }
            JobUpdate::Progress {
                rows, chunks, at, ..
            } => {
                self.rows = *rows;
                self.chunks = *chunks;
                self.first_chunk_at.get_or_insert(*at);
            }
            JobUpdate::Finished {
                status,
                rows,
                chunks,
                truncated,
                error,
                at,
                expires_at,
                ..
            } => {
                self.status = *status;
                self.rows = *rows;
                self.chunks = *chunks;
                self.truncated = *truncated;
                self.error = error.clone();
                self.first_chunk_at.get_or_insert(*at);
                self.finished_at = Some(*at);
                self.expires_at = Some(*expires_at);
            }
            JobUpdate::CancelRequested => self.cancel_requested = true,
        }
        self.version += 1;
        true
    }
}

/// Result order by the time column. Ties are broken deterministically by the
/// remaining returned fields, ascending.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    #[default]
    Desc,
}
