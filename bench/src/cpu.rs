//! CPU time, of this process and of others on the same host (the Redis
//! server and the broker of a one-machine run), for the figures that say
//! what a measurement cost as well as how long it took.

use anyhow::Context;

use crate::proc_stat::cpu_seconds;

/// This process's CPU time (user + system) since `start`, from getrusage.
pub(crate) struct ProcessCpu(f64);

impl ProcessCpu {
    fn now() -> f64 {
        // SAFETY: getrusage fills the struct it is given and touches nothing else.
        let usage = unsafe {
            let mut usage = std::mem::zeroed::<libc::rusage>();
            libc::getrusage(libc::RUSAGE_SELF, &mut usage);
            usage
        };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        secs(usage.ru_utime) + secs(usage.ru_stime)
    }

    pub(crate) fn start() -> ProcessCpu {
        ProcessCpu(Self::now())
    }

    pub(crate) fn seconds(&self) -> f64 {
        Self::now() - self.0
    }
}

/// Processes of this host found by name (`/proc/PID/comm`), with the CPU
/// time each had when found.
pub(crate) struct HostProcesses(Vec<HostProcess>);

struct HostProcess {
    name: String,
    pid: u32,
    /// User + system, when found.
    cpu_seconds: f64,
}

impl HostProcesses {
    /// The newest process of each name: a broker restarted before the run
    /// may leave its predecessor exiting.
    pub(crate) fn named(names: &[String]) -> anyhow::Result<HostProcesses> {
        let mut found = Vec::with_capacity(names.len());
        for name in names {
            // The kernel keeps 15 characters of a command name.
            let pid = newest_named(name)?.with_context(|| {
                format!("no process named {name:?} on this host (--cpu-of; names are cut at 15 characters)")
            })?;
            let cpu_seconds = cpu_seconds(pid)
                .with_context(|| format!("reading the CPU time of {name} ({pid})"))?;
            found.push(HostProcess {
                name: name.clone(),
                pid,
                cpu_seconds,
            });
        }
        Ok(HostProcesses(found))
    }

    /// Each process's CPU seconds since it was found, or `None` for one
    /// that has exited since (its time is lost with it).
    pub(crate) fn seconds(&self) -> Vec<(String, Option<f64>)> {
        (self.0.iter())
            .map(|p| {
                let now = cpu_seconds(p.pid).ok();
                (p.name.clone(), now.map(|now| now - p.cpu_seconds))
            })
            .collect()
    }
}

/// The highest pid whose command name is `name` (pids grow, so the newest,
/// but for a wrap-around).
fn newest_named(name: &str) -> anyhow::Result<Option<u32>> {
    let mut newest = None;
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim_end() == name && newest.is_none_or(|n| pid > n) {
            newest = Some(pid);
        }
    }
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_found_by_name_and_an_unknown_name_is_an_error() {
        let name = std::fs::read_to_string("/proc/self/comm").unwrap();
        let found = HostProcesses::named(&[name.trim_end().to_owned()]).unwrap();
        let seconds = found.seconds();
        assert_eq!(seconds.len(), 1);
        assert_eq!(seconds[0].0, name.trim_end());
        assert!(seconds[0].1.is_some_and(|s| s >= 0.0));
        assert!(HostProcesses::named(&["no-such-process-here".into()]).is_err());
    }
}
