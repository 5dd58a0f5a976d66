//! The hard limits every exchanger instance runs under.

use std::time::Duration;

/// Default linear memory per instance: room for a few 128K-row batches of a wide
/// table (in, out and the decoder's copies) with headroom, small enough that dozens
/// of concurrent streams fit in a modest server.
pub const DEFAULT_MAX_MEMORY_BYTES: usize = 512 << 20;
/// Default CPU time for one guest call (one batch). A healthy exchanger needs
/// milliseconds per 128K rows; two seconds catches loops without hurting real work.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Default wasm stack: 1 MiB, enough for any sane recursion in a batch transform.
pub const DEFAULT_MAX_STACK_BYTES: usize = 1 << 20;
/// Largest wasm stack accepted: guest calls run on the server's blocking threads
/// (2 MiB stacks, tokio's default), and the host's own frames need the rest. A
/// larger setting would overflow the thread (a process crash, not a trap), so
/// the server refuses to start with one.
pub const MAX_STACK_BYTES: usize = 1536 << 10;
/// The stack of a thread Mallard starts itself to call into guests (a parallel
/// stage's instances): the same 2 MiB as the blocking threads, which
/// [`MAX_STACK_BYTES`] is judged against.
pub const GUEST_THREAD_STACK_BYTES: usize = 2 << 20;
/// Default largest component accepted by `upload_exchanger`.
pub const DEFAULT_MAX_COMPONENT_BYTES: usize = 32 << 20;
/// Default guest stdout + stderr kept per stream; the rest is dropped.
pub const DEFAULT_MAX_LOG_BYTES: usize = 64 << 10;
/// How often the epoch ticks; deadlines are checked at this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits applied to every exchanger instance.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory an instance may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// Wall-clock time one guest call may run before it is interrupted.
    pub call_timeout: Duration,
    /// Wasm stack per call, in bytes.
    pub max_stack_bytes: usize,
    /// Largest component upload, in bytes.
    pub max_component_bytes: usize,
    /// Guest stdout/stderr bytes kept per stream.
    pub max_log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            max_stack_bytes: DEFAULT_MAX_STACK_BYTES,
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
        }
    }
}
