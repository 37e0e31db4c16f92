//! The push bench's clients: a Server-Sent Events stream reader and a
//! long-poller, each noting when every measured chunk reached it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// What every client reports into.
pub struct Arrivals {
    /// By round (the `chunkSeq` measured): how many clients have it.
    pub seen: Vec<AtomicUsize>,
    /// When each client got each measured chunk.
    pub samples: Mutex<Vec<Sample>>,
    pub opened: AtomicUsize,
    pub ended: AtomicUsize,
    pub errors: AtomicUsize,
    pub first_errors: Mutex<Vec<String>>,
    /// Every short poll's request time.
    pub short_polls: Mutex<Vec<Duration>>,
}

/// One client's arrival of one measured chunk.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub stream: bool,
    /// The job, by its place in the bench's list.
    pub job: u16,
    pub seq: u32,
    pub at: Instant,
}

impl Arrivals {
    pub fn new(rounds: usize) -> Arrivals {
        Arrivals {
            seen: (0..rounds).map(|_| AtomicUsize::new(0)).collect(),
            samples: Mutex::new(Vec::new()),
            opened: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            errors: AtomicUsize::new(0),
            first_errors: Mutex::new(Vec::new()),
            short_polls: Mutex::new(Vec::new()),
        }
    }

    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap();
        if first.len() < 5 {
            first.push(what);
        }
    }

    fn arrived(&self, local: &mut Vec<Sample>, stream: bool, job: u16, seq: u64, at: Instant) {
        if let Some(seen) = self.seen.get(seq as usize) {
            seen.fetch_add(1, Ordering::Relaxed);
            let seq = seq as u32;
            local.push(Sample {
                stream,
                job,
                seq,
                at,
            });
        }
    }

    fn keep(&self, local: Vec<Sample>) {
        self.samples.lock().unwrap().extend(local);
    }
}

/// Reads one SSE stream until its `end` event.
pub async fn stream(
    http: reqwest::Client,
    url: String,
    job: u16,
    key: &'static str,
    arrivals: &Arrivals,
    opening: &tokio::sync::Semaphore,
) {
    let permit = opening.acquire().await;
    let response = match http.get(&url).bearer_auth(key).send().await {
        Ok(r) if r.status() == 200 => r,
        Ok(r) => return arrivals.error(format!("stream answered {}", r.status())),
        Err(e) => return arrivals.error(format!("stream: {e}")),
    };
    drop(permit);
    arrivals.opened.fetch_add(1, Ordering::Relaxed);
    let mut response = response;
    // The client must not be what is measured: events are found and
    // classified in place, without copying or decoding them.
    let mut buffer: Vec<u8> = Vec::new();
    let mut local = Vec::new();
    let boundary = memchr::memmem::Finder::new(b"\n\n");
    loop {
        let bytes = match response.chunk().await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => break arrivals.error("the stream closed before `end`".into()),
            Err(e) => break arrivals.error(format!("stream read: {e}")),
        };
        let now = Instant::now();
        buffer.extend_from_slice(&bytes);
        let mut ended = false;
        let mut start = 0;
        while let Some(end) = boundary.find(&buffer[start..]) {
            let block = &buffer[start..start + end];
            start += end + 2;
            if block.starts_with(b":") {
                continue;
            } else if block.starts_with(b"event: end") {
                ended = true;
            } else if block.starts_with(b"event: error") {
                arrivals.error(format!("error event: {}", String::from_utf8_lossy(block)));
                ended = true;
            } else if let Some(seq) = event_id(block) {
                arrivals.arrived(&mut local, true, job, seq, now);
            }
        }
        buffer.drain(..start);
        if ended {
            arrivals.ended.fetch_add(1, Ordering::Relaxed);
            break;
        }
    }
    arrivals.keep(local);
}

/// A chunk event's `id:` line, its `chunkSeq`.
fn event_id(event: &[u8]) -> Option<u64> {
    let digits = event.strip_prefix(b"id: ")?;
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&digits[..len]).ok()?.parse().ok()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    chunk_seq: u64,
    is_last: bool,
}

#[derive(Deserialize)]
struct Page {
    chunks: Vec<Head>,
    next: u64,
}

/// Long-polls one job's chunks until its last, as a polling client would.
pub async fn poll(
    http: reqwest::Client,
    base: String,
    (job, index): (String, u16),
    key: &'static str,
    arrivals: &Arrivals,
) {
    let mut next = 0;
    let mut local = Vec::new();
    'polls: loop {
        let url = format!("{base}/v1/jobs/{job}/chunks?from={next}&wait=20");
        let page = match http.get(&url).bearer_auth(key).send().await {
            Ok(r) if r.status() == 200 => r.json::<Page>().await,
            Ok(r) => break arrivals.error(format!("poll answered {}", r.status())),
            Err(e) => break arrivals.error(format!("poll: {e}")),
        };
        let now = Instant::now();
        let page = match page {
            Ok(page) => page,
            Err(e) => break arrivals.error(format!("poll body: {e}")),
        };
        for chunk in &page.chunks {
            arrivals.arrived(&mut local, false, index, chunk.chunk_seq, now);
            if chunk.is_last {
                arrivals.ended.fetch_add(1, Ordering::Relaxed);
                break 'polls;
            }
        }
        next = page.next;
    }
    arrivals.keep(local);
}

/// Reads one job's next page about once a second without waiting
/// (`wait=0`), as a dashboard panel refreshing does, from `phase` into the
/// first second until `stop`; notes each request's time.
pub async fn short_poll(
    http: reqwest::Client,
    base: String,
    job: String,
    key: &'static str,
    arrivals: &Arrivals,
    (phase, stop): (Duration, tokio_util::sync::CancellationToken),
) {
    let mut next = 0;
    let mut local = Vec::new();
    let mut at = tokio::time::Instant::now() + phase;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(at) => {}
            () = stop.cancelled() => break,
        }
        at += Duration::from_secs(1);
        let url = format!("{base}/v1/jobs/{job}/chunks?from={next}&limit=10&wait=0");
        let started = Instant::now();
        let page = match http.get(&url).bearer_auth(key).send().await {
            Ok(r) if r.status() == 200 => r.json::<Page>().await,
            Ok(r) => break arrivals.error(format!("short poll answered {}", r.status())),
            Err(e) => break arrivals.error(format!("short poll: {e}")),
        };
        match page {
            Ok(page) => {
                local.push(started.elapsed());
                next = page.next;
            }
            Err(e) => break arrivals.error(format!("short poll body: {e}")),
        }
    }
    arrivals.short_polls.lock().unwrap().extend(local);
}
