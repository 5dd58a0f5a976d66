//! Exchanger CPU accounting: the thread CPU time of each exchange's worker
//! (instantiation, guest calls, output validation, teardown), summed per exchanger
//! and reported by `list_exchangers`, so an operator (or the load tool) can see what
//! share of the machine each exchanger takes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// CPU time used by one exchanger's calls, all instances together.
#[derive(Debug, Default)]
pub struct CpuMeter(AtomicU64);

impl CpuMeter {
    /// Runs `f` on this thread and adds the CPU time it used.
    pub fn measure<R>(&self, f: impl FnOnce() -> R) -> R {
        let before = thread_cpu_time();
        let result = f();
        let used = thread_cpu_time().saturating_sub(before);
        self.0.fetch_add(
            used.as_nanos().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
        result
    }

    /// Total CPU time so far.
    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

/// CPU time the calling thread has used (zero where the clock is unavailable).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; CLOCK_THREAD_CPUTIME_ID is always supported on Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
