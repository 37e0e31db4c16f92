//! Prometheus metrics, rendered in the text exposition format at `/metrics`.
//! A handful of fixed series, so a small hand-rolled registry (atomics and
//! fixed buckets) does the job without a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::lock;
use crate::results::HeldBytes;

mod last_hour;
mod streams;
pub use last_hour::{LastHour, LastHourView, MinuteView};
pub use streams::{StreamMetrics, Transport};

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The bucket `elapsed` falls in: the first whose bound it does not pass,
/// or `LATENCY_BUCKETS.len()` above the last.
fn bucket_of(elapsed: Duration) -> usize {
    let secs = elapsed.as_secs_f64();
    LATENCY_BUCKETS
        .iter()
        .position(|b| secs <= *b)
        .unwrap_or(LATENCY_BUCKETS.len())
}

/// A latency histogram with the fixed buckets above.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds, so it fits an atomic integer.
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        if let Some(bucket) = self.buckets.get(bucket_of(elapsed)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            elapsed.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Why a submission was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rejection {
    RateLimited,
    PoolExhausted,
    ResultStoreFull,
    ShuttingDown,
    AuditUnavailable,
    /// Coordination (Redis) or the result topic did not answer.
    BackendUnavailable,
}

impl Rejection {
    /// The `reason` label, also the audit's `audit_rejections.reason`.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::RateLimited => "rate_limited",
            Rejection::PoolExhausted => "pool_exhausted",
            Rejection::ResultStoreFull => "result_store_full",
            Rejection::ShuttingDown => "shutting_down",
            Rejection::AuditUnavailable => "audit_unavailable",
            Rejection::BackendUnavailable => "backend_unavailable",
        }
    }

    /// The HTTP status the submission got.
    fn status(self) -> u16 {
        match self {
            Rejection::RateLimited => 429,
            _ => 503,
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    /// Submission to the first chunk being readable: published, and
    /// counted in the job's progress.
    pub first_chunk_seconds: Histogram,
    /// One batch of chunks published, until all of it is acknowledged.
    pub publish_batch_seconds: Histogram,
    pub jobs_accepted_total: Counter,
    pub dedup_hits_total: Counter,
    pub chunks_published_total: Counter,
    pub rows_published_total: Counter,
    /// Publishes that failed (Kafka delivery errors, in distributed mode).
    pub publish_errors_total: Counter,
    pub jobs_running: AtomicU64,
    /// Jobs whose audit updates wait in the outbox for the store to answer.
    audit_outbox_pending: AtomicU64,
    /// HTTP exchanges produced to the traffic topic.
    pub traffic_recorded_total: Counter,
    /// HTTP exchanges not recorded: the queue was full or Kafka refused them.
    pub traffic_dropped_total: Counter,
    /// Rejections audited under the user `(other)`: too many users were
    /// turned away between two flushes of the rejection counts.
    pub rejections_unattributed_total: Counter,
    /// Rejections not audited at all: the rejection counts were full.
    pub rejections_unaudited_total: Counter,
    finished: Mutex<BTreeMap<&'static str, u64>>,
    rejections: Mutex<BTreeMap<Rejection, u64>>,
    /// By (route template, method label, status): closed sets, chosen by the
    /// API so that no client-controlled text becomes a label.
    http: Mutex<BTreeMap<(String, &'static str, u16), Histogram>>,
    /// First chunks and rejections by minute, for the ops page.
    pub last_hour: LastHour,
    /// Push streams (Server-Sent Events, WebSocket).
    pub streams: StreamMetrics,
}

impl Metrics {
    pub fn job_finished(&self, status: &'static str) {
        *lock(&self.finished).entry(status).or_default() += 1;
    }

    /// Jobs finished so far, whatever their status.
    pub fn jobs_finished_total(&self) -> u64 {
        lock(&self.finished).values().sum()
    }

    pub fn set_audit_outbox_pending(&self, jobs: usize) {
        self.audit_outbox_pending
            .store(jobs as u64, Ordering::Relaxed);
    }

    pub fn rejected(&self, why: Rejection) {
        *lock(&self.rejections).entry(why).or_default() += 1;
        self.last_hour.rejected(chrono::Utc::now(), why.status());
    }

    /// A job's first chunk became readable `waited` after its submission.
    pub fn first_chunk_readable(&self, waited: Duration) {
        self.first_chunk_seconds.observe(waited);
        self.last_hour.first_chunk(chrono::Utc::now(), waited);
    }

    pub fn http_request(&self, method: &'static str, route: &str, status: u16, elapsed: Duration) {
        lock(&self.http)
            .entry((route.to_owned(), method, status))
            .or_default()
            .observe(elapsed);
    }

    /// The exposition text; `pool` is (leased, size) of the offset pool,
    /// `results` what this process's result topic holds.
    pub fn render(&self, pool: Option<(u32, u32)>, results: HeldBytes) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let histogram_head = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        };
        histogram_head(
            &mut out,
            "pseudostream_first_chunk_seconds",
            "Submission to the first chunk being readable (published, and counted in the job's progress).",
        );
        self.first_chunk_seconds
            .render(&mut out, "pseudostream_first_chunk_seconds", "");
        histogram_head(
            &mut out,
            "pseudostream_publish_batch_seconds",
            "Publishing one batch of chunks (a job's first chunk alone, later batches up to 512 chunks) until all of it is acknowledged.",
        );
        self.publish_batch_seconds
            .render(&mut out, "pseudostream_publish_batch_seconds", "");
        counter(
            &mut out,
            "pseudostream_jobs_accepted_total",
            "New jobs accepted.",
            self.jobs_accepted_total.get(),
        );
        counter(
            &mut out,
            "pseudostream_dedup_hits_total",
            "Submissions that shared a live job.",
            self.dedup_hits_total.get(),
        );
        counter(
            &mut out,
            "pseudostream_chunks_published_total",
            "Chunks published.",
            self.chunks_published_total.get(),
        );
        counter(
            &mut out,
            "pseudostream_rows_published_total",
            "Rows published.",
            self.rows_published_total.get(),
        );
        counter(
            &mut out,
            "pseudostream_publish_errors_total",
            "Chunk publishes that failed (Kafka delivery errors).",
            self.publish_errors_total.get(),
        );
        counter(
            &mut out,
            "pseudostream_traffic_recorded_total",
            "HTTP exchanges produced to the traffic topic.",
            self.traffic_recorded_total.get(),
        );
        counter(
            &mut out,
            "pseudostream_traffic_dropped_total",
            "HTTP exchanges not recorded to the traffic topic (queue full, or Kafka refused them).",
            self.traffic_dropped_total.get(),
        );
        counter(
            &mut out,
            "pseudostream_rejections_unattributed_total",
            "Submissions turned away that the audit counts under the user (other): too many users were turned away between two flushes.",
            self.rejections_unattributed_total.get(),
        );
        counter(
            &mut out,
            "pseudostream_rejections_unaudited_total",
            "Submissions turned away that the audit does not count: its counts waiting to be written were full.",
            self.rejections_unaudited_total.get(),
        );
        let _ = writeln!(
            out,
            "# HELP pseudostream_jobs_running Jobs this process's workers are running.\n# TYPE pseudostream_jobs_running gauge\npseudostream_jobs_running {}",
            self.jobs_running.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP pseudostream_audit_outbox_pending Jobs whose audit updates wait for the audit store to answer.\n# TYPE pseudostream_audit_outbox_pending gauge\npseudostream_audit_outbox_pending {}",
            self.audit_outbox_pending.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP pseudostream_jobs_finished_total Jobs finished, by outcome.\n# TYPE pseudostream_jobs_finished_total counter"
        );
        for (status, n) in lock(&self.finished).iter() {
            let _ = writeln!(
                out,
                "pseudostream_jobs_finished_total{{status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP pseudostream_rejections_total Submissions turned away, by reason.\n# TYPE pseudostream_rejections_total counter"
        );
        for (why, n) in lock(&self.rejections).iter() {
            let _ = writeln!(
                out,
                "pseudostream_rejections_total{{reason=\"{}\"}} {n}",
                why.label()
            );
        }
        if let Some((leased, size)) = pool {
            let _ = writeln!(
                out,
                "# HELP pseudostream_offsets Offsets of the pool, by state.\n# TYPE pseudostream_offsets gauge\npseudostream_offsets{{state=\"leased\"}} {leased}\npseudostream_offsets{{state=\"free\"}} {}",
                size.saturating_sub(leased)
            );
        }
        let _ = writeln!(
            out,
            "# HELP pseudostream_result_bytes Result chunks held by this process: bytes in memory, and disk space their spill files take (freed a 64 MiB segment at a time).\n# TYPE pseudostream_result_bytes gauge\npseudostream_result_bytes{{where=\"memory\"}} {}\npseudostream_result_bytes{{where=\"disk\"}} {}",
            results.memory, results.disk
        );
        self.streams.render(&mut out);
        histogram_head(
            &mut out,
            "pseudostream_http_request_seconds",
            "HTTP request latency by route.",
        );
        for ((route, method, status), h) in lock(&self.http).iter() {
            h.render(
                &mut out,
                "pseudostream_http_request_seconds",
                &format!("route=\"{route}\",method=\"{method}\",status=\"{status}\""),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_histograms_cumulatively() {
        let m = Metrics::default();
        m.first_chunk_seconds.observe(Duration::from_millis(3));
        m.first_chunk_seconds.observe(Duration::from_millis(40));
        m.rejected(Rejection::RateLimited);
        m.http_request("GET", "/v1/jobs/{job_id}", 200, Duration::from_millis(1));
        let text = m.render(Some((3, 10)), HeldBytes { memory: 5, disk: 6 });
        assert!(
            text.contains("pseudostream_first_chunk_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(text.contains("pseudostream_first_chunk_seconds_bucket{le=\"0.05\"} 2"));
        assert!(text.contains("pseudostream_first_chunk_seconds_count 2"));
        assert!(text.contains("pseudostream_rejections_total{reason=\"rate_limited\"} 1"));
        assert!(text.contains("pseudostream_offsets{state=\"free\"} 7"));
        assert!(text.contains("pseudostream_result_bytes{where=\"disk\"} 6"));
        assert!(
            text.contains(
                "route=\"/v1/jobs/{job_id}\",method=\"GET\",status=\"200\",le=\"+Inf\"} 1"
            )
        );
    }
}
