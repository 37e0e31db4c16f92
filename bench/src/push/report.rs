//! What the push bench reads off the server (its CPU, its memory, when
//! each chunk became readable) and the table it prints.

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::Cli;
use super::clients::{Arrivals, Sample};
use super::clock::SharedClock;

/// The server's CPU over the measured rounds.
pub struct ServerCpu {
    pub seconds: f64,
    pub over: Duration,
}

pub fn report_short_polls(cli: &Cli, arrivals: &Arrivals, cpu: &ServerCpu) {
    println!(
        "| server CPU over the rounds | {:.1} s in {:.1} s ({:.2} cores) |",
        cpu.seconds,
        cpu.over.as_secs_f64(),
        cpu.seconds / cpu.over.as_secs_f64().max(1e-9)
    );
    if cli.short_pollers == 0 {
        return;
    }
    let mut l = arrivals.short_polls.lock().unwrap().clone();
    l.sort();
    println!(
        "| short pollers ({}, `wait=0` about once a second), {} requests: p50 / p99 / max | {} / {} / {} |",
        cli.short_pollers,
        l.len(),
        percentile(&l, 0.50),
        percentile(&l, 0.99),
        percentile(&l, 1.0)
    );
}

pub fn percentile(l: &[Duration], p: f64) -> String {
    l.get(((l.len() as f64 * p).ceil() as usize).saturating_sub(1))
        .map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
}

pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .context("VmRSS in /proc/<pid>/status")
}

/// What the server printed as it stopped: when each (job, `chunkSeq`)
/// became readable, in shared-clock nanoseconds.
pub fn readable_times(
    out: &mut impl BufRead,
    jobs: &[String],
) -> anyhow::Result<HashMap<(u16, u32), u64>> {
    let index: HashMap<&str, u16> = jobs
        .iter()
        .enumerate()
        .map(|(n, id)| (id.as_str(), n as u16))
        .collect();
    let mut times = HashMap::new();
    for line in out.lines() {
        let line = line?;
        let mut words = line.split(' ');
        if words.next() != Some("readable") {
            continue;
        }
        let (Some(job), Some(seq), Some(ns)) = (words.next(), words.next(), words.next()) else {
            bail!("the server said {line:?}");
        };
        if let Some(&job) = index.get(job) {
            times.insert((job, seq.parse()?), ns.parse()?);
        }
    }
    Ok(times)
}

/// What arrivals are timed from.
pub struct Times<'a> {
    /// Each round's release, in the bench's clock.
    pub released: &'a [Instant],
    /// Each chunk's readable time, in the shared clock.
    pub readable: &'a HashMap<(u16, u32), u64>,
    pub clock: &'a SharedClock,
}

impl Times<'_> {
    fn since_release(&self, s: &Sample) -> Duration {
        s.at.saturating_duration_since(self.released[s.seq as usize])
    }

    /// None when the server did not note the chunk.
    fn since_readable(&self, s: &Sample) -> Option<Duration> {
        let readable = self.readable.get(&(s.job, s.seq))?;
        Some(Duration::from_nanos(
            self.clock.ns(s.at).saturating_sub(*readable),
        ))
    }
}

pub fn report(
    cli: &Cli,
    arrivals: &Arrivals,
    times: &Times,
    before: u64,
    after: u64,
    open_time: Duration,
) {
    let samples = arrivals.samples.lock().unwrap();
    let latencies = |stream: bool, readable: bool| {
        let mut l: Vec<Duration> = samples
            .iter()
            .filter(|s| s.stream == stream)
            .filter_map(|s| {
                if readable {
                    times.since_readable(s)
                } else {
                    Some(times.since_release(s))
                }
            })
            .collect();
        l.sort();
        l
    };
    let pct = percentile;
    let (sse, polls) = (latencies(true, false), latencies(false, false));
    let (sse_readable, polls_readable) = (latencies(true, true), latencies(false, true));
    let opened = arrivals.opened.load(Ordering::Relaxed);
    let per_stream = after.saturating_sub(before) as f64 / opened.max(1) as f64;
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| SSE streams open at once | {opened} of {} (opened in {open_time:.1?}) |",
        cli.streams
    );
    println!("| long-pollers alongside | {} |", cli.pollers);
    println!(
        "| jobs, chunks measured per job | {}, {} |",
        cli.jobs, cli.rounds
    );
    println!("| each round's releases spread over | {:?} |", cli.spread);
    println!("| errors | {} |", arrivals.errors.load(Ordering::Relaxed));
    println!(
        "| streams and pollers that saw the end | {} |",
        arrivals.ended.load(Ordering::Relaxed)
    );
    println!(
        "| server RSS before / after opening the streams | {} / {} MiB |",
        before / 1024,
        after / 1024
    );
    println!("| server memory per idle stream | {per_stream:.1} KiB |");
    let mut rows = vec![
        ("publish-to-client, SSE", &sse_readable),
        ("publish-to-client, long-poll", &polls_readable),
    ];
    // With a spread, a round's start says nothing of a chunk's own release.
    if cli.spread.is_zero() {
        rows.push(("release-to-client, SSE", &sse));
        rows.push(("release-to-client, long-poll", &polls));
    }
    for (name, l) in rows {
        println!(
            "| {name} ({} samples): p50 / p99 / max | {} / {} / {} |",
            l.len(),
            pct(l, 0.50),
            pct(l, 0.99),
            pct(l, 1.0)
        );
    }
    for e in arrivals.first_errors.lock().unwrap().iter() {
        eprintln!("error: {e}");
    }
}
