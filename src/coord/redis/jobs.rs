//! The Redis [`JobStore`]: records as JSON strings, a per-user index, an
//! expiry index, and change notification over pub/sub. Records are changed
//! in Rust and written back by compare-and-set script; the insert and
//! finish-expiry scripts also make a fingerprint live or drop it and free
//! the offset lease, atomically with the record (see `keys`).

use std::sync::Arc;
use std::time::Duration;

use ::redis::Script;
use ::redis::aio::ConnectionManager;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::DropGuard;
use tracing::warn;

use super::conn::{call, decode_record, encode_record, read_record, record_json};
use super::keys::Keys;
use super::listener::{POLL_WITHOUT_SUBSCRIBER, Waiters};
use super::queue::queue_entry;
use super::written::WrittenRecords;
use crate::coord::{CoordError, JobIntake, JobStore, JobsPage, ListedJob};
use crate::model::{JobId, JobRecord, JobStatus, JobUpdate};

/// Compare-and-set attempts before an update gives up under contention.
const MAX_CAS_ATTEMPTS: usize = 64;
/// The most job records one instance remembers having written (see
/// `WrittenRecords`), and the most jobs whose last change notice it keeps
/// (`Waiters::last_heard`): a few MiB each. Live jobs hold an offset
/// each, so a small pool bounds them sooner.
const REMEMBERED_RECORDS: usize = 4096;

/// How many jobs' records an instance remembers, for a pool of `pool_size`.
pub(super) fn remembered_records(pool_size: u32) -> usize {
    REMEMBERED_RECORDS.min(2 * pool_size as usize)
}

struct Scripts {
    insert: Script,
    update: Script,
    expire: Script,
    finish_expiry: Script,
    record_joiner: Script,
}

pub struct RedisJobStore {
    conn: ConnectionManager,
    keys: Keys,
    scripts: Scripts,
    waiters: Arc<Waiters>,
    written: WrittenRecords,
    /// Stops the change subscriber when the store is dropped.
    _stop_listening: DropGuard,
}

impl RedisJobStore {
    /// `waiters` are fed by the change subscriber `stop_listening` ends.
    pub(super) fn new(
        conn: ConnectionManager,
        keys: Keys,
        pool_size: u32,
        waiters: Arc<Waiters>,
        stop_listening: DropGuard,
    ) -> RedisJobStore {
        RedisJobStore {
            conn,
            keys,
            scripts: Scripts {
                insert: Script::new(include_str!("scripts/insert_job.lua")),
                update: Script::new(include_str!("scripts/update_job.lua")),
                expire: Script::new(include_str!("scripts/expire_job.lua")),
                finish_expiry: Script::new(include_str!("scripts/finish_expiry.lua")),
                record_joiner: Script::new(include_str!("scripts/record_joiner.lua")),
            },
            waiters,
            written: WrittenRecords::new(remembered_records(pool_size)),
            _stop_listening: stop_listening,
        }
    }
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

impl RedisJobStore {
    /// Stores a new job, and with `queue_entry` (its spec as the queue
    /// holds it) queues it in the same script (see `insert_job.lua`).
    async fn insert(
        &self,
        record: JobRecord,
        queue_entry: Option<String>,
    ) -> Result<(), CoordError> {
        let id = record.id();
        let expiry = match record.expires_at {
            Some(at) if record.status.is_finished() && record.status != JobStatus::Expired => {
                micros(at).to_string()
            }
            _ => String::new(),
        };
        let json = encode_record(&record)?;
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.insert.prepare_invoke();
        invocation
            .key(self.keys.job(id))
            .key(self.keys.fingerprint(record.spec.fingerprint))
            .key(self.keys.user(&record.spec.tenant, &record.spec.user))
            .key(&self.keys.expiry)
            .key(self.keys.offset(record.spec.offset))
            .arg(&json)
            .arg(id.to_string())
            .arg(expiry)
            .arg(&self.keys.changes)
            .arg(record.status.as_str());
        if let Some(entry) = queue_entry {
            invocation.key(&self.keys.queue).arg(entry);
        }
        let stored: i64 = call(invocation.invoke_async(&mut conn)).await?;
        if stored == 1 {
            self.written.remember(id, json);
        }
        Ok(())
    }
}

#[async_trait]
impl JobIntake for RedisJobStore {
    async fn store_and_queue(&self, record: JobRecord) -> Result<(), CoordError> {
        let entry = queue_entry(&record.spec)?;
        self.insert(record, Some(entry)).await
    }
}

#[async_trait]
impl JobStore for RedisJobStore {
    async fn insert_job(&self, record: JobRecord) -> Result<(), CoordError> {
        self.insert(record, None).await
    }

