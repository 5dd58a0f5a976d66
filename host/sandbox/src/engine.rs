//! The one wasmtime engine of a server and the thread that ticks its epoch.

use crate::Limits;
use crate::limits::{EPOCH_TICK, MAX_STACK_BYTES};
use crate::store::StoreState;
use mallard_core::{Error, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, OptLevel, ProfilingStrategy};

/// Set to `1` to name guest functions in `perf` profiles.
pub const PERFMAP_ENV: &str = "MALLARD_WASM_PERFMAP";

/// Compiler, linker and epoch ticker, shared by every exchanger of a server.
pub struct SandboxEngine {
    /// The wasmtime engine.
    pub engine: Engine,
    /// WASI (deny-all) linked for [`StoreState`].
    pub linker: Linker<StoreState>,
    /// The limits instances run under.
    pub limits: Limits,
    /// Stores (guest instances) alive right now.
    pub live_instances: mallard_core::gauges::Gauge,
    stop: Arc<AtomicBool>,
}

impl SandboxEngine {
    /// Builds the engine and starts the epoch ticker.
    pub fn new(limits: Limits) -> Result<Self> {
        if limits.max_stack_bytes > MAX_STACK_BYTES {
            return Err(Error::invalid_argument(format!(
                "the exchanger stack limit of {} KiB exceeds the {} KiB the server's threads \
                 can give a guest",
                limits.max_stack_bytes >> 10,
                MAX_STACK_BYTES >> 10
            )));
        }
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(limits.max_stack_bytes)
            .cranelift_opt_level(OptLevel::Speed);
        if std::env::var_os(PERFMAP_ENV).is_some_and(|v| v == "1") {
            // Names guest functions in `perf` profiles (writes /tmp/perf-<pid>.map).
            config.profiler(ProfilingStrategy::PerfMap);
        }
        let engine =
            Engine::new(&config).map_err(|e| Error::internal(format!("wasmtime engine: {e}")))?;
        let linker = crate::wasi::deny_all_linker(&engine)?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.weak();
        let ticker_stop = stop.clone();
        std::thread::Builder::new()
            .name("mallard-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| Error::internal(format!("epoch thread: {e}")))?;
        Ok(Self {
            engine,
            linker,
            limits,
            live_instances: mallard_core::gauges::Gauge::default(),
            stop,
        })
    }
}

impl Drop for SandboxEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
