//! The few DuckDB calls duckdb-rs does not expose: opening the database so we keep
//! its raw handle, and inserting an Arrow C stream through DuckDB's own (C++) Arrow
//! scan, the latter through a small C++ shim (`arrow_insert.cpp`).

use arrow::ffi_stream::FFI_ArrowArrayStream;
use duckdb::ffi;
use mallard_core::{Error, Result};
use std::ffi::{CStr, CString, c_char};
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A DuckDB database handle owned by Mallard; closed on drop (connections opened
/// from it keep the underlying instance alive until they close).
pub struct RawDatabase(ffi::duckdb_database);

// SAFETY: a duckdb_database is a thread-safe handle to a shared DatabaseInstance.
unsafe impl Send for RawDatabase {}
// SAFETY: see above; DuckDB synchronises access internally.
unsafe impl Sync for RawDatabase {}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid_argument(format!("{s:?} contains a NUL byte")))
}

impl RawDatabase {
    /// Opens `path` (or an in-memory database) with `options` set at startup.
    pub fn open(path: Option<&Path>, options: &[(&str, String)]) -> Result<Self> {
        let path = match path {
            Some(p) => Some(cstring(&p.display().to_string())?),
            None => None,
        };
        let mut config: ffi::duckdb_config = ptr::null_mut();
        // SAFETY: out-pointer to a fresh config, destroyed below.
        if unsafe { ffi::duckdb_create_config(&mut config) } != ffi::DuckDBSuccess {
            return Err(Error::internal("duckdb_create_config failed"));
        }
        let mut failure = None;
        for (name, value) in options {
            let (n, v) = (cstring(name)?, cstring(value)?);
            // SAFETY: valid config and NUL-terminated strings.
            if unsafe { ffi::duckdb_set_config(config, n.as_ptr(), v.as_ptr()) }
                != ffi::DuckDBSuccess
            {
                failure = Some(format!("invalid DuckDB option {name} = {value}"));
                break;
            }
        }
        let mut db: ffi::duckdb_database = ptr::null_mut();
        let mut err: *mut std::os::raw::c_char = ptr::null_mut();
        let state = if failure.is_none() {
            let path_ptr = path.as_ref().map_or(ptr::null(), |p| p.as_ptr());
            // SAFETY: valid out-pointers; path is NUL-terminated or null (in memory).
            unsafe { ffi::duckdb_open_ext(path_ptr, &mut db, config, &mut err) }
        } else {
            ffi::DuckDBError
        };
        // SAFETY: config was created above and is no longer needed.
        unsafe { ffi::duckdb_destroy_config(&mut config) };
        if let Some(message) = failure {
            return Err(Error::invalid_argument(message));
        }
        if state != ffi::DuckDBSuccess {
            let message = if err.is_null() {
                "unknown error".to_owned()
            } else {
                // SAFETY: DuckDB returned a NUL-terminated message we must free.
                let m = unsafe { CStr::from_ptr(err) }
                    .to_string_lossy()
                    .into_owned();
                unsafe { ffi::duckdb_free(err.cast()) };
                m
            };
            return Err(Error::internal(format!("cannot open DuckDB: {message}")));
        }
        Ok(Self(db))
    }

    /// The raw handle, for `duckdb::Connection::open_from_raw`.
    pub fn handle(&self) -> ffi::duckdb_database {
        self.0
    }

    /// A new raw connection.
    pub fn connect(&self) -> Result<RawConnection> {
        let mut con: ffi::duckdb_connection = ptr::null_mut();
        // SAFETY: valid database, out-pointer to a fresh connection.
        if unsafe { ffi::duckdb_connect(self.0, &mut con) } != ffi::DuckDBSuccess {
            return Err(Error::internal("duckdb_connect failed"));
        }
        Ok(RawConnection {
            handle: con,
            interrupt: Arc::new(Interrupt {
                handle: Mutex::new(con),
                fired: tokio::sync::watch::Sender::new(false),
                armed: AtomicBool::new(true),
            }),
        })
    }
}

impl Drop for RawDatabase {
    fn drop(&mut self) {
        // SAFETY: we own the handle; open connections keep the instance alive.
        unsafe { ffi::duckdb_close(&mut self.0) };
    }
}

