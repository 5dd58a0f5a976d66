//! Building exchanger components from source when the demo needs them.

use anyhow::Result;
use std::path::PathBuf;

/// The workspace this demo was built from.
pub fn workspace() -> PathBuf {
    mallard_guest_builder::components::workspace()
}

/// Builds `crate_name` for wasm32-wasip2 with LTO (if needed); returns the `.wasm` path.
pub fn build(crate_name: &str) -> Result<PathBuf> {
    Ok(mallard_guest_builder::components::build_one(
        crate_name,
        mallard_guest_builder::components::Profile::Optimized,
    )?)
}
