//! Query results as Arrow arrays built by DuckDB's own worker threads.
//!
//! duckdb-rs converts a streaming result one 2,048-row chunk at a time on the
//! calling thread. DuckDB's C API v2 instead has the engine's producers append
//! rows straight into Arrow arrays of up to `batch_rows` rows, in parallel, and
//! hands them out as an `ArrowArrayStream` that still streams (bounded buffering,
//! no materialised result). That path is the one Python's `fetch_record_batch`
//! takes, and it saves a conversion and a coalescing copy per row.
//!
//! The v2 functions take a `duckdb_v2_connection_handle`, whose implementation is
//! a subclass of the same `duckdb::Connection` a v1 `duckdb_connection` points to,
//! adding only members after the base. The functions used here read nothing but
//! the base's client context, so a v1 connection is passed as is.

use super::params::Params;
use super::raw::RawConnection;
use super::statements::{self, Extracted, StatementPolicy};
use arrow::ffi_stream::{FFI_ArrowArrayStream, RecordBatchStreamReader};
use mallard_core::duckdb_errors::{classify_message, classify_v2};
use mallard_core::{Error, Result};
use std::ffi::{CString, c_char, c_void};
use std::ptr;

type Handle = *mut c_void;
/// Status code of DuckDB's v2 C API (shared with [`super::statements`]).
pub(super) type V2Error = u32;
/// The v2 API's success code.
pub(super) const V2_OK: V2Error = 0;
const RESULT_TYPE_QUERY_RESULT: u32 = 0;

/// The v2 API's borrowed string view.
#[repr(C)]
pub(super) struct V2Str {
    pub(super) ptr: *const c_char,
    pub(super) len: u64,
}

unsafe extern "C" {
    fn duckdb_v2_parse_sql(
        conn: Handle,
        sql: *const c_char,
        out_iterator: *mut Handle,
        err: *mut Handle,
    ) -> V2Error;
    fn duckdb_v2_statement_iterator_next(
        iterator: Handle,
        out_statement: *mut Handle,
        err: *mut Handle,
    ) -> V2Error;
    fn duckdb_v2_statement_iterator_destroy(iterator: *mut Handle) -> V2Error;
    fn duckdb_v2_sql_statement_destroy(statement: *mut Handle) -> V2Error;
    fn duckdb_v2_statement_execute_arrow(
        conn: Handle,
        statement: Handle,
        parameter_names: *const c_void,
        parameter_values: *const Handle,
        parameter_count: u64,
        batch_size: u64,
        out_result: *mut Handle,
        err: *mut Handle,
    ) -> V2Error;
    fn duckdb_v2_arrow_result_destroy(result: *mut Handle) -> V2Error;
    fn duckdb_v2_arrow_result_drain(
        result: Handle,
        out_rows_changed: *mut u64,
        err: *mut Handle,
    ) -> V2Error;
    fn duckdb_v2_arrow_result_get_result_type(
        result: Handle,
        out_type: *mut u32,
        err: *mut Handle,
    ) -> V2Error;
    fn duckdb_v2_arrow_result_to_arrow_c_stream(
        result: *mut Handle,
        out_stream: *mut FFI_ArrowArrayStream,
        err: *mut Handle,
    ) -> V2Error;
    fn duckdb_v2_error_info_get_text(info: Handle, out_text: *mut V2Str) -> V2Error;
    fn duckdb_v2_error_info_destroy(info: *mut Handle) -> V2Error;
    fn duckdb_v2_sql_statement_get_type(
        statement: Handle,
        out_type: *mut u32,
        err: *mut Handle,
    ) -> V2Error;
    fn duckdb_v2_sql_statement_get_text(
        statement: Handle,
        out_text: *mut V2Str,
        err: *mut Handle,
    ) -> V2Error;
}

/// What the last statement of a request produced.
pub enum Outcome {
    /// Rows, streamed as DuckDB produces them.
    Rows(RecordBatchStreamReader),
    /// A statement without a result set (DDL, DML) ran to completion.
    Done,
}

/// Turns a v2 call's status and error info into a classified [`Error`]
/// (shared with [`super::tokens`]).
pub(super) fn check(code: V2Error, mut info: Handle, what: &str) -> Result<()> {
    if code == V2_OK {
        return Ok(());
    }
    let mut text = None;
    if !info.is_null() {
        let mut raw = V2Str {
            ptr: ptr::null(),
            len: 0,
        };
        // SAFETY: `info` is a live error info; the text is borrowed until it is destroyed.
        if unsafe { duckdb_v2_error_info_get_text(info, &mut raw) } == V2_OK && !raw.ptr.is_null() {
            // SAFETY: DuckDB reports `len` valid bytes at `ptr`.
            let bytes =
                unsafe { std::slice::from_raw_parts(raw.ptr.cast::<u8>(), raw.len as usize) };
            text = Some(String::from_utf8_lossy(bytes).into_owned());
        }
        // SAFETY: we own the info and no longer borrow its text.
        unsafe { duckdb_v2_error_info_destroy(&mut info) };
    }
    let message = text.unwrap_or_else(|| format!("DuckDB {what} failed (code {code})"));
    Err(classify_v2(code, message))
}