/// A raw DuckDB connection, disconnected on drop.
pub struct RawConnection {
    handle: ffi::duckdb_connection,
    interrupt: Arc<Interrupt>,
}

// SAFETY: a connection may move between threads; it is used by one at a time.
unsafe impl Send for RawConnection {}

/// Interrupts whatever a connection is running, from any thread, for as long as
/// the connection lives (afterwards it does nothing), and tells whoever watches
/// (an `exchange(…)` the query is waiting on, which DuckDB's flag cannot reach).
pub struct Interrupt {
    handle: Mutex<ffi::duckdb_connection>,
    fired: tokio::sync::watch::Sender<bool>,
    /// Whether a query of this request runs: a connection kept across requests
    /// (a transaction's) is disarmed between them, so a late interrupt cannot
    /// reach the next request's query.
    armed: AtomicBool,
}

// SAFETY: the handle is only used under the mutex, and only for duckdb_interrupt,
// which DuckDB documents as callable from another thread.
unsafe impl Send for Interrupt {}
// SAFETY: see above.
unsafe impl Sync for Interrupt {}

impl Interrupt {
    /// An interrupt of no connection: only its watchers hear it (for an answer
    /// that no DuckDB query of its own produces, such as a bare select's).
    pub fn detached() -> Self {
        Self {
            handle: Mutex::new(ptr::null_mut()),
            fired: tokio::sync::watch::channel(false).0,
            armed: AtomicBool::new(true),
        }
    }

    /// Asks DuckDB to stop the connection's running query.
    pub fn interrupt(&self) {
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        if !self.armed.load(Ordering::SeqCst) {
            return;
        }
        self.fired.send_replace(true);
        if !handle.is_null() {
            // SAFETY: the connection is open while the handle is non-null.
            unsafe { ffi::duckdb_interrupt(*handle) };
        }
    }
}

impl Interrupt {
    /// Starts a request on a connection kept across requests: interrupts reach
    /// it again, and nothing of an earlier request's interrupt remains.
    pub fn arm(&self) {
        let _handle = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        self.fired.send_replace(false);
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Ends a request on a connection kept across requests: once this returns,
    /// no interrupt meant for it can reach the connection.
    pub fn disarm(&self) {
        let _handle = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        self.armed.store(false, Ordering::SeqCst);
    }

    /// Becomes true once the connection's query is interrupted.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<bool> {
        self.fired.subscribe()
    }
}

impl RawConnection {
    /// DuckDB's id of this connection (unique within the database), which
    /// callbacks such as a table function's bind can read from their context.
    pub fn id(&self) -> u64 {
        let mut context: ffi::duckdb_client_context = ptr::null_mut();
        // SAFETY: valid connection; the context is destroyed below.
        unsafe { ffi::duckdb_connection_get_client_context(self.handle, &mut context) };
        // SAFETY: a context just obtained from a live connection.
        let id = unsafe { ffi::duckdb_client_context_get_connection_id(context) };
        // SAFETY: we own the context wrapper.
        unsafe { ffi::duckdb_destroy_client_context(&mut context) };
        id
    }

    /// The raw handle, valid while `self` lives.
    pub fn handle(&self) -> ffi::duckdb_connection {
        self.handle
    }

    /// A handle that interrupts this connection's running query.
    pub fn interrupt_handle(&self) -> Arc<Interrupt> {
        self.interrupt.clone()
    }

    /// Runs SQL; returns the number of changed rows.
    pub fn execute(&self, sql: &str) -> Result<u64> {
        let sql = cstring(sql)?;
        // SAFETY: zeroed result struct is the documented initial state.
        let mut result: ffi::duckdb_result = unsafe { std::mem::zeroed() };
        // SAFETY: valid connection and NUL-terminated SQL; result destroyed below.
        let state = unsafe { ffi::duckdb_query(self.handle, sql.as_ptr(), &mut result) };
        let outcome = if state == ffi::DuckDBSuccess {
            // SAFETY: result holds a successful query result.
            Ok(unsafe { ffi::duckdb_rows_changed(&mut result) })
        } else {
            // SAFETY: the error string lives as long as the result.
            let message = unsafe { ffi::duckdb_result_error(&mut result) };
            let message = if message.is_null() {
                "unknown DuckDB error".to_owned()
            } else {
                unsafe { CStr::from_ptr(message) }
                    .to_string_lossy()
                    .into_owned()
            };
            // SAFETY: the result holds the failed query's error.
            let error_type = unsafe { ffi::duckdb_result_error_type(&mut result) };
            Err(mallard_core::duckdb_errors::classify_typed(
                error_type, message,
            ))
        };
        // SAFETY: result was filled by duckdb_query.
        unsafe { ffi::duckdb_destroy_result(&mut result) };
        outcome
    }

