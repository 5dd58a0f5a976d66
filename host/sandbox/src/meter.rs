//! Exchanger CPU accounting: the thread CPU time of each exchange's worker
//! (instantiation, guest calls, output validation, teardown), added to its
//! version's metrics, so an operator (or the load tool) can see what share of
//! the machine each exchanger takes.

use std::time::Duration;

/// Runs `f` on this thread and returns the CPU time it used.
pub fn measure_cpu<R>(f: impl FnOnce() -> R) -> (R, Duration) {
    let before = thread_cpu_time();
    let result = f();
    (result, thread_cpu_time().saturating_sub(before))
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
