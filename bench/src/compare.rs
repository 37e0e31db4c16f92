//! `--compare BIN`: this build against another (BIN, the
//! `pseudostream-bench` of another commit), run in turn with the same
//! arguments, `--rounds` times each. The order swaps every round, so
//! neither side always runs on a machine the other has just warmed or
//! tired. Each measurement comes out as the median and range of each
//! side's runs and of the ratio within each round: the way
//! docs/PERFORMANCE.md reports a before/after comparison, never a best run.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, bail};

/// The flags that steer the comparison; the runs get every other argument.
const OWN_FLAGS: [&str; 3] = ["--compare", "--rounds", "--between"];

/// Runs this build and `other` alternately, `rounds` times each, with
/// `args`; `between`, a shell command, runs before every run (say, to
/// restart a broker that keeps every run's topic in memory).
pub(crate) async fn compare(
    other: &Path,
    rounds: usize,
    between: Option<&str>,
    args: &[OsString],
) -> anyhow::Result<()> {
    let this = std::env::current_exe().context("cannot find this bench's own binary")?;
    let args = forwarded(args);
    let mut seen = Figures::default();
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            if let Some(command) = between {
                let status = tokio::process::Command::new("sh")
                    .args(["-c", command])
                    .status()
                    .await?;
                if !status.success() {
                    bail!("`{command}` (--between) failed: {status}");
                }
            }
            let bin = if side == 0 { this.as_path() } else { other };
            eprintln!("round {} of {rounds}: {}", round + 1, bin.display());
            let run = tokio::process::Command::new(bin)
                .args(&args)
                .stderr(Stdio::inherit())
                .output()
                .await
                .with_context(|| format!("cannot run {}", bin.display()))?;
            if !run.status.success() {
                bail!("{} failed: {}", bin.display(), run.status);
            }
            for (what, value) in figures_of(&String::from_utf8_lossy(&run.stdout)) {
                seen.add(what, side, round, value);
            }
        }
    }
    println!();
    println!(
        "{rounds} rounds, this build and {}, alternated",
        other.display()
    );
    println!();
    println!(
        "| measurement | this build | {} | this ÷ that, per round |",
        other.display()
    );
    println!("|---|---|---|---|");
    for (what, runs) in seen.in_order() {
        let ratios: Vec<f64> = (0..rounds)
            .filter_map(|round| Some(runs[0].get(&round)? / runs[1].get(&round)?))
            .filter(|ratio| ratio.is_finite())
            .collect();
        println!(
            "| {what} | {} | {} | {} |",
            spread(runs[0].values().copied().collect()),
            spread(runs[1].values().copied().collect()),
            spread(ratios),
        );
    }
    Ok(())
}

/// Each measurement's value per side and round, in the order first seen.
#[derive(Default)]
struct Figures {
    order: Vec<String>,
    runs: HashMap<String, [HashMap<usize, f64>; 2]>,
}

impl Figures {
    fn add(&mut self, what: String, side: usize, round: usize, value: f64) {
        if !self.runs.contains_key(&what) {
            self.order.push(what.clone());
        }
        self.runs.entry(what).or_default()[side].insert(round, value);
    }

    fn in_order(&self) -> impl Iterator<Item = (&String, &[HashMap<usize, f64>; 2])> {
        self.order.iter().map(|what| (what, &self.runs[what]))
    }
}

/// `args` without the comparison's own flags and their values.
fn forwarded(args: &[OsString]) -> Vec<OsString> {
    let mut kept = Vec::with_capacity(args.len());
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let text = arg.to_string_lossy();
        if OWN_FLAGS.contains(&text.as_ref()) {
            skip_value = true;
        } else if !OWN_FLAGS
            .iter()
            .any(|flag| text.starts_with(&format!("{flag}=")))
        {
            kept.push(arg.clone());
        }
    }
    kept
}

/// Each measurement of a bench table with the first number of its figure
/// (and, where the ratio to its baseline is a number, that too, as a
/// measurement of its own).
fn figures_of(table: &str) -> Vec<(String, f64)> {
    let mut figures = Vec::new();
    for line in table.lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        let [what, ours, _baseline, ratio, ..] = cells.as_slice() else {
            continue;
        };
        if *what == "measurement" || what.starts_with("---") {
            continue;
        }
        let what = without_counts(what);
        if let Some((value, unit)) = first_number(ours) {
            figures.push((format!("{what} ({unit})"), value));
        }
        if let Some((value, unit)) = first_number(ratio) {
            figures.push((format!("{what}: ratio to its baseline ({unit})"), value));
        }
    }
    figures
}