    /// Appends every batch of `stream` to `table` (in the default schema) through
    /// DuckDB's own parallel Arrow scan, inside whatever transaction the
    /// connection has open, and returns the number of rows inserted. Nothing
    /// enters the catalog (see `arrow_insert.cpp`). The caller keeps ownership of
    /// the stream; DuckDB reads it only during this call.
    pub fn insert_arrow_stream(
        &self,
        table: &str,
        stream: &mut FFI_ArrowArrayStream,
    ) -> Result<u64> {
        let table = cstring(table)?;
        let mut rows = 0u64;
        // SAFETY: valid connection, stream and NUL-terminated name, all alive for
        // the call; a returned message is ours to free.
        let message =
            unsafe { mallard_insert_arrow_stream(self.handle, stream, table.as_ptr(), &mut rows) };
        // SAFETY: the shim's own message, or null.
        unsafe { shim_outcome(message) }?;
        Ok(rows)
    }

    /// The result schema of `sql` (one statement) with `values` bound to its
    /// parameters, as executing it would give, without running it (see
    /// `bound_schema.cpp`). The caller judges the statement first.
    pub fn bound_result_schema(
        &self,
        sql: &str,
        values: &[ffi::duckdb_value],
    ) -> Result<arrow::datatypes::SchemaRef> {
        let sql = cstring(sql)?;
        let mut schema = arrow::ffi::FFI_ArrowSchema::empty();
        // SAFETY: valid connection, NUL-terminated SQL, `values` live DuckDB values
        // borrowed for the call, an empty schema DuckDB fills; a returned message
        // is ours to free.
        let message = unsafe {
            mallard_bound_result_schema(
                self.handle,
                sql.as_ptr(),
                values.as_ptr().cast_mut(),
                values.len() as u64,
                &mut schema,
            )
        };
        // SAFETY: the shim's own message, or null.
        unsafe { shim_outcome(message) }?;
        let schema = arrow::datatypes::Schema::try_from(&schema)
            .map_err(|e| Error::internal(format!("DuckDB's bound schema: {e}")))?;
        Ok(Arc::new(schema))
    }
}

/// Ok for a null message from a C++ shim, else the error it carries (classified
/// like any DuckDB error); the message is freed.
///
/// # Safety
///
/// `message` is null or a NUL-terminated string the shim allocated with malloc,
/// not used after this call.
unsafe fn shim_outcome(message: *mut c_char) -> Result<()> {
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: forwarded to the caller; freed right after it is read.
    let text = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    unsafe { mallard_free_message(message) };
    Err(mallard_core::duckdb_errors::classify_message(text))
}

unsafe extern "C" {
    /// `host/src/db/bound_schema.cpp`.
    fn mallard_bound_result_schema(
        connection: ffi::duckdb_connection,
        sql: *const c_char,
        values: *mut ffi::duckdb_value,
        count: u64,
        schema: *mut arrow::ffi::FFI_ArrowSchema,
    ) -> *mut c_char;
    /// `host/src/db/arrow_insert.cpp`.
    fn mallard_insert_arrow_stream(
        connection: ffi::duckdb_connection,
        stream: *mut FFI_ArrowArrayStream,
        table: *const c_char,
        rows: *mut u64,
    ) -> *mut c_char;
    fn mallard_free_message(message: *mut c_char);
}

impl Drop for RawConnection {
    fn drop(&mut self) {
        *self
            .interrupt
            .handle
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = std::ptr::null_mut();
        // SAFETY: we own the connection and no interrupt can reach it any more.
        unsafe { ffi::duckdb_disconnect(&mut self.handle) };
    }
}
