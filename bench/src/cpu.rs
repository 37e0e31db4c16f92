//! CPU time, of this process and of others on the same host (the Redis
//! server and the broker of a one-machine run), for the figures that say
//! what a measurement cost as well as how long it took.

use anyhow::Context;

use crate::proc_stat::{ThreadTimes, cpu_seconds, run_since, thread_run_times};
use crate::report::Figure;

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
    /// Its CPU time when found.
    start: Reading,
}

/// A process's CPU time: thread by thread to the nanosecond where the
/// kernel keeps schedstat, else the whole process's clock ticks.
enum Reading {
    Threads(ThreadTimes),
    Ticks(f64),
}

impl Reading {
    fn of(pid: u32) -> anyhow::Result<Reading> {
        Ok(match thread_run_times(pid)? {
            Some(threads) => Reading::Threads(threads),
            None => Reading::Ticks(cpu_seconds(pid)?),
        })
    }

    /// Seconds per thread name since `self` (one entry, the process's
    /// name-less total, from ticks); `None` once the process is gone.
    fn since(&self, pid: u32) -> Option<Vec<(String, f64)>> {
        match (self, Reading::of(pid).ok()?) {
            (Reading::Threads(before), Reading::Threads(now)) => Some(run_since(before, &now)),
            (Reading::Ticks(before), Reading::Ticks(now)) => {
                Some(vec![(String::new(), now - before)])
            }
            _ => None,
        }
    }
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
            let start = Reading::of(pid)
                .with_context(|| format!("reading the CPU time of {name} ({pid})"))?;
            found.push(HostProcess {
                name: name.clone(),
                pid,
                start,
            });
        }
        Ok(HostProcesses(found))
    }

    /// Each process's CPU seconds since it was found, or `None` for one
    /// that has exited since (its time is lost with it).
    pub(crate) fn seconds(&self) -> Vec<(String, Option<f64>)> {
        (self.0.iter())
            .map(|p| {
                let spent = p
                    .start
                    .since(p.pid)
                    .map(|threads| threads.iter().map(|(_, s)| s).sum());
                (p.name.clone(), spent)
            })
            .collect()
    }
}

/// The CPU a step costs: this process's (server and client), by kind of
/// thread, and that of the host processes named by `--cpu-of` (Redis, the
/// broker), which share the machine's cores with it.
pub(crate) struct StepCpu {
    own: ProcessCpu,
    own_threads: Reading,
    others: HostProcesses,
}

impl StepCpu {
    pub(crate) fn start(others: &[String]) -> anyhow::Result<StepCpu> {
        Ok(StepCpu {
            own: ProcessCpu::start(),
            own_threads: Reading::of(std::process::id())?,
            others: HostProcesses::named(others)?,
        })
    }

    /// What each spent since the start.
    pub(crate) fn read(&self) -> CpuSpent {
        let threads = self
            .own_threads
            .since(std::process::id())
            .unwrap_or_default();
        let kinds = THREAD_KINDS
            .iter()
            .map(|(kind, is)| {
                let spent = threads
                    .iter()
                    .filter(|(name, _)| is(name))
                    .fold(0.0, |sum, (_, s)| sum + s);
                (*kind, spent)
            })
            .collect();
        CpuSpent {
            own: self.own.seconds(),
            kinds,
            others: self.others.seconds(),
        }
    }
}

/// Whether a thread of this name is of a kind.
type IsOfKind = fn(&str) -> bool;

/// This process's threads by kind, told by their names (which the kernel
/// cuts at 15 characters). The async runtime's threads serve HTTP (the
/// API's and the bench client's) and run the jobs' own tasks.
const THREAD_KINDS: [(&str, IsOfKind); 5] = [
    (
        "the async runtime's threads (HTTP, the bench's client, jobs)",
        // `tokio-rt-worker`, or `tokio-runtime-worker` in older tokios.
        |n| n.starts_with("tokio-r"),
    ),
    ("the query threads, prompt lane", |n| {
        n.starts_with("query-prompt")
    }),
    ("the query threads, bulk lane", |n| {
        n.starts_with("query-bulk")
    }),
    ("the audit's SQLite threads", |n| {
        n.starts_with("sqlx-sqlite")
    }),
    // librdkafka's (`rdk:main`, `rdk:broker…`) and rdkafka's producer
    // polling thread.
    ("the Kafka client library's threads", |n| {
        n.starts_with("rdk:") || n == "producer pollin"
    }),
];

/// CPU seconds spent by this process, by kind of thread, and by each named
/// host process (`None` for one that exited meanwhile: its time is lost
/// with it).
#[derive(Clone, Default)]
pub(crate) struct CpuSpent {
    pub(crate) own: f64,
    /// Of `own`, each of `THREAD_KINDS`' (threads that ended meanwhile are
    /// in none).
    kinds: Vec<(&'static str, f64)>,
    others: Vec<(String, Option<f64>)>,
}

impl CpuSpent {
    /// One figure per process and kind of thread, named "`step`: what",
    /// and the sum of the processes when other processes were read.
    pub(crate) fn figures(&self, step: &str) -> Vec<Figure> {
        self.figures_in(step, 1.0, "s")
    }