/// An owned statement from the parser, destroyed on drop.
struct Statement(Handle);

impl Drop for Statement {
    fn drop(&mut self) {
        // SAFETY: we own the statement.
        unsafe { duckdb_v2_sql_statement_destroy(&mut self.0) };
    }
}

/// An owned Arrow result, destroyed on drop unless handed to a stream.
struct ArrowResult(Handle);

impl Drop for ArrowResult {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: we own the result (null once moved into a stream).
            unsafe { duckdb_v2_arrow_result_destroy(&mut self.0) };
        }
    }
}

fn parse(conn: Handle, sql: &str) -> Result<Vec<Statement>> {
    let sql =
        CString::new(sql).map_err(|_| Error::invalid_argument("the SQL contains a NUL byte"))?;
    let mut iterator: Handle = ptr::null_mut();
    let mut err: Handle = ptr::null_mut();
    // SAFETY: valid connection and NUL-terminated SQL (copied by DuckDB).
    let code = unsafe { duckdb_v2_parse_sql(conn, sql.as_ptr(), &mut iterator, &mut err) };
    check(code, err, "parsing")?;
    let mut statements = Vec::new();
    let outcome = loop {
        let mut statement: Handle = ptr::null_mut();
        let mut err: Handle = ptr::null_mut();
        // SAFETY: live iterator; the statement we receive is ours.
        let code = unsafe { duckdb_v2_statement_iterator_next(iterator, &mut statement, &mut err) };
        if let Err(e) = check(code, err, "parsing") {
            break Err(e);
        }
        if statement.is_null() {
            break Ok(());
        }
        statements.push(Statement(statement));
    };
    // SAFETY: we own the iterator; statements it yielded are independent of it.
    unsafe { duckdb_v2_statement_iterator_destroy(&mut iterator) };
    outcome.map(|()| statements)
}

fn execute(
    conn: Handle,
    statement: &Statement,
    batch_rows: usize,
    params: &Params,
) -> Result<ArrowResult> {
    let mut result: Handle = ptr::null_mut();
    let mut err: Handle = ptr::null_mut();
    // v2 value handles are the same `duckdb::Value *` as v1's `duckdb_value`.
    let values: Vec<Handle> = params.handles().into_iter().map(|v| v.cast()).collect();
    let values_ptr = if values.is_empty() {
        ptr::null()
    } else {
        values.as_ptr()
    };
    // SAFETY: valid connection and statement; `values` live DuckDB values
    // (borrowed: DuckDB copies them), bound positionally ($1, $2, ...).
    let code = unsafe {
        duckdb_v2_statement_execute_arrow(
            conn,
            statement.0,
            ptr::null(),
            values_ptr,
            values.len() as u64,
            batch_rows as u64,
            &mut result,
            &mut err,
        )
    };
    check(code, err, "execution")?;
    Ok(ArrowResult(result))
}

fn drain(result: &ArrowResult) -> Result<u64> {
    let mut changed = 0u64;
    let mut err: Handle = ptr::null_mut();
    // SAFETY: live result.
    let code = unsafe { duckdb_v2_arrow_result_drain(result.0, &mut changed, &mut err) };
    check(code, err, "execution")?;
    Ok(changed)
}

fn returns_rows(result: &ArrowResult) -> bool {
    let mut kind = RESULT_TYPE_QUERY_RESULT;
    let mut err: Handle = ptr::null_mut();
    // SAFETY: live result.
    let code = unsafe { duckdb_v2_arrow_result_get_result_type(result.0, &mut kind, &mut err) };
    // A statement that expands into several (PIVOT) knows its shape only once it
    // runs: treat it as returning rows, which its stream's schema call settles.
    check(code, err, "metadata").is_err() || kind == RESULT_TYPE_QUERY_RESULT
}

/// DuckDB v2's parser type of a statement that expands into several.
const V2_STATEMENT_TYPE_MULTI: u32 = 27;

/// The parser's type of a statement (v2 numbering).
fn statement_type(statement: &Statement) -> Result<u32> {
    let mut kind = 0u32;
    let mut err: Handle = ptr::null_mut();
    // SAFETY: live statement.
    let code = unsafe { duckdb_v2_sql_statement_get_type(statement.0, &mut kind, &mut err) };
    check(code, err, "parsing")?;
    Ok(kind)
}