/// A measurement's name with the numbers in its parentheses left out:
/// they describe a run (its chunk sizes, say), which may differ from run
/// to run, while the measurement is the same.
fn without_counts(what: &str) -> String {
    let mut name = String::with_capacity(what.len());
    let mut depth = 0_usize;
    let mut in_number = false;
    for c in what.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > 0 && (c.is_ascii_digit() || (in_number && (c == ',' || c == '.'))) {
            if !in_number {
                name.push('…');
            }
            in_number = true;
            continue;
        }
        in_number = false;
        name.push(c);
    }
    name
}

/// The first number in `text` (thousands separators allowed) and the word
/// after it, its unit.
fn first_number(text: &str) -> Option<(f64, String)> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(rest.len());
    let value = rest[..end]
        .replace(',', "")
        .trim_end_matches('.')
        .parse()
        .ok()?;
    let unit = rest[end..]
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned();
    Some((value, unit))
}

/// `median (lowest–highest)`, or `-` for no values.
fn spread(mut values: Vec<f64>) -> String {
    if values.is_empty() {
        return "-".into();
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    // One precision for all three, by the median's size.
    let decimals = match median.abs() {
        m if m >= 100.0 => 0,
        m if m >= 10.0 => 1,
        _ => 3,
    };
    let shown = |v: f64| format!("{v:.decimals$}");
    format!(
        "{} ({}–{})",
        shown(median),
        shown(values[0]),
        shown(values[n - 1])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_comparisons_own_flags_are_not_forwarded() {
        let args: Vec<OsString> = [
            "--data-dir",
            "D",
            "--compare",
            "/old/bench",
            "--rounds=3",
            "--only",
            "whole",
            "--between",
            "true",
        ]
        .map(OsString::from)
        .to_vec();
        let kept = forwarded(&args);
        assert_eq!(
            kept,
            ["--data-dir", "D", "--only", "whole"].map(OsString::from)
        );
    }

    #[test]
    fn figures_are_read_off_a_bench_table() {
        let table = "\npseudostream bench — 2 cores\n\n| measurement | pseudostream | baseline | ratio | target |\n|---|---|---|---|---|\n| first chunk p95, 100 concurrent | 100.6 ms | - | - | ≤ 100 ms |\n| delivery: rows/s | 397794 rows/s (0.50 s) | 1573502 rows/s | 25.3 % | ≥ 80 % |\n| admission | 10,156 req/s | 62,983 req/s | 16 % | - |\n";
        assert_eq!(
            figures_of(table),
            [
                ("first chunk p95, 100 concurrent (ms)".to_owned(), 100.6),
                ("delivery: rows/s (rows/s)".to_owned(), 397_794.0),
                (
                    "delivery: rows/s: ratio to its baseline (%)".to_owned(),
                    25.3
                ),
                ("admission (req/s)".to_owned(), 10_156.0),
                ("admission: ratio to its baseline (%)".to_owned(), 16.0),
            ]
        );
    }

    #[test]
    fn numbers_in_parentheses_are_left_out_of_a_name() {
        assert_eq!(
            without_counts("delivery, 200000 rows (2640 B/chunk, 1,000 pages) vs (2621.5 B)"),
            "delivery, 200000 rows (… B/chunk, … pages) vs (… B)"
        );
        assert_eq!(
            without_counts("first chunk p95, 100 concurrent"),
            "first chunk p95, 100 concurrent"
        );
    }

    #[test]
    fn a_spread_is_the_median_and_the_range() {
        assert_eq!(spread(vec![3.0, 1.0, 2.0]), "2.000 (1.000–3.000)");
        assert_eq!(spread(vec![120.0, 100.0]), "110 (100–120)");
        assert_eq!(spread(vec![9.0, 12.0, 11.0]), "11.0 (9.0–12.0)");
        assert_eq!(spread(Vec::new()), "-");
    }
}
