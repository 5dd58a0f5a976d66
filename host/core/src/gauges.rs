//! Live-resource gauges: how many queries, ingests and wasm instances a server
//! holds right now. Each resource holds a [`GaugeGuard`] for exactly as long as it
//! lives (a DuckDB connection's thread, a wasmtime store), so `healthcheck` can
//! show that nothing leaks once clients are gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The `healthcheck` `live` counts that fall back to zero once a server is idle
/// (`threads` is reported too, but never reaches zero).
pub const IDLE_AT_ZERO: [&str; 5] = [
    "queries",
    "ingests",
    "exchanges",
    "wasm_instances",
    "cancellable_queries",
];

/// A count of live resources of one kind.
#[derive(Debug, Default, Clone)]
pub struct Gauge(Arc<AtomicUsize>);

/// One live resource; the gauge goes down when it is dropped.
#[derive(Debug)]
pub struct GaugeGuard(Arc<AtomicUsize>);

impl Gauge {
    /// Counts one more live resource until the guard is dropped.
    pub fn enter(&self) -> GaugeGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        GaugeGuard(self.0.clone())
    }

    /// How many are live now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The process's thread count (Linux `/proc`), for leak checks from outside.
pub fn process_threads() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}