/// Text of a parsed statement (its slice of the request).
fn statement_text(statement: &Statement) -> Result<String> {
    let mut text = V2Str {
        ptr: ptr::null(),
        len: 0,
    };
    let mut err: Handle = ptr::null_mut();
    // SAFETY: live statement; the text is borrowed while it lives and copied here.
    let code = unsafe { duckdb_v2_sql_statement_get_text(statement.0, &mut text, &mut err) };
    check(code, err, "parsing")?;
    if text.ptr.is_null() {
        return Ok(String::new());
    }
    // SAFETY: DuckDB reports `len` valid bytes at `ptr`.
    let bytes = unsafe { std::slice::from_raw_parts(text.ptr.cast::<u8>(), text.len as usize) };
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// The statements of `sql`, parsed for execution, each paired with DuckDB's
/// judgement of it; the read-only transaction begun first when `policy` asks.
struct Request {
    judged: Extracted,
    statements: Vec<Statement>,
}

impl Request {
    fn parse(
        conn: &RawConnection,
        sql: &str,
        policy: &dyn StatementPolicy,
        params: &Params,
    ) -> Result<Self> {
        if policy.read_only() {
            conn.execute("BEGIN TRANSACTION READ ONLY")?;
        }
        statements::check_mentions(conn, sql, policy)?;
        // DuckDB's v1 API names each statement's bound type; the v2 one streams
        // Arrow. Both split the same text the same way.
        let judged = Extracted::parse(conn, sql)?;
        let statements = parse(conn.handle().cast::<c_void>(), sql)?;
        if !params.is_empty() && statements.len() != 1 {
            return Err(Error::invalid_argument(format!(
                "parameters bind to exactly one statement; the request holds {}",
                statements.len()
            )));
        }
        if judged.len() != statements.len() {
            return Err(Error::internal(format!(
                "DuckDB split the request into {} and {} statements",
                judged.len(),
                statements.len()
            )));
        }
        Ok(Self { judged, statements })
    }

    /// Judges statement `i` just before it runs, so it binds against what the
    /// statements before it created.
    fn judge(
        &self,
        conn: &RawConnection,
        i: usize,
        policy: &dyn StatementPolicy,
        params: &Params,
    ) -> Result<()> {
        let text = statement_text(&self.statements[i])?;
        match self.judged.prepare(conn, i) {
            Ok(prepared) => statements::judge(conn, &prepared, &text, policy, params),
            // A statement DuckDB expands into several (a dynamic PIVOT creates an
            // enum type first) cannot be prepared as one.
            Err(_) if statement_type(&self.statements[i])? == V2_STATEMENT_TYPE_MULTI => {
                statements::judge_expanding(conn, &text, policy)
            }
            Err(e) => Err(e),
        }
    }
}

/// Runs every statement of `sql` to completion under `policy`; returns the
/// changed-row count of the last. `params` bind to a request of one statement.
pub fn execute_all(
    conn: &RawConnection,
    sql: &str,
    policy: &dyn StatementPolicy,
    params: &Params,
) -> Result<u64> {
    let request = Request::parse(conn, sql, policy, params)?;
    let handle = conn.handle().cast::<c_void>();
    let mut changed = 0;
    for (i, statement) in request.statements.iter().enumerate() {
        request.judge(conn, i, policy, params)?;
        changed = drain(&execute(handle, statement, 2048, params)?)?;
    }
    Ok(changed)
}

/// Runs `sql` on `conn`: every statement but the last to completion, the last as
/// a stream of Arrow batches of at most `batch_rows` rows (or [`Outcome::Done`]).
/// Each statement is judged by `policy` just before it runs; `params` bind to
/// a request of one statement.
pub fn run(
    conn: &RawConnection,
    sql: &str,
    batch_rows: usize,
    policy: &dyn StatementPolicy,
    params: &Params,
) -> Result<Outcome> {
    let request = Request::parse(conn, sql, policy, params)?;
    let handle = conn.handle().cast::<c_void>();
    let Some((last, before)) = request.statements.split_last() else {
        return Err(Error::invalid_argument("the query has no statement"));
    };
    for (i, statement) in before.iter().enumerate() {
        request.judge(conn, i, policy, params)?;
        drain(&execute(handle, statement, batch_rows, params)?)?;
    }
    request.judge(conn, before.len(), policy, params)?;
    let mut result = execute(handle, last, batch_rows, params)?;
    if !returns_rows(&result) {
        drain(&result)?;
        return Ok(Outcome::Done);
    }
    let mut stream = FFI_ArrowArrayStream::empty();
    let mut err: Handle = ptr::null_mut();
    // SAFETY: live result; on success the stream owns it and nulls our handle.
    let code =
        unsafe { duckdb_v2_arrow_result_to_arrow_c_stream(&mut result.0, &mut stream, &mut err) };
    check(code, err, "streaming")?;
    let reader =
        RecordBatchStreamReader::try_new(stream).map_err(|e| classify_message(e.to_string()))?;
    Ok(Outcome::Rows(reader))
}
