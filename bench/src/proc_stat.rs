//! A process's CPU time read from `/proc`, for both bench binaries (each
//! includes this file as a module of its own).

use anyhow::Context;

/// A process's CPU time (user + system) so far, in seconds, from
/// `/proc/PID/stat`: in clock ticks, usually 10 ms.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name, in parentheses, may hold spaces: count fields after it.
    let after_name = stat
        .rsplit_once(')')
        .context("no command name in /proc/<pid>/stat")?
        .1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: indices 11 and 12
    // of the fields after the name (which start at field 3, the state).
    let ticks: f64 = fields
        .get(11..13)
        .context("a short /proc/<pid>/stat line")?
        .iter()
        .map(|f| f.parse::<f64>())
        .sum::<Result<f64, _>>()?;
    // SAFETY: sysconf reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / per_second.max(1.0))
}

/// A process's threads now: by thread id, its name (cut at 15 characters
/// by the kernel) and its run time so far in nanoseconds, from
/// `/proc/PID/task/TID/schedstat`; `None` where the kernel keeps no
/// schedstat. A thread that ends during a measurement takes its time with
/// it, so compare two readings thread by thread (`run_since`).
#[allow(dead_code)] // the push bench includes this file and does not use it
pub fn thread_run_times(pid: u32) -> anyhow::Result<Option<ThreadTimes>> {
    if !std::path::Path::new(&format!("/proc/{pid}/schedstat")).exists() {
        return Ok(None);
    }
    let mut threads = ThreadTimes::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let task = task?;
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let path = task.path();
        let Ok(line) = std::fs::read_to_string(path.join("schedstat")) else {
            continue; // it ended since the listing
        };
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let run = line
            .split_whitespace()
            .next()
            .and_then(|r| r.parse::<u64>().ok())
            .with_context(|| format!("no run time in {}", path.display()))?;
        threads.insert(tid, (name.trim_end().to_owned(), run));
    }
    Ok(Some(threads))
}

/// Thread id to (name, run time in nanoseconds).
#[allow(dead_code)]
pub type ThreadTimes = std::collections::HashMap<u32, (String, u64)>;

/// Each thread alive in `now`, with the seconds it ran since `before`
/// (all its time for a thread that started since).
#[allow(dead_code)]
pub fn run_since(before: &ThreadTimes, now: &ThreadTimes) -> Vec<(String, f64)> {
    now.iter()
        .map(|(tid, (name, run))| {
            let earlier = before.get(tid).map_or(0, |(_, r)| *r);
            (name.clone(), run.saturating_sub(earlier) as f64 / 1e9)
        })
        .collect()
}
