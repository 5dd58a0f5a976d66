//! Per-stream store state: deny-all WASI context, memory cap, captured output,
//! and the deadline/cancellation checked at every epoch tick.

use crate::engine::SandboxEngine;
use bytes::Bytes;
use mallard_core::gauges::GaugeGuard;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Why the host stopped a guest call; recovered from the trap to pick a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The call ran past its deadline.
    Deadline,
    /// The client went away or the server is shutting down.
    Cancelled,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Deadline => f.write_str("call deadline exceeded"),
            Self::Cancelled => f.write_str("exchange cancelled"),
        }
    }
}

impl std::error::Error for Stop {}

/// Bytes charged per table element: wasmtime stores each as one pointer-sized
/// slot (funcref or externref), 8 bytes on the 64-bit hosts Mallard runs on.
pub const TABLE_ELEMENT_BYTES: usize = 8;
/// Core instances one store may create: a Rust wasip2 component needs a handful
/// (its module plus wit-component's shims); the rest is headroom.
pub const MAX_INSTANCES: usize = 32;
/// Tables one store may create (one per core module, usually).
pub const MAX_TABLES: usize = 32;
/// Linear memories one store may create: Rust components have one; multi-memory
/// modules get a few, all charged to the same budget.
pub const MAX_MEMORIES: usize = 4;
/// Live host resources (streams, pollables) one store may hold.
pub const MAX_RESOURCES: usize = 1_024;

/// Guest memory shared by every live instance of one user: each store's growth
/// is charged here as well as to its own cap, and given back when the store goes.
#[derive(Debug)]
pub struct MemoryPool {
    max_bytes: usize,
    used_bytes: AtomicUsize,
}

impl MemoryPool {
    /// A pool of `max_bytes`.
    pub fn new(max_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            max_bytes,
            used_bytes: AtomicUsize::new(0),
        })
    }

    /// Bytes held by live instances now.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes.load(Ordering::Relaxed)
    }

    /// The pool's size.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    fn take(&self, bytes: usize) -> bool {
        self.used_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|t| *t <= self.max_bytes)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.used_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Which budget refused a growth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryDenied {
    /// The instance's own limit (`--exchanger-memory-mib`).
    Instance,
    /// The user's pool across all their live instances.
    User,
}

/// One budget for a store's every linear memory and table together, and caps on
/// how many instances, memories and tables it may create. Remembers whether a
/// growth was refused, to name the limit in the error.
pub struct MemoryCap {
    max_bytes: usize,
    used_bytes: usize,
    pool: Option<Arc<MemoryPool>>,
    /// Set when the guest asked for more than a budget allows.
    pub denied: Option<MemoryDenied>,
}

impl MemoryCap {
    /// A budget of `max_bytes` for all memories and tables of one store, also
    /// charged to `pool` when given.
    pub fn new(max_bytes: usize, pool: Option<Arc<MemoryPool>>) -> Self {
        Self {
            max_bytes,
            used_bytes: 0,
            pool,
            denied: None,
        }
    }

    /// Bytes charged so far (memories and tables); memories never shrink, so
    /// this is also the peak.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    fn charge(&mut self, extra: usize) -> bool {
        let total = match self.used_bytes.checked_add(extra) {
            Some(total) if total <= self.max_bytes => total,
            _ => {
                self.denied = Some(MemoryDenied::Instance);
                return false;
            }
        };
        if let Some(pool) = &self.pool
            && !pool.take(extra)
        {
            self.denied = Some(MemoryDenied::User);
            return false;
        }
        self.used_bytes = total;
        true
    }
}

impl Drop for MemoryCap {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.give_back(self.used_bytes);
        }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.charge(desired.saturating_sub(current)))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let extra = desired.saturating_sub(current);
        Ok(self.charge(extra.saturating_mul(TABLE_ELEMENT_BYTES)))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// Guest stdout/stderr, kept up to a cap and silently truncated beyond it (a guest
/// that prints too much must not fail because of it).
#[derive(Clone)]
pub struct CappedOutput {
    buffer: Arc<Mutex<Vec<u8>>>,
    cap: usize,
}

