//! One clock for the bench and its server process: `CLOCK_MONOTONIC`, which
//! every process on the machine shares, so a chunk's readable time noted by
//! the server and its arrival noted by a client subtract.

use std::time::Instant;

/// `CLOCK_MONOTONIC` now, in nanoseconds.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Turns this process's `Instant`s into shared-clock nanoseconds.
pub struct SharedClock {
    instant: Instant,
    ns: u64,
}

impl SharedClock {
    pub fn new() -> SharedClock {
        SharedClock {
            instant: Instant::now(),
            ns: monotonic_ns(),
        }
    }

    pub fn ns(&self, at: Instant) -> u64 {
        if at >= self.instant {
            self.ns + (at - self.instant).as_nanos() as u64
        } else {
            self.ns - (self.instant - at).as_nanos() as u64
        }
    }
}