    /// The same, each figure times `scale`, in `unit` (per job, say).
    pub(crate) fn figures_in(&self, step: &str, scale: f64, unit: &str) -> Vec<Figure> {
        let figure = |what: &str, ours: String| Figure {
            what: format!("{step}: {what}"),
            ours,
            baseline: "-".into(),
            ratio: "-".into(),
            target: "-".into(),
        };
        // Seconds to the millisecond; a scaled figure (microseconds a job)
        // to a tenth.
        let decimals = if scale == 1.0 { 3 } else { 1 };
        let amount = |s: f64| format!("{:.*} {unit}", decimals, s * scale);
        let mut figures = vec![figure("this process, server and client", amount(self.own))];
        for (kind, spent) in &self.kinds {
            figures.push(figure(&format!("of it, {kind}"), amount(*spent)));
        }
        let mut all = Some(self.own);
        for (name, spent) in &self.others {
            let ours = spent.map_or("gone: it exited during the run".to_owned(), amount);
            figures.push(figure(name, ours));
            all = all.zip(*spent).map(|(a, s)| a + s);
        }
        if !self.others.is_empty() {
            let ours = all.map_or("- (a process exited)".to_owned(), amount);
            figures.push(figure("all of them", ours));
        }
        figures
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

    #[test]
    fn a_threads_run_time_grows_with_its_work_finer_than_a_tick() {
        let pid = std::process::id();
        let before = thread_run_times(pid)
            .unwrap()
            .expect("this kernel keeps schedstat");
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let now = thread_run_times(pid).unwrap().unwrap();
        let spent: f64 = run_since(&before, &now).iter().map(|(_, s)| s).sum();
        assert!(spent > 0.0, "{spent}");
        // Nanoseconds, not clock ticks of 10 ms.
        let ticks = spent * 100.0;
        assert!((ticks - ticks.round()).abs() > 1e-6, "{spent}");
        // A thread that started since counts all its time.
        let worker = std::thread::spawn(move || {
            let spin = std::time::Instant::now();
            while spin.elapsed() < std::time::Duration::from_millis(20) {
                std::hint::black_box(0);
            }
            thread_run_times(pid).unwrap().unwrap()
        });
        let with_worker = worker.join().unwrap();
        let new_threads: u64 = (with_worker.iter())
            .filter(|(tid, _)| !now.contains_key(tid))
            .map(|(_, (_, run))| run)
            .sum();
        let since: f64 = run_since(&now, &with_worker).iter().map(|(_, s)| s).sum();
        assert!(since >= new_threads as f64 / 1e9, "{since} {new_threads}");
        assert!(new_threads > 0, "{new_threads}");
    }

    #[test]
    fn a_step_names_each_kind_of_thread_and_process_and_sums_the_processes() {
        let spent = CpuSpent {
            own: 0.5,
            kinds: vec![("the query threads", 0.25)],
            others: vec![
                ("redis-server".into(), Some(0.25)),
                ("tansu".into(), Some(0.125)),
            ],
        };
        let figures: Vec<(String, String)> = (spent.figures("step").into_iter())
            .map(|f| (f.what, f.ours))
            .collect();
        let expected = [
            ("step: this process, server and client", "0.500 s"),
            ("step: of it, the query threads", "0.250 s"),
            ("step: redis-server", "0.250 s"),
            ("step: tansu", "0.125 s"),
            ("step: all of them", "0.875 s"),
        ];
        assert_eq!(figures.len(), expected.len());
        for ((what, ours), (w, o)) in figures.iter().zip(expected) {
            assert_eq!((what.as_str(), ours.as_str()), (w, o));
        }
        let per_job = spent.figures_in("step", 1e6 / 1000.0, "µs a job");
        assert_eq!(per_job[0].ours, "500.0 µs a job");
        let gone = CpuSpent {
            own: 0.5,
            kinds: Vec::new(),
            others: vec![("tansu".into(), None)],
        };
        let last = gone.figures("step").pop().unwrap();
        assert_eq!(last.ours, "- (a process exited)");
        assert_eq!(CpuSpent::default().figures("step").len(), 1);
    }

    #[test]
    fn this_process_s_kinds_of_thread_are_told_by_name() {
        let kind = |name: &str| -> Vec<&str> {
            (THREAD_KINDS.iter())
                .filter(|(_, is)| is(name))
                .map(|(kind, _)| *kind)
                .collect()
        };
        assert_eq!(kind("rdk:broker1"), ["the Kafka client library's threads"]);
        assert_eq!(
            kind("producer pollin"),
            ["the Kafka client library's threads"]
        );
        assert_eq!(kind("query-bulk"), ["the query threads, bulk lane"]);
        assert_eq!(kind("sqlx-sqlite-wor"), ["the audit's SQLite threads"]);
        assert_eq!(kind("tokio-rt-worker").len(), 1);
        assert_eq!(kind("tokio-runtime-w").len(), 1);
        assert!(kind("pseudostream-be").is_empty());
    }
}
