//! Per-stream store state: deny-all WASI context, memory cap, captured output,
//! and the deadline/cancellation checked at every epoch tick.

use crate::gauges::GaugeGuard;
use crate::sandbox::engine::SandboxEngine;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Caps linear memory and remembers whether a growth was refused.
pub struct MemoryCap {
    max_bytes: usize,
    /// Set when the guest asked for more than `max_bytes`.
    pub denied: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
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
/// captured, memory capped, deadline and cancellation checked every epoch tick.
pub fn new_store(engine: &SandboxEngine, cancelled: Arc<AtomicBool>) -> Store<StoreState> {
    let limits = &engine.limits;
    let output = CappedOutput::new(limits.max_log_bytes);
    let wasi = WasiCtx::builder()
        .stdout(output.clone())
        .stderr(output.clone())
        .build();
    let state = StoreState {
        wasi,
        table: ResourceTable::new(),
        memory: MemoryCap {
            max_bytes: limits.max_memory_bytes,
            denied: false,
        },
        output,
        call_deadline: Instant::now() + limits.call_timeout,
        cancelled,
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
