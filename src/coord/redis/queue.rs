//! The Redis [`JobQueue`]: a stream with the consumer group `workers`.

use std::sync::Mutex;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, MultiplexedConnection};
use ::redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use ::redis::{AsyncConnectionConfig, Client, RedisResult, Script};
use async_trait::async_trait;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::conn::{ROUND_TRIP_TIMEOUT, call, error, open};
use super::keys::Keys;
use crate::coord::{CoordError, JobQueue, QueuedJob};
use crate::model::JobSpec;

/// How long one blocking stream read waits; bounds how late shutdown and
/// takeovers are noticed.
const QUEUE_BLOCK: Duration = Duration::from_millis(1000);
const GROUP: &str = "workers";

/// A Redis stream read by the consumer group `workers`. A delivery stays
/// pending until acked; one idle longer than the lease (its worker stopped
/// heartbeating) is claimed by the next worker that asks.
pub struct RedisJobQueue {
    client: Client,
    conn: ConnectionManager,
    /// Connections for blocking reads: a blocked read holds its connection,
    /// so each concurrent `next` gets its own, reused afterwards.
    readers: Mutex<Vec<MultiplexedConnection>>,
    stream: String,
    consumer: String,
    lease: Duration,
    heartbeat: Script,
    /// When this process next looks for deliveries whose worker went silent.
    next_takeover_check: Mutex<Instant>,
}

impl RedisJobQueue {
    /// `consumer` names this worker process in the group; it must differ
    /// between processes. A delivery not heartbeated for `lease` is handed
    /// to another worker.
    pub async fn connect(
        url: &str,
        prefix: &str,
        consumer: &str,
        lease: Duration,
    ) -> Result<RedisJobQueue, CoordError> {
        let (client, mut conn) = open(url).await?;
        let stream = Keys::new(prefix).queue;
        create_group(&mut conn, &stream).await?;
        Ok(RedisJobQueue {
            client,
            conn,
            readers: Mutex::new(Vec::new()),
            stream,
            consumer: consumer.to_owned(),
            lease,
            heartbeat: Script::new(include_str!("scripts/heartbeat.lua")),
            next_takeover_check: Mutex::new(Instant::now()),
        })
    }

    /// Redis lost its keys (a restart without persistence): the group went
    /// with the stream, and every read fails until it is back. Created from
    /// "0", so jobs queued since the loss are delivered.
    async fn create_group_again(&self) -> Result<(), CoordError> {
        warn!("the job queue's consumer group is gone; creating it again");
        let mut conn = self.conn.clone();
        create_group(&mut conn, &self.stream).await
    }

    fn readers(&self) -> std::sync::MutexGuard<'_, Vec<MultiplexedConnection>> {
        // A Vec of idle connections cannot be left inconsistent by a panic.
        crate::lock(&self.readers)
    }

    /// Claims one delivery idle longer than the lease (its worker is gone),
    /// if it is time to look. A silent delivery is only due after a whole
    /// lease, so one look per process every third of a lease is soon
    /// enough; looking before every read cost each job an `XAUTOCLAIM`
    /// round trip. After a takeover more may be waiting: the next call
    /// looks again.
    async fn take_over_if_due(&self) -> Result<Option<StreamId>, CoordError> {
        let now = Instant::now();
        {
            let mut next = crate::lock(&self.next_takeover_check);
            if now < *next {
                return Ok(None);
            }
            *next = now + self.lease / 3;
        }
        let taken = self.take_over().await?;
        if taken.is_some() {
            *crate::lock(&self.next_takeover_check) = now;
        }
        Ok(taken)
    }

    /// Claims one delivery idle longer than the lease: its worker is gone.
    async fn take_over(&self) -> Result<Option<StreamId>, CoordError> {
        let mut conn = self.conn.clone();
        let reply: StreamAutoClaimReply = call(
            ::redis::cmd("XAUTOCLAIM")
                .arg(&self.stream)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(self.lease.as_millis() as u64)
                .arg("0-0")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn),
        )
        .await?;
        Ok(reply.claimed.into_iter().next())
    }

    /// Waits up to `QUEUE_BLOCK` for a new delivery.
    async fn read_new(&self) -> Result<Option<StreamId>, CoordError> {
        let pooled = self.readers().pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => {
                // A blocked read answers after `QUEUE_BLOCK` at the latest.
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(ROUND_TRIP_TIMEOUT))
                    .set_response_timeout(Some(QUEUE_BLOCK + ROUND_TRIP_TIMEOUT));
                call(
                    self.client
                        .get_multiplexed_async_connection_with_config(&config),
                )
                .await?
            }
        };
        let reply: Option<StreamReadReply> = call(
            ::redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(QUEUE_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(">")
                .query_async(&mut conn),
        )
        .await?;
        // Only an idle connection goes back; one dropped mid-read (shutdown,
        // error) is closed.
        self.readers().push(conn);
        Ok(reply
            .and_then(|r| r.keys.into_iter().next())
            .and_then(|key| key.ids.into_iter().next()))
    }

    /// Turns a delivery into a job; a malformed one is acked away so it
    /// cannot stall the queue.
    async fn parse(&self, entry: StreamId) -> Result<Option<QueuedJob>, CoordError> {
        let spec = entry
            .get::<String>("spec")
            .ok_or_else(|| "no `spec` field".to_owned())
            .and_then(|json| serde_json::from_str::<JobSpec>(&json).map_err(|e| e.to_string()));
        match spec {
            Ok(spec) => Ok(Some(QueuedJob {
                spec,
                receipt: entry.id,
            })),
            Err(e) => {
                warn!(receipt = %entry.id, error = %e, "dropping a malformed queue entry");
                self.remove(&entry.id).await?;
                Ok(None)
            }
        }
    }

    async fn remove(&self, receipt: &str) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("XACK")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(receipt)
            .ignore()
            .cmd("XDEL")
            .arg(&self.stream)
            .arg(receipt)
            .ignore();
        call(pipe.query_async::<()>(&mut conn)).await
    }
}

