//! The process's one change subscriber and the long-polls it wakes: every
//! change to a job is published on the changes channel, and one task per
//! process forwards each to the local waiters for that job, so thousands of
//! waiters cost one Redis connection.

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

use super::conn::{ROUND_TRIP_TIMEOUT, timed};
use crate::coord::CoordError;
use crate::model::JobId;

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

/// The long-polls of this process, by job. One subscriber task feeds them,
/// so thousands of waiters cost one Redis connection.
pub struct Waiters {
    by_job: Mutex<HashMap<JobId, watch::Sender<()>>>,
    /// Whether the change subscriber is connected; waiters poll while not.
    listening: AtomicBool,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, watch::Sender<()>>> {
        // The map is valid after any panic (inserts and removes are single
        // operations), so a poisoned lock is still usable.
        crate::lock(&self.by_job)
    }

    pub fn watch(self: &Arc<Self>, id: JobId) -> WaitRegistration {
        let changed = self
            .lock()
            .entry(id)
            .or_insert_with(|| watch::channel(()).0)
            .subscribe();
        WaitRegistration {
            waiters: self.clone(),
            id,
            changed,
        }
    }

    fn notify(&self, id: JobId) {
        if let Some(sender) = self.lock().get(&id) {
            sender.send_replace(());
        }
    }

    fn notify_all(&self) {
        for sender in self.lock().values() {
            sender.send_replace(());
        }
    }
}

/// A waiter's interest in one job; removes the job's entry when the last
/// waiter for it goes (also when a long-poll request is dropped).
pub struct WaitRegistration {
    waiters: Arc<Waiters>,
    id: JobId,
    pub changed: watch::Receiver<()>,
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
                    Some(message) => match message.get_payload::<String>().map(|p| p.parse::<JobId>()) {
                        Ok(Ok(id)) => waiters.notify(id),
                        _ => debug!("ignoring a malformed change notification"),
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
