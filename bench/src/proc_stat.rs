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
