//! The table of figures: each measured figure against its baseline and
//! target, printed as it comes and as Markdown at the end.

use std::time::Duration;

use chrono::Utc;
use pseudostream::config::Config;

/// The figures so far; each is also printed to stderr as it is measured,
/// so a later failure does not lose the earlier ones.
#[derive(Default)]
pub(crate) struct Table(pub(crate) Vec<Figure>);

impl Table {
    pub(crate) fn push(&mut self, f: Figure) {
        eprintln!(
            "  {}: {} (baseline {}, ratio {})",
            f.what, f.ours, f.baseline, f.ratio
        );
        self.0.push(f);
    }
}

/// One line of the table.
pub(crate) struct Figure {
    pub(crate) what: String,
    pub(crate) ours: String,
    pub(crate) baseline: String,
    pub(crate) ratio: String,
    pub(crate) target: String,
}

pub(crate) fn print_table(table: &[Figure], config: &Config, kafka: bool) {
    println!();
    println!(
        "pseudostream bench — {} — {} cores — {} workers — result topic: {}",
        Utc::now().format("%Y-%m-%d %H:%M UTC"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        config.workers,
        if kafka { "Kafka" } else { "embedded log" }
    );
    println!();
    println!("| measurement | pseudostream | baseline | ratio | target |");
    println!("|---|---|---|---|---|");
    for f in table {
        println!(
            "| {} | {} | {} | {} | {} |",
            f.what, f.ours, f.baseline, f.ratio, f.target
        );
    }
}

/// The process's resident memory now and at its peak (the server is in this process).
pub(crate) fn rss_line(when: &str) -> Figure {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or("?".to_owned(), |kb| format!("{} MiB", kb / 1024))
    };
    Figure {
        what: format!("RSS {when} (now / peak)"),
        ours: format!("{} / {}", field("VmRSS:"), field("VmHWM:")),
        baseline: "-".into(),
        ratio: "-".into(),
        target: "bounded".into(),
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
