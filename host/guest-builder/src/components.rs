//! Building this workspace's guest components from source, for the tests, the
//! benchmarks and the demo (never used by a running server).
//!
//! Builds go to their own target directory under `$CARGO_TARGET_DIR` (or
//! `target/`), so a build started from inside `cargo test` never waits on the lock of
//! the `cargo` that runs it.

use crate::BuildError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Plain `--release` (what the tests use; quick to link).
    Release,
    /// `--release` with fat LTO and one codegen unit: ~16% smaller, ~30% faster to
    /// instantiate, ~6% faster per batch; slower to link (the demo and benchmarks).
    Optimized,
}

/// The workspace root: looked up from the running package's directory when cargo
/// runs us, else this crate's parent at build time, else from the current
/// directory. The lookup matters with a target directory shared between
/// checkouts: cargo reuses an artifact built in another checkout, whose
/// build-time path may be gone.
pub fn workspace() -> PathBuf {
    let built_in = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("host/guest-builder/ is two levels below the workspace")
        .to_path_buf();
    let root_above = |dir: PathBuf| {
        dir.ancestors()
            .find(|d| is_workspace_root(d))
            .map(Path::to_path_buf)
    };
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .and_then(root_above)
        .or_else(|| is_workspace_root(&built_in).then(|| built_in.clone()))
        .or_else(|| std::env::current_dir().ok().and_then(root_above))
        .unwrap_or(built_in)
}

fn is_workspace_root(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|toml| toml.contains("[workspace]"))
}

/// Builds `crates` (package names, e.g. `add-processed`) for `wasm32-wasip2` and
/// returns the directory holding their `.wasm` files (`add_processed.wasm`, ...).
pub fn build(crates: &[&str], profile: Profile) -> Result<PathBuf, BuildError> {
    let workspace = workspace();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join(match profile {
            Profile::Release => "guests",
            Profile::Optimized => "guests-optimized",
        });
    // rustup does not add a toolchain file's targets to an installed toolchain.
    let _ = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .current_dir(&workspace)
        .output();
    let cargo_program = std::env::var("CARGO")
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "cargo".into());
    let mut cargo = Command::new(cargo_program);
    cargo
        .current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target);
    if profile == Profile::Optimized {
        cargo
            .env("CARGO_PROFILE_RELEASE_LTO", "true")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1");
    }
    for name in crates {
        cargo.args(["-p", name]);
    }
    let status = cargo
        .status()
        .map_err(|e| BuildError::ToolchainUnavailable(format!("running cargo: {e}")))?;
    if !status.success() {
        return Err(BuildError::Build(format!(
            "building {crates:?} for wasm32-wasip2 failed; install the target with \
             `rustup target add wasm32-wasip2` and retry"
        )));
    }
    Ok(target.join("wasm32-wasip2").join("release"))
}

/// Builds one crate and returns its component's path.
pub fn build_one(crate_name: &str, profile: Profile) -> Result<PathBuf, BuildError> {
    let path =
        build(&[crate_name], profile)?.join(format!("{}.wasm", crate_name.replace('-', "_")));
    if path.exists() {
        Ok(path)
    } else {
        Err(BuildError::Build(format!(
            "expected {} after the build",
            path.display()
        )))
    }
}
