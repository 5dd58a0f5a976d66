//! Builds the workspace's guest components for tests, benches and the demo —
//! never for the server, which only accepts components over `do_action`.
//!
//! - [`components`]: the Rust guests, with `cargo build --target wasm32-wasip2`.
//! - [`polyglot`]: the Python (componentize-py) and JavaScript (jco) guests, with
//!   their toolchains installed into caches on first use.

pub mod components;
pub mod polyglot;

/// Why a component could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A toolchain could not be installed (no registry, no python3/npm).
    #[error("toolchain unavailable: {0}")]
    ToolchainUnavailable(String),
    /// The toolchain ran and refused the sources.
    #[error("build failed: {0}")]
    Build(String),
}
