//! The server side of the push bench: the service, in a process of its own
//! (so client and server each have their own file limit), with a gate in
//! front of every chunk that the bench opens from stdin. A chunk then
//! exists from the moment the bench says so, which is what the latencies
//! are measured from. Each chunk's readable time (its progress landed) is
//! noted and printed at the end, `readable <jobId> <chunkSeq> <ns>` on the
//! shared clock, so the bench can time publish-to-client as well.

use std::sync::Arc;

use anyhow::Context;
use pseudostream::app::{self, Roles};
use pseudostream::config::Config;
use pseudostream::jobs::Hooks;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Semaphore;

use super::clock::SharedClock;

/// Serves with the settings of the environment (`PSEUDOSTREAM_*`); prints
/// `listening <url>`, then takes `release <n>` lines (n more chunks may be
/// published, over all jobs) until stdin closes.
pub async fn run() -> anyhow::Result<()> {
    let config = Config::from_args(["pseudostream"])?;
    let gate = Arc::new(Semaphore::new(0));
    let (readable, mut readable_times) = tokio::sync::mpsc::unbounded_channel();
    let hooks = Hooks {
        chunk_gate: Some(gate.clone()),
        chunk_readable: Some(readable),
        ..Hooks::default()
    };
    let clock = SharedClock::new();
    let (running, _) = app::start_with_hooks(config, Roles::ALL, hooks).await?;
    let addr = running.addr.context("the service listens")?;
    println!("listening http://{addr}");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(n) = line.strip_prefix("release ") {
            gate.add_permits(n.trim().parse()?);
        }
    }
    // Whatever a job still holds back goes out, so workers can stop.
    gate.add_permits(Semaphore::MAX_PERMITS / 2);
    running.shutdown.cancel();
    running.done.await??;
    while let Ok((job, seq, at)) = readable_times.try_recv() {
        println!("readable {job} {seq} {}", clock.ns(at));
    }
    Ok(())
}
