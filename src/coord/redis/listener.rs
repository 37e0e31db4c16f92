//! The process's one change subscriber and the long-polls it wakes: every
//! change to a job is published on the changes channel, and one task per
//! process forwards each to the local waiters for that job, so thousands of
//! waiters cost one Redis connection. A change that wrote the job's record
//! is announced with it (`{id} {record}`), and the waiters get it decoded,
//! once for all of them: a woken long-poll then needs no read of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::Client;
use ::redis::aio::PubSub;
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, warn};

use super::conn::{ROUND_TRIP_TIMEOUT, decode_record, timed};
use crate::coord::CoordError;
use crate::model::{JobId, JobRecord};

/// How often a long-poll re-reads its job while the change subscriber is down.
pub const POLL_WITHOUT_SUBSCRIBER: Duration = Duration::from_millis(200);

/// Subscribes to `channel` before returning, so the first long-poll already
/// wakes on changes; the subscriber stops when the guard is dropped.
pub async fn start(
    client: Client,
    channel: String,
) -> Result<(Arc<Waiters>, DropGuard), CoordError> {
    let pubsub = subscribe(&client, &channel).await?;
    let waiters = Arc::new(Waiters {
        by_job: Mutex::new(HashMap::new()),
        listening: AtomicBool::new(true),
    });
    let stop = CancellationToken::new();
    tokio::spawn(listen_for_changes(
        client,
        channel,
        waiters.clone(),
        pubsub,
        stop.clone(),
    ));
    Ok((waiters, stop.drop_guard()))
}

/// What a waiter is woken with: the job's record as the change wrote it,
/// or `None` when the change did not carry one (the job expired or was
/// forgotten, or notices may have been missed) and the waiter must read it.
pub type Notice = Option<Arc<JobRecord>>;

/// The long-polls of this process, by job. One subscriber task feeds them,
/// so thousands of waiters cost one Redis connection.
pub struct Waiters {
    by_job: Mutex<HashMap<JobId, watch::Sender<Notice>>>,
    /// Whether the change subscriber is connected; waiters poll while not.
    listening: AtomicBool,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, watch::Sender<Notice>>> {
        // The map is valid after any panic (inserts and removes are single
        // operations), so a poisoned lock is still usable.
        crate::lock(&self.by_job)
    }

    pub fn watch(self: &Arc<Self>, id: JobId) -> WaitRegistration {
        let changed = self
            .lock()
            .entry(id)
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        WaitRegistration {
            waiters: self.clone(),
            id,
            changed,
        }
    }

    /// Wakes the waiters of the job a notice names; `payload` is `{id}` or
    /// `{id} {record}`. The record is decoded only when someone waits.
    fn notify(&self, payload: &str) {
        let (id, record) = match payload.split_once(' ') {
            Some((id, record)) => (id, Some(record)),
            None => (payload, None),
        };
        let Ok(id) = id.parse::<JobId>() else {
            debug!("ignoring a malformed change notification");
            return;
        };
        if !self.lock().contains_key(&id) {
            return;
        }
        // Decoded outside the lock. An undecodable record still wakes the
        // waiters: they read the record themselves.
        let record = record.and_then(|json| decode_record(id, json).ok());
        if let Some(sender) = self.lock().get(&id) {
            sender.send_replace(record.map(Arc::new));
        }
    }

    fn notify_all(&self) {
        for sender in self.lock().values() {
            sender.send_replace(None);
        }
    }
}

/// A waiter's interest in one job; removes the job's entry when the last
/// waiter for it goes (also when a long-poll request is dropped).
pub struct WaitRegistration {
    waiters: Arc<Waiters>,
    id: JobId,
    pub changed: watch::Receiver<Notice>,
}

impl Drop for WaitRegistration {
    fn drop(&mut self) {
        let mut by_job = self.waiters.lock();
        // Our own receiver is still alive here, so 1 means "only us".
        if by_job
            .get(&self.id)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            by_job.remove(&self.id);
        }
    }
}

impl Waiters {
    /// Whether the change subscriber is connected; waiters poll while not.
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }
}