    async fn job(&self, id: JobId) -> Result<Option<JobRecord>, CoordError> {
        read_record(&self.conn, &self.keys, id).await
    }

    async fn jobs_of(
        &self,
        tenant: &str,
        user: &str,
        status: Option<JobStatus>,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<JobsPage, CoordError> {
        const BATCH: usize = 100;
        let mut conn = self.conn.clone();
        let index = self.keys.user(tenant, user);
        // Equal scores order members by their text, and hyphenated UUIDv7s
        // sort by creation time: reversed, that is newest first, and a
        // cursor is an exclusive upper bound.
        let mut upper = before.map_or_else(|| "+".to_owned(), |id| format!("({id}"));
        let mut jobs = Vec::new();
        while jobs.len() <= limit {
            let ids: Vec<String> = call(
                ::redis::cmd("ZREVRANGEBYLEX")
                    .arg(&index)
                    .arg(&upper)
                    .arg("-")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(BATCH)
                    .query_async(&mut conn),
            )
            .await?;
            let Some(last) = ids.last() else { break };
            upper = format!("({last}");
            let keys: Vec<String> = ids.iter().map(|id| self.keys.job(id)).collect();
            let records: Vec<Option<String>> =
                call(::redis::cmd("MGET").arg(&keys).query_async(&mut conn)).await?;
            for (id, json) in ids.iter().zip(records) {
                // A job expiring right now may have lost its record already.
                let Some(json) = json else { continue };
                let record = decode_record(id, &json)?;
                // A join named by another tenant (never made by `jobs`,
                // which only shares within a tenant) is not listed.
                if record.spec.tenant == tenant && status.is_none_or(|s| record.status == s) {
                    let joined = record.spec.user != user;
                    jobs.push(ListedJob { record, joined });
                }
            }
            if ids.len() < BATCH {
                break;
            }
        }
        jobs.truncate(limit.saturating_add(1));
        Ok(JobsPage::cut(jobs, limit))
    }

    async fn record_joiner(&self, id: JobId, tenant: &str, user: &str) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.record_joiner.prepare_invoke();
        invocation
            .key(self.keys.job(id))
            .key(self.keys.joiners(id))
            .key(self.keys.user(tenant, user))
            .arg(id.to_string());
        call(invocation.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    async fn update_job(
        &self,
        id: JobId,
        update: JobUpdate,
    ) -> Result<Option<JobRecord>, CoordError> {
        let mut conn = self.conn.clone();
        let mut read = match self.written.get(id) {
            Some(json) => json,
            None => match record_json(&self.conn, &self.keys, id).await? {
                Some(json) => json,
                None => return Ok(None),
            },
        };
        for _ in 0..MAX_CAS_ATTEMPTS {
            let mut record = decode_record(id, &read)?;
            let was_expired = record.status == JobStatus::Expired;
            if !record.apply(&update) {
                // From a superseded attempt: refused without a write. Attempts
                // only grow, so even a record read from `written` (perhaps
                // behind the stored one) that refuses it is right to.
                return Ok(Some(record));
            }
            // Only finished jobs enter the expiry index, so running jobs never expire.
            let expiry = match (&update, record.expires_at) {
                (JobUpdate::Finished { .. }, Some(at)) if !was_expired => micros(at).to_string(),
                _ => String::new(),
            };
            let written = encode_record(&record)?;
            let mut invocation = self.scripts.update.prepare_invoke();
            invocation
                .key(self.keys.job(id))
                .key(&self.keys.expiry)
                .key(self.keys.offset(record.spec.offset))
                .arg(sha1_smol::Sha1::from(&read).digest().to_string())
                .arg(&written)
                .arg(id.to_string())
                .arg(expiry)
                .arg(&self.keys.changes)
                .arg(record.status.as_str())
                .arg(record.rows)
                .arg(record.chunks);
            let (outcome, current): (i64, String) =
                call(invocation.invoke_async(&mut conn)).await?;
            match outcome {
                1 if record.status.is_finished() => {
                    // Nothing of this instance's updates it again.
                    self.written.forget(id);
                    return Ok(Some(record));
                }
                1 => {
                    self.written.remember(id, written);
                    return Ok(Some(record));
                }
                -1 => {
                    self.written.forget(id);
                    return Ok(None);
                }
                _ => read = current, // changed under us: apply again to the record as it is
            }
        }
        Err(CoordError::Unavailable(format!(
            "job {id} changed too often to update; try again"
        )))
    }

    async fn wait_for_change(
        &self,
        id: JobId,
        seen_version: u64,
        timeout: Duration,
    ) -> Result<Option<JobRecord>, CoordError> {
        let deadline = Instant::now() + timeout;
        // Registered before looking, so a change between the look and the
        // wait still wakes us. The last notice heard for the job stands in
        // for a read (`listener`), unless it is older than what the caller
        // has seen (that change's notice is on its way): a wait whose time
        // is already up answers at once, and never with less than the
        // caller knew. A wait that ends without a notice reads the job.
        let mut registration = self.waiters.watch(id);
        let heard = self.waiters.last_heard(id);
        let mut latest = match heard.filter(|record| record.version >= seen_version) {
            Some(record) => record,
            None => match self.job(id).await? {
                Some(record) => record,
                None => return Ok(None),
            },
        };
        loop {
            let now = Instant::now();
            if latest.version > seen_version || now >= deadline {
                return Ok(Some(latest));
            }
            let nap = if self.waiters.listening() {
                deadline - now
            } else {
                POLL_WITHOUT_SUBSCRIBER.min(deadline - now)
            };
            let notice = tokio::select! {
                changed = registration.changed.changed() => match changed {
                    Ok(()) => registration.changed.borrow_and_update().clone(),
                    Err(_) => {
                        tokio::time::sleep(POLL_WITHOUT_SUBSCRIBER.min(nap)).await;
                        None
                    }
                },
                _ = tokio::time::sleep(nap) => None,
            };
            match notice {
                // Versions only grow, and a notice may overtake the read
                // above: an older record than the latest tells nothing new.
                Some(record) => {
                    if record.version > latest.version {
                        latest = JobRecord::clone(&record);
                    }
                }
                None => match self.job(id).await? {
                    Some(record) => latest = record,
                    None => return Ok(None),
                },
            }
        }
    }

    async fn begin_expiry(&self, now: DateTime<Utc>) -> Result<Vec<JobRecord>, CoordError> {
        const BATCH: usize = 500;
        let mut conn = self.conn.clone();
        let now_us = micros(now);
        let due: Vec<String> = call(
            ::redis::cmd("ZRANGEBYSCORE")
                .arg(&self.keys.expiry)
                .arg("-inf")
                .arg(now_us)
                .arg("LIMIT")
                .arg(0)
                .arg(BATCH)
                .query_async(&mut conn),
        )
        .await?;
        let mut expired = Vec::new();
        for raw_id in due {
            let Ok(id) = raw_id.parse::<JobId>() else {
                warn!(member = %raw_id, "dropping a malformed member of the expiry index");
                let _: Result<i64, _> = call(
                    ::redis::cmd("ZREM")
                        .arg(&self.keys.expiry)
                        .arg(&raw_id)
                        .query_async(&mut conn),
                )
                .await;
                continue;
            };
            for _ in 0..MAX_CAS_ATTEMPTS {
                // A missing record still goes through the script, which
                // drops the stale index entry.
                let read = record_json(&self.conn, &self.keys, id)
                    .await?
                    .unwrap_or_default();
                let mut record = if read.is_empty() {
                    None
                } else {
                    Some(decode_record(id, &read)?)
                };
                let marked = match record.as_mut() {
                    Some(record) => {
                        record.status = JobStatus::Expired;
                        record.version += 1;
                        encode_record(record)?
                    }
                    None => String::new(),
                };
                // The view of the job's offset; without a record the script
                // returns before it touches this key, so any key will do.
                let view = record
                    .as_ref()
                    .map_or_else(|| self.keys.job(id), |r| self.keys.offset(r.spec.offset));
                let mut invocation = self.scripts.expire.prepare_invoke();
                invocation
                    .key(self.keys.job(id))
                    .key(&self.keys.expiry)
                    .key(view)
                    .arg(&read)
                    .arg(marked)
                    .arg(id.to_string())
                    .arg(now_us)
                    .arg(&self.keys.changes);
                match call(invocation.invoke_async::<i64>(&mut conn)).await? {
                    1 => {
                        expired.extend(record);
                        break;
                    }
                    2 => continue,
                    _ => break, // another instance took it, or it is gone
                }
            }
        }
        Ok(expired)
    }

    async fn finish_expiry(&self, record: &JobRecord) -> Result<(), CoordError> {
        let id = record.id();
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.finish_expiry.prepare_invoke();
        invocation
            .key(self.keys.job(id))
            .key(self.keys.fingerprint(record.spec.fingerprint))
            .key(&self.keys.leases)
            .key(self.keys.user(&record.spec.tenant, &record.spec.user))
            .key(&self.keys.expiry)
            .key(self.keys.offset(record.spec.offset))
            .key(self.keys.joiners(id))
            .arg(id.to_string())
            .arg(record.spec.offset.0)
            .arg(&self.keys.changes);
        call(invocation.invoke_async::<()>(&mut conn)).await
    }
}
