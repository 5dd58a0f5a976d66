//! Running blocking work (DuckDB calls, compiles) off the async runtime, for
//! every handler alike.

use mallard_core::{Error, Result};

/// Runs `f` on the blocking pool; a panic in it is Internal.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("worker thread failed: {e}")))?
}