impl CappedOutput {
    /// An empty buffer keeping at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            buffer: Arc::new(Mutex::new(Vec::new())),
            cap,
        }
    }

    /// What the guest wrote, lossily decoded.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().expect("log lock")).into_owned()
    }

    fn keep(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().expect("log lock");
        let room = self.cap.saturating_sub(buffer.len());
        buffer.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

impl IsTerminal for CappedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for CappedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.keep(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.keep(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

/// Everything a store holds for one exchange stream.
pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The memory cap and whether it was hit.
    pub memory: MemoryCap,
    /// Captured guest stdout and stderr.
    pub output: CappedOutput,
    /// When the current call must end.
    pub call_deadline: Instant,
    /// Set from outside to interrupt the guest (client gone, shutdown).
    pub cancelled: Arc<AtomicBool>,
    /// What a contract 0.2 guest emitted in the current call.
    pub emits: crate::emit::Emits,
    /// Whether a contract 0.2 guest reads its input on demand, and what it read.
    pub input: crate::input::InputOnDemand,
    _live: GaugeGuard,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A fresh store for one stream: no preopens, no environment, no network, output
/// captured, memory capped (and charged to the user's `pool`, if any), deadline
/// and cancellation checked every epoch tick.
pub fn new_store(
    engine: &SandboxEngine,
    cancelled: Arc<AtomicBool>,
    pool: Option<Arc<MemoryPool>>,
) -> Store<StoreState> {
    let limits = &engine.limits;
    let output = CappedOutput::new(limits.max_log_bytes);
    let wasi = WasiCtx::builder()
        .stdout(output.clone())
        .stderr(output.clone())
        .build();
    let state = StoreState {
        wasi,
        table: {
            let mut table = ResourceTable::new();
            table.set_max_capacity(MAX_RESOURCES);
            table
        },
        memory: MemoryCap::new(limits.max_memory_bytes, pool),
        output,
        call_deadline: Instant::now() + limits.call_timeout,
        cancelled,
        // A call may emit what its instance could hold, as a 0.1 return value could.
        emits: crate::emit::Emits::new(limits.max_memory_bytes),
        input: crate::input::InputOnDemand::new(),
        _live: engine.live_instances.enter(),
    };
    let mut store = Store::new(&engine.engine, state);
    store.limiter(|s| &mut s.memory);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| {
        let state = ctx.data();
        if state.cancelled.load(Ordering::Relaxed) {
            return Err(wasmtime::Error::new(Stop::Cancelled));
        }
        if Instant::now() >= state.call_deadline {
            return Err(wasmtime::Error::new(Stop::Deadline));
        }
        Ok(UpdateDeadline::Continue(1))
    });
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_memory_and_table_draws_on_one_budget() {
        let mut cap = MemoryCap::new(100 << 20, None);
        assert!(cap.memory_growing(0, 60 << 20, None).unwrap());
        // A second memory of the same size no longer fits: the budget is shared.
        assert!(!cap.memory_growing(0, 60 << 20, None).unwrap());
        assert_eq!(cap.denied, Some(MemoryDenied::Instance));
        assert!(cap.memory_growing(0, 30 << 20, None).unwrap());
        // 10 MiB remain: a table of 2M elements (16 MiB) does not fit, 1M (8 MiB) does.
        assert!(!cap.table_growing(0, 2 << 20, None).unwrap());
        assert!(cap.table_growing(0, 1 << 20, None).unwrap());
        assert_eq!(cap.used_bytes(), (98 << 20));
        assert!(!cap.memory_growing(0, usize::MAX, None).unwrap());
    }

    #[test]
    fn a_users_instances_share_one_pool_and_give_it_back() {
        let pool = MemoryPool::new(100 << 20);
        let mut first = MemoryCap::new(80 << 20, Some(pool.clone()));
        let mut second = MemoryCap::new(80 << 20, Some(pool.clone()));
        assert!(first.memory_growing(0, 60 << 20, None).unwrap());
        // Within its own cap, but the user's pool has 40 MiB left.
        assert!(!second.memory_growing(0, 50 << 20, None).unwrap());
        assert_eq!(second.denied, Some(MemoryDenied::User));
        assert!(second.memory_growing(0, 40 << 20, None).unwrap());
        assert_eq!(pool.used_bytes(), 100 << 20);
        drop(first);
        assert_eq!(pool.used_bytes(), 40 << 20);
        drop(second);
        assert_eq!(pool.used_bytes(), 0);
    }
}
