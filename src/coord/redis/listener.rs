//! The process's one change subscriber and the long-polls it wakes: every
//! change to a job is published on the changes channel, and one task per
//! process forwards each to the local waiters for that job, so thousands of
//! waiters cost one Redis connection. A change that wrote the job's record
//! is announced with it (`{id} {record}`), and the waiters get it decoded,
//! once for all of them: a woken long-poll then needs no read of its own.
//!
//! The subscriber also keeps the last notice it heard for each recent job
//! ([`Waiters::last_heard`]), so a long-poll starting on such a job
//! usually needs no read either. Why that is as good as a read: a
//! long-poll registers before it looks; every change is written and
//! published by one script; so a change made before the look either has
//! its notice heard already (the look finds it, or a newer one) or still
//! on its way (it wakes the registered long-poll). Notices missed while the
//! subscriber is disconnected would break this, so what was kept is dropped
//! when the connection drops (and the registered long-polls are woken to
//! read), and a long-poll reads the job while the subscriber is not
//! connected or heard nothing of the job since. A connection that dies
//! unnoticed (half-open), or a record changed without a notice, is
//! covered by the read a long-poll makes when its wait ends without a
//! notice: it is seen within one wait, as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::Client;
use ::redis::aio::PubSub;
use futures::StreamExt;
use quick_cache::UnitWeighter;
use quick_cache::sync::Cache;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, warn};

use super::conn::{ROUND_TRIP_TIMEOUT, decode_record, timed};
use crate::coord::CoordError;
use crate::model::{JobId, JobRecord};

/// How often a long-poll re-reads its job while the change subscriber is down.
pub const POLL_WITHOUT_SUBSCRIBER: Duration = Duration::from_millis(200);

/// Subscribes to `channel` before returning, so the first long-poll already
/// wakes on changes; the subscriber stops when the guard is dropped. The
/// last notice of at most `remembered` jobs is kept.
pub async fn start(
    client: Client,
    channel: String,
    remembered: usize,
) -> Result<(Arc<Waiters>, DropGuard), CoordError> {
    let pubsub = subscribe(&client, &channel).await?;
    let waiters = Arc::new(Waiters::new(remembered));
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
    /// The record text of the last notice heard per job while connected
    /// (`None`: the notice carried no record). Bounded: past its capacity a
    /// job goes, chosen by the cache's policy, and costs its long-polls a
    /// read.
    heard: Cache<JobId, Option<Arc<str>>, UnitWeighter>,
}

impl Waiters {
    fn new(remembered: usize) -> Waiters {
        let remembered = remembered.max(1);
        Waiters {
            by_job: Mutex::new(HashMap::new()),
            listening: AtomicBool::new(true),
            heard: crate::one_shard_cache(remembered as u64, remembered, UnitWeighter),
        }
    }

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

    /// The job's record as the last notice heard for it says, when the
    /// subscriber has been connected since (see the module's argument): a
    /// long-poll registered before asking may start from it instead of
    /// reading the job. `None` when nothing usable was heard: read it.
    pub fn last_heard(&self, id: JobId) -> Option<JobRecord> {
        if !self.listening() {
            return None;
        }
        let json = self.heard.get(&id)??;
        decode_record(id, &json).ok()
    }

    /// Wakes the waiters of the job a notice names, and keeps it as the
    /// job's last heard; `payload` is `{id}` or `{id} {record}`. The record
    /// is decoded only when someone waits.
    fn notify(&self, payload: &str) {
        let (id, record) = match payload.split_once(' ') {
            Some((id, record)) => (id, Some(record)),
            None => (payload, None),
        };
        let Ok(id) = id.parse::<JobId>() else {
            debug!("ignoring a malformed change notification");
            return;
        };
        // Kept before the waiters are looked up under the `by_job` lock: a
        // long-poll registering (under that lock) before the lookup is
        // woken with this notice, one registering after it finds the
        // notice in `heard`.
        self.heard.insert(id, record.map(Arc::from));
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

    /// The subscriber is connected (again). Changes published while it was
    /// away were not heard: every waiter reads its job again, and nothing
    /// heard before counts.
    fn connected(&self) {
        self.heard.clear();
        self.listening.store(true, Ordering::SeqCst);
        self.notify_all();
    }

    /// The subscriber lost its connection: every waiter switches to
    /// polling instead of waiting for a notice that cannot come, and
    /// nothing heard counts until it is back (`connected`).
    fn disconnected(&self) {
        self.listening.store(false, Ordering::SeqCst);
        self.heard.clear();
        self.notify_all();
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
        waiters.connected();
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
        waiters.disconnected();
        warn!("change subscriber lost its connection; long-polls poll until it is back");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Fingerprint, JobSpec, Offset, Order};

    fn waiters() -> Arc<Waiters> {
        Arc::new(Waiters::new(16))
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

    /// Every notice is kept as its job's last heard, waited for or not: a
    /// newer one replaces it, and one without a record (or with one that
    /// does not decode) leaves nothing to start from.
    #[test]
    fn the_last_notice_heard_is_kept() {
        let waiters = waiters();
        let old = record(3);
        let id = old.id();
        let mut new = old.clone();
        new.version = 4;
        assert_eq!(waiters.last_heard(id), None, "nothing heard yet");
        for job in [&old, &new] {
            let json = serde_json::to_string(job).unwrap();
            waiters.notify(&format!("{id} {json}"));
        }
        assert_eq!(waiters.last_heard(id), Some(new));
        waiters.notify(&id.to_string());
        assert_eq!(waiters.last_heard(id), None, "a bare notice: read the job");
        waiters.notify(&format!("{id} {{not json"));
        assert_eq!(waiters.last_heard(id), None);
        assert!(
            waiters.lock().is_empty(),
            "keeping a notice registers nobody"
        );
    }

    /// Notices published while the subscriber is away are lost, so what was
    /// heard before does not count from the drop on, nor after reconnecting.
    #[test]
    fn nothing_heard_counts_across_a_lost_connection() {
        let waiters = waiters();
        let job = record(2);
        let json = serde_json::to_string(&job).unwrap();
        waiters.notify(&format!("{} {json}", job.id()));
        let mut registration = waiters.watch(job.id());
        waiters.disconnected();
        assert_eq!(waiters.last_heard(job.id()), None);
        assert!(registration.changed.has_changed().unwrap(), "woken to poll");
        registration.changed.borrow_and_update();
        waiters.connected();
        assert_eq!(waiters.last_heard(job.id()), None);
        assert!(registration.changed.has_changed().unwrap(), "woken to read");
    }

    /// The notices kept stay within their bound however many jobs change.
    #[test]
    fn the_notices_kept_stay_within_their_bound() {
        let waiters = waiters();
        for _ in 0..1_000 {
            let job = record(1);
            let json = serde_json::to_string(&job).unwrap();
            waiters.notify(&format!("{} {json}", job.id()));
        }
        assert!(waiters.heard.len() <= 16, "{} kept", waiters.heard.len());
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