async fn subscribe(client: &Client, channel: &str) -> Result<PubSub, CoordError> {
    let mut pubsub = timed(ROUND_TRIP_TIMEOUT, client.get_async_pubsub()).await?;
    timed(ROUND_TRIP_TIMEOUT, pubsub.subscribe(channel)).await?;
    Ok(pubsub)
}

/// The process's one change subscriber: forwards each published job id to
/// the local waiters for that job, reconnecting when the connection drops.
async fn listen_for_changes(
    client: Client,
    channel: String,
    waiters: Arc<Waiters>,
    first: PubSub,
    stop: CancellationToken,
) {
    let mut connected = Some(first);
    let mut backoff = POLL_WITHOUT_SUBSCRIBER;
    loop {
        let pubsub = match connected.take() {
            Some(pubsub) => pubsub,
            None => {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                match subscribe(&client, &channel).await {
                    Ok(pubsub) => pubsub,
                    Err(e) => {
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        warn!(error = %e, "change subscriber cannot reconnect; long-polls keep polling");
                        continue;
                    }
                }
            }
        };
        backoff = POLL_WITHOUT_SUBSCRIBER;
        waiters.listening.store(true, Ordering::SeqCst);
        // Changes published while we were away are lost: let every waiter re-read.
        waiters.notify_all();
        let mut messages = pubsub.into_on_message();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                message = messages.next() => match message {
                    Some(message) => match message.get_payload::<String>() {
                        Ok(payload) => waiters.notify(&payload),
                        Err(_) => debug!("ignoring a malformed change notification"),
                    },
                    None => break,
                },
            }
        }
        waiters.listening.store(false, Ordering::SeqCst);
        // Wake everyone so they switch to polling instead of waiting for a
        // notification that cannot come.
        waiters.notify_all();
        warn!("change subscriber lost its connection; long-polls poll until it is back");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Fingerprint, JobSpec, Offset, Order};

    fn waiters() -> Arc<Waiters> {
        Arc::new(Waiters {
            by_job: Mutex::new(HashMap::new()),
            listening: AtomicBool::new(true),
        })
    }

    fn record(version: u64) -> JobRecord {
        let spec = JobSpec {
            job_id: JobId::new(),
            offset: Offset(7),
            fingerprint: Fingerprint([1; 32]),
            tenant: "t".into(),
            user: "u".into(),
            filter: "status = 200".into(),
            from_us: 0,
            to_us: 1,
            fields: Vec::new(),
            order: Order::default(),
            max_rows: 10,
        };
        let mut record = JobRecord::new(spec, chrono::Utc::now());
        record.version = version;
        record
    }

    /// A notice with the record hands every waiter of the job that record,
    /// decoded; a bare id wakes them to read it themselves.
    #[test]
    fn a_notice_carries_the_record_to_the_jobs_waiters() {
        let waiters = waiters();
        let job = record(3);
        let mut first = waiters.watch(job.id());
        let mut second = waiters.watch(job.id());
        let json = serde_json::to_string(&job).unwrap();
        waiters.notify(&format!("{} {json}", job.id()));
        for registration in [&mut first, &mut second] {
            assert!(registration.changed.has_changed().unwrap());
            let notice = registration.changed.borrow_and_update().clone();
            assert_eq!(notice.as_deref(), Some(&job));
        }
        waiters.notify(&job.id().to_string());
        assert!(first.changed.has_changed().unwrap());
        assert_eq!(*first.changed.borrow_and_update(), None);
    }

    /// A record that does not decode still wakes the waiters (to read it);
    /// a notice for another job, or a malformed id, wakes nobody.
    #[test]
    fn an_unreadable_notice_wakes_only_the_named_jobs_waiters() {
        let waiters = waiters();
        let job = record(1);
        let mut registration = waiters.watch(job.id());
        waiters.notify(&format!("{} {{not json", job.id()));
        assert!(registration.changed.has_changed().unwrap());
        assert_eq!(*registration.changed.borrow_and_update(), None);
        waiters.notify(&JobId::new().to_string());
        waiters.notify("not-a-job-id {}");
        assert!(!registration.changed.has_changed().unwrap());
        drop(registration);
        assert!(
            waiters.lock().is_empty(),
            "the last waiter's going removes the job"
        );
    }
}
