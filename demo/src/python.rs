//! Python packages for the parts of the demo that drive Python clients (the
//! ADBC Flight SQL driver): installed once with pip into a cache directory
//! shared with the tests, then put on `PYTHONPATH`.

use anyhow::{Context, Result, ensure};
use std::path::PathBuf;
use std::process::Command;

/// The ADBC Flight SQL driver and what its DB-API needs.
pub const ADBC: &[&str] = &["adbc-driver-flightsql", "adbc-driver-manager", "pyarrow"];

/// A directory holding `packages` for `python3`, installed on first use.
pub fn packages(packages: &[&str]) -> Result<PathBuf> {
    Ok(mallard_guest_builder::polyglot::pip_packages(packages)?)
}

/// Runs `demo/scripts/<script>` with `args` and the ADBC packages; returns its
/// last stdout line parsed as JSON.
pub fn run_adbc_script(script: &str, args: &[&str]) -> Result<serde_json::Value> {
    let dir = packages(ADBC)?;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(script);
    let output = Command::new("python3")
        .arg(&path)
        .args(args)
        .env("PYTHONPATH", &dir)
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    ensure!(
        output.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout)?;
    let last = stdout.lines().last().context("no output")?;
    Ok(serde_json::from_str(last)?)
}

/// DuckDB's own in-process ceilings on the peer's data (`demo/scripts/duckdb_ceiling.py`
/// with the peer's pinned packages): `{"ingest_rows_per_s", "scan_rows_per_s", ...}`.
pub fn duckdb_ceiling(rows: u64) -> Result<serde_json::Value> {
    let peer = peer_dir();
    let requirements = std::fs::read_to_string(peer.join("requirements.txt"))
        .with_context(|| format!("the Python peer at {}", peer.display()))?;
    let pinned: Vec<&str> = requirements
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let dir = packages(&pinned)?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/duckdb_ceiling.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(rows.to_string())
        .env("PYTHONPATH", &dir)
        .output()
        .context("running duckdb_ceiling.py")?;
    ensure!(
        output.status.success(),
        "duckdb_ceiling.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout)?;
    Ok(serde_json::from_str(
        stdout.lines().last().context("no output")?,
    )?)
}

/// The Python peer: `$MALLARD_PEER_DIR`, else `../shared/peers/seed_python` beside
/// the workspace.
pub fn peer_dir() -> PathBuf {
    std::env::var_os("MALLARD_PEER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::guest::workspace().join("../shared/peers/seed_python"))
}