#[async_trait]
impl JobQueue for RedisJobQueue {
    async fn enqueue(&self, spec: JobSpec) -> Result<(), CoordError> {
        let entry = queue_entry(&spec)?;
        let mut conn = self.conn.clone();
        call(
            ::redis::cmd("XADD")
                .arg(&self.stream)
                .arg("*")
                .arg("spec")
                .arg(entry)
                .query_async::<String>(&mut conn),
        )
        .await
        .map(drop)
    }

    async fn next(&self, shutdown: &CancellationToken) -> Result<Option<QueuedJob>, CoordError> {
        while !shutdown.is_cancelled() {
            let due = match self.take_over_if_due().await {
                Err(e) if lost_group(&e) => {
                    self.create_group_again().await?;
                    continue;
                }
                due => due?,
            };
            if let Some(entry) = due {
                let receipt = entry.id.clone();
                if let Some(job) = self.parse(entry).await? {
                    warn!(job_id = %job.spec.job_id, offset = %job.spec.offset, receipt = %receipt,
                        "taking over a job whose worker stopped heartbeating");
                    return Ok(Some(job));
                }
                continue;
            }
            // A read cut short by shutdown may still deliver an entry to this
            // consumer; nobody acks it, so another worker takes it over after
            // the lease.
            let entry = tokio::select! {
                entry = self.read_new() => entry,
                _ = shutdown.cancelled() => return Ok(None),
            };
            let entry = match entry {
                Err(e) if lost_group(&e) => {
                    self.create_group_again().await?;
                    continue;
                }
                entry => entry?,
            };
            if let Some(entry) = entry
                && let Some(job) = self.parse(entry).await?
            {
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    async fn heartbeat(&self, job: &QueuedJob) -> Result<(), CoordError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.heartbeat.prepare_invoke();
        invocation
            .key(&self.stream)
            .arg(GROUP)
            .arg(&job.receipt)
            .arg(&self.consumer);
        let owned: i64 = call(invocation.invoke_async(&mut conn)).await?;
        if owned == 0 {
            warn!(job_id = %job.spec.job_id, receipt = %job.receipt,
                "heartbeat for a job this worker no longer holds (taken over or acked)");
        }
        Ok(())
    }

    async fn ack(&self, job: &QueuedJob) -> Result<(), CoordError> {
        self.remove(&job.receipt).await
    }

    fn heartbeat_interval(&self) -> Option<Duration> {
        Some(self.lease / 3)
    }
}

/// A job's spec as its queue entry holds it (the entry's `spec` field).
/// The job store writes new jobs' entries too (`JobIntake`).
pub(super) fn queue_entry(spec: &JobSpec) -> Result<String, CoordError> {
    serde_json::to_string(spec).map_err(|e| {
        CoordError::Unavailable(format!("job {} could not be encoded: {e}", spec.job_id))
    })
}

/// Whether Redis answered that the stream or its group does not exist.
fn lost_group(e: &CoordError) -> bool {
    e.to_string().contains("NOGROUP")
}

/// Creates the queue's consumer group (and the stream) unless it exists.
async fn create_group(conn: &mut ConnectionManager, stream: &str) -> Result<(), CoordError> {
    let created: RedisResult<()> = ::redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Ok(()) => Ok(()),
        // Another process created the group first.
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(error(e)),
    }
}
