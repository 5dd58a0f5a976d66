//! What one user's exchangers may take: how many are kept, how many versions of
//! each, their bytes on disk, their guest memory while they run and the compile
//! time of one upload. Each quota names the flag that raises it, so a refusal
//! (ResourceExhausted) tells the operator what to change.

use std::time::Duration;

/// Default exchangers (names) one user may keep.
pub const DEFAULT_MAX_EXCHANGERS_PER_USER: usize = 16;
/// Default versions kept of one exchanger: enough to pin a few releases back.
pub const DEFAULT_MAX_VERSIONS_PER_EXCHANGER: usize = 8;
/// Default bytes of components one user may keep (originals; the compiled
/// artifacts beside them take about twice as much again): a handful of
/// Python/JavaScript components (12–20 MB each) with a few versions.
pub const DEFAULT_STORED_BYTES_PER_USER: usize = 256 << 20;
/// Default bytes of components the whole server keeps, every namespace together.
pub const DEFAULT_STORED_BYTES_TOTAL: usize = 2 << 30;
/// Default guest memory all of one user's live instances may hold together: two
/// instances at the default per-instance limit.
pub const DEFAULT_GUEST_MEMORY_PER_USER: usize = 1 << 30;
/// Default compile time of one upload: a Rust exchanger compiles in well under
/// a second here, an 18 MB Python component in about five.
pub const DEFAULT_MAX_COMPILE_TIME: Duration = Duration::from_secs(60);

/// The per-user quotas of a server (the shared namespace is bounded by the
/// server-wide total only: only admins write to it).
#[derive(Debug, Clone)]
pub struct Quotas {
    /// Exchangers (names) one user may keep.
    pub max_exchangers_per_user: usize,
    /// Versions kept of one exchanger.
    pub max_versions_per_exchanger: usize,
    /// Component bytes one user may keep.
    pub stored_bytes_per_user: usize,
    /// Component bytes the server keeps, all namespaces.
    pub stored_bytes_total: usize,
    /// Guest memory one user's live instances may hold together.
    pub guest_memory_per_user: usize,
    /// Longest one upload may compile.
    pub max_compile_time: Duration,
    /// Longest one upload may wait for its turn at the compiler.
    pub max_compile_wait: Duration,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_exchangers_per_user: DEFAULT_MAX_EXCHANGERS_PER_USER,
            max_versions_per_exchanger: DEFAULT_MAX_VERSIONS_PER_EXCHANGER,
            stored_bytes_per_user: DEFAULT_STORED_BYTES_PER_USER,
            stored_bytes_total: DEFAULT_STORED_BYTES_TOTAL,
            guest_memory_per_user: DEFAULT_GUEST_MEMORY_PER_USER,
            max_compile_time: DEFAULT_MAX_COMPILE_TIME,
            max_compile_wait: super::compile_queue::DEFAULT_MAX_COMPILE_WAIT,
        }
    }
}

/// The flags that set each quota, for messages.
pub mod flags {
    /// [`super::Quotas::max_exchangers_per_user`].
    pub const EXCHANGERS: &str = "--max-exchangers-per-user";
    /// [`super::Quotas::max_versions_per_exchanger`].
    pub const VERSIONS: &str = "--max-versions-per-exchanger";
    /// [`super::Quotas::stored_bytes_per_user`].
    pub const STORED_PER_USER: &str = "--exchanger-storage-per-user-mib";
    /// [`super::Quotas::stored_bytes_total`].
    pub const STORED_TOTAL: &str = "--max-stored-mb";
    /// [`super::Quotas::guest_memory_per_user`].
    pub const GUEST_MEMORY: &str = "--guest-memory-per-user-mib";
    /// [`super::Quotas::max_compile_time`].
    pub const COMPILE_TIME: &str = "--max-compile-secs";
    /// Concurrent exchanges per user (kept in the server config).
    pub const EXCHANGES: &str = "--max-exchanges-per-user";
}
