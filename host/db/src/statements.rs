//! What SQL does, as DuckDB itself says: extract the statements of a request,
//! prepare each one (bind, no execution), and read its statement type.
//!
//! Nothing here matches SQL text. A prepared statement also yields its result
//! schema without running, which is how schema lookups answer.

use super::arrow_result::{V2_OK, V2Error, V2Str};
use crate::params::Params;
use crate::raw::RawConnection;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ffi::FFI_ArrowSchema;
use duckdb::ffi;
use mallard_core::{Error, Result};
use std::ffi::{CStr, CString, c_char};
use std::ptr;
use std::sync::Arc;

/// What one statement may do to the server, by DuckDB's statement type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// Reads only: SELECT (with WITH, VALUES, DESCRIBE, SHOW, SUMMARIZE, PIVOT) and EXPLAIN.
    Read,
    /// Changes data or the catalog: DDL and DML.
    Write,
    /// Reads or writes files or other databases: COPY, EXPORT/IMPORT, ATTACH/DETACH,
    /// extension loading.
    Files,
    /// Changes the session or runs arbitrary procedures: SET, PRAGMA, CALL,
    /// PREPARE/EXECUTE, transactions, and anything DuckDB cannot name.
    Session,
}

impl StatementKind {
    /// The kind of a DuckDB statement type. Unknown types are [`StatementKind::Session`],
    /// the admin-only kind, so a new DuckDB statement type is never read-only by accident.
    pub fn of(statement_type: ffi::duckdb_statement_type) -> Self {
        match statement_type {
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_SELECT
            | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXPLAIN => Self::Read,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_INSERT
            | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_UPDATE
            | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DELETE
            | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CREATE
            | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_CREATE_FUNC
            | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ALTER
            | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DROP
            | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_MERGE_INTO
            | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_VACUUM
            | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ANALYZE => Self::Write,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_COPY
            | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXPORT
            | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_COPY_DATABASE
            | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ATTACH
            | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_DETACH
            | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_LOAD
            | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXTENSION
            | ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_UPDATE_EXTENSIONS => Self::Files,
            _ => Self::Session,
        }
    }
}

/// Decides, per statement, whether it may run (authorization's answer), and
/// whether the request runs in a read-only transaction.
pub trait StatementPolicy: Send + Sync {
    /// Ok if a statement of `kind` may run; PermissionDenied otherwise.
    fn allow(&self, kind: StatementKind) -> Result<()>;
    /// Whether every statement runs inside `BEGIN TRANSACTION READ ONLY`.
    fn read_only(&self) -> bool;
}

/// The policy for the server's own SQL (scans for push, catalog lookups):
/// everything runs, nothing is wrapped.
pub struct ServerSql;

impl StatementPolicy for ServerSql {
    fn allow(&self, _kind: StatementKind) -> Result<()> {
        Ok(())
    }
    fn read_only(&self) -> bool {
        false
    }
}

/// The table functions of this DuckDB build that open files or other outside
/// resources (DuckDB's own names; the plan shows them upper-case). A read-only statement that uses one
/// counts as a [`StatementKind::Files`] statement. With file access off, the
/// only files DuckDB still lets SQL open are the server's own (the database,
/// its WAL, its temp directory), so these are refused for everyone there.
pub const FILE_FUNCTIONS: &[&str] = &[
    "glob",
    "read_blob",
    "read_csv",
    "read_csv_auto",
    "read_duckdb",
    "read_json",
    "read_json_auto",
    "read_json_objects",
    "read_json_objects_auto",
    "read_ndjson",
    "read_ndjson_auto",
    "read_ndjson_objects",
    "read_parquet",
    "read_single_csv_file",
    "read_single_json_file",
    "read_single_parquet_file",
    "read_text",
    "sniff_csv",
    "parquet_bloom_probe",
    "parquet_file_metadata",
    "parquet_full_metadata",
    "parquet_kv_metadata",
    "parquet_metadata",
    "parquet_scan",
    "parquet_schema",
    "json_execute_serialized_sql",
    // Run SQL from a string at bind time, out of sight of the checks below.
    "query",
    "query_table",
    "enable_logging",
    "enable_profiling",
    "create_external_resource",
    "register_external_resource",
    "register_external_resource_type",
    "deregister_external_resource",
    "destroy_external_resource",
];

/// Table functions of this DuckDB build that open no file. Together with
/// [`FILE_FUNCTIONS`] they name every table function the build has (a
/// test checks), so a DuckDB upgrade that adds one forces a decision.
pub const FILELESS_FUNCTIONS: &[&str] = &[
    "arrow_scan",
    "arrow_scan_dumb",
    "checkpoint",
    "force_checkpoint",
    "generate_series",
    "range",
    "repeat",
    "repeat_row",
    "seq_scan",
    "summary",
    "test_all_types",
    "test_vector_types",
    "unnest",
    "which_secret",
    "json_each",
    "json_tree",
    "icu_calendar_names",
    "pg_timezone_names",
    "disable_logging",
    "disable_profiling",
    "truncate_duckdb_logs",
];

#[cfg(test)]
/// Whether a table function is `duckdb_*` or `pragma_*` metadata, which opens no
/// file (catalog, settings, memory, logs held in memory).
fn is_metadata_function(name: &str) -> bool {
    name.starts_with("duckdb_") || name.starts_with("pragma_")
}

/// The table functions a plan (DuckDB's `EXPLAIN (FORMAT json)`) uses, lower-case.
pub fn plan_functions(plan: &serde_json::Value) -> Vec<String> {
    fn walk(node: &serde_json::Value, out: &mut Vec<String>) {
        match node {
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(f)) =
                    map.get("extra_info").and_then(|e| e.get("Function"))
                {
                    out.push(f.to_ascii_lowercase());
                }
                if let Some(children) = map.get("children") {
                    walk(children, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(plan, &mut out);
    out
}

const TOKEN_IDENTIFIER: u32 = 2;
const TOKEN_OPERATOR: u32 = 5;
const TOKEN_COMMENT: u32 = 6;
const TOKEN_END_OF_INPUT: u32 = 8;

unsafe extern "C" {
    fn duckdb_v2_tokenize_sql(
        conn: *mut std::ffi::c_void,
        sql: *const V2Str,
        out_iterator: *mut *mut std::ffi::c_void,
        err: *mut *mut std::ffi::c_void,
    ) -> V2Error;
    fn duckdb_v2_token_iterator_next(
        iterator: *mut std::ffi::c_void,
        out_type: *mut u32,
        out_start: *mut u64,
        out_length: *mut u64,
        err: *mut *mut std::ffi::c_void,
    ) -> V2Error;
    fn duckdb_v2_token_iterator_destroy(iterator: *mut *mut std::ffi::c_void) -> V2Error;
}

const TOKEN_KEYWORD: u32 = 1;
const TOKEN_STRING: u32 = 3;

/// What a request names that could reach a file, found by DuckDB's own
/// tokenizer before anything is bound.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mentions {
    /// Functions called: an identifier (bare or quoted, possibly schema-qualified)
    /// followed by `(`, lower-case.
    pub calls: Vec<String>,
    /// Whether a string stands where a table does (`FROM 'x.csv'`, `JOIN 'y'`,
    /// `FROM t, 'z'`): DuckDB's replacement scans read such paths as files.
    pub scans_a_path: bool,
}

/// Keywords that may stand between `FROM` and a table without ending the FROM list.
const FROM_LIST_KEYWORDS: &[&str] = &[
    "as",
    "join",
    "left",
    "right",
    "inner",
    "outer",
    "full",
    "cross",
    "natural",
    "lateral",
    "positional",
    "asof",
    "anti",
    "semi",
];

/// What `sql` names (see [`Mentions`]), without binding anything.
pub fn mentions(conn: &RawConnection, sql: &str) -> Result<Mentions> {
    let text = V2Str {
        ptr: sql.as_ptr().cast(),
        len: sql.len() as u64,
    };
    let mut iterator: *mut std::ffi::c_void = ptr::null_mut();
    // SAFETY: v2 functions take the v1 connection as is (see `arrow_result`); the
    // SQL is borrowed for the call; the iterator is destroyed below.
    let code = unsafe {
        duckdb_v2_tokenize_sql(conn.handle().cast(), &text, &mut iterator, ptr::null_mut())
    };
    if code != V2_OK || iterator.is_null() {
        return Err(Error::internal(format!(
            "DuckDB could not tokenize the SQL (code {code})"
        )));
    }
    let mut found = Mentions::default();
    let mut previous: Option<(u32, &str)> = None;
    let mut in_from_list = false;
    // Whether each enclosing parenthesis level was in a FROM list: a string after
    // a comma is a path only in the FROM list of its own level (not a function's
    // argument), and a level's list goes on after a subquery closes.
    let mut outer_levels: Vec<bool> = Vec::new();
    let outcome = loop {
        let (mut kind, mut start, mut length) = (0u32, 0u64, 0u64);
        // SAFETY: live iterator; offsets are into `sql`.
        let code = unsafe {
            duckdb_v2_token_iterator_next(
                iterator,
                &mut kind,
                &mut start,
                &mut length,
                ptr::null_mut(),
            )
        };
        if code != V2_OK {
            break Err(Error::internal(format!(
                "DuckDB could not tokenize the SQL (code {code})"
            )));
        }
        if kind == TOKEN_END_OF_INPUT {
            break Ok(());
        }
        if kind == TOKEN_COMMENT {
            continue; // `read_blob /* */ (` is still a call
        }
        let lexeme = sql
            .get(start as usize..(start + length) as usize)
            .unwrap_or_default();
        match (kind, previous) {
            (TOKEN_OPERATOR, Some((TOKEN_IDENTIFIER, name))) if lexeme.starts_with('(') => {
                found
                    .calls
                    .push(name.trim_matches('"').replace("\"\"", "\"").to_lowercase());
            }
            (TOKEN_STRING, Some((TOKEN_KEYWORD, k)))
                if k.eq_ignore_ascii_case("from") || k.eq_ignore_ascii_case("join") =>
            {
                found.scans_a_path = true;
            }
            (TOKEN_STRING, Some((TOKEN_OPERATOR, ","))) if in_from_list => {
                found.scans_a_path = true;
            }
            _ => {}
        }
        if kind == TOKEN_OPERATOR {
            for c in lexeme.chars() {
                match c {
                    '(' => outer_levels.push(std::mem::replace(&mut in_from_list, false)),
                    ')' => in_from_list = outer_levels.pop().unwrap_or(false),
                    _ => {}
                }
            }
        }
        if kind == TOKEN_KEYWORD {
            let k = lexeme.to_ascii_lowercase();
            if k == "from" || k == "join" {
                in_from_list = true;
            } else if !FROM_LIST_KEYWORDS.contains(&k.as_str()) {
                in_from_list = false;
            }
        }
        previous = Some((kind, lexeme));
    };
    // SAFETY: we own the iterator.
    unsafe { duckdb_v2_token_iterator_destroy(&mut iterator) };
    outcome.map(|()| found)
}

/// Refuses, before DuckDB binds anything, SQL that calls a function of
/// [`FILE_FUNCTIONS`] or scans a path, unless `policy` allows file statements:
/// binding alone reads some files (CSV sniffing, attaching a `.duckdb`), and its
/// errors could carry what it read.
pub fn check_mentions(conn: &RawConnection, sql: &str, policy: &dyn StatementPolicy) -> Result<()> {
    if policy.allow(StatementKind::Files).is_ok() {
        return Ok(()); // file access is allowed anyway: nothing to look for
    }
    let found = mentions(conn, sql)?;
    if found.scans_a_path
        || found
            .calls
            .iter()
            .any(|f| FILE_FUNCTIONS.contains(&f.as_str()))
    {
        policy.allow(StatementKind::Files)?;
    }
    Ok(())
}

/// Whether DuckDB's plan for the read-only statement `text` reads files; its
/// parameters bound to `params` (DuckDB plans a parameterised statement only
/// with values).
fn reads_files(conn: &RawConnection, text: &str, params: &Params) -> Result<bool> {
    let sql = CString::new(format!("EXPLAIN (FORMAT json) {text}"))
        .map_err(|_| Error::invalid_argument("the SQL contains a NUL byte"))?;
    // SAFETY: zeroed result struct is the documented initial state.
    let mut result: ffi::duckdb_result = unsafe { std::mem::zeroed() };
    let state = if params.is_empty() {
        // SAFETY: valid connection and NUL-terminated SQL; result destroyed below.
        unsafe { ffi::duckdb_query(conn.handle(), sql.as_ptr(), &mut result) }
    } else {
        let mut prepared: ffi::duckdb_prepared_statement = ptr::null_mut();
        // SAFETY: valid connection and SQL; the statement is destroyed below.
        let mut state = unsafe { ffi::duckdb_prepare(conn.handle(), sql.as_ptr(), &mut prepared) };
        if state != ffi::DuckDBSuccess {
            // SAFETY: the failed statement holds its error until destroyed.
            let error = message(
                unsafe { ffi::duckdb_prepare_error(prepared) },
                "EXPLAIN failed",
            );
            unsafe { ffi::duckdb_destroy_prepare(&mut prepared) };
            return Err(mallard_core::duckdb_errors::classify_message(error));
        }
        for (i, value) in params.handles().into_iter().enumerate() {
            // SAFETY: live statement and value; DuckDB copies the value.
            if state == ffi::DuckDBSuccess {
                state = unsafe { ffi::duckdb_bind_value(prepared, i as u64 + 1, value) };
            }
        }
        if state == ffi::DuckDBSuccess {
            // SAFETY: live, fully bound statement; result destroyed below.
            state = unsafe { ffi::duckdb_execute_prepared(prepared, &mut result) };
        }
        // SAFETY: we own the statement; the result does not borrow from it.
        unsafe { ffi::duckdb_destroy_prepare(&mut prepared) };
        state
    };
    let plan = if state == ffi::DuckDBSuccess {
        // SAFETY: a successful EXPLAIN result has rows of (key, plan text); the
        // value is ours to free.
        let mut texts = Vec::new();
        let rows = unsafe { ffi::duckdb_row_count(&mut result) };
        for row in 0..rows {
            let value = unsafe { ffi::duckdb_value_varchar(&mut result, 1, row) };
            texts.push(message(value, ""));
            if !value.is_null() {
                unsafe { ffi::duckdb_free(value.cast()) };
            }
        }
        Ok(texts)
    } else {
        // SAFETY: the error string lives as long as the result.
        let error = unsafe { ffi::duckdb_result_error(&mut result) };
        Err(mallard_core::duckdb_errors::classify_message(message(
            error,
            "EXPLAIN failed",
        )))
    };
    // SAFETY: filled by duckdb_query.
    unsafe { ffi::duckdb_destroy_result(&mut result) };
    for text in plan? {
        let plan: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::internal(format!("DuckDB's JSON plan: {e}")))?;
        if plan_functions(&plan)
            .iter()
            .any(|f| FILE_FUNCTIONS.contains(&f.as_str()))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Judges one prepared statement (whose SQL is `text`) under `policy`: by its
/// kind, and a read that opens files as a [`StatementKind::Files`] statement.
/// An EXPLAIN reads no file content out, so its plan is not inspected.
pub fn judge(
    conn: &RawConnection,
    prepared: &Prepared,
    text: &str,
    policy: &dyn StatementPolicy,
    params: &Params,
) -> Result<()> {
    let kind = prepared.kind();
    policy.allow(kind)?;
    if kind == StatementKind::Read
        && !prepared.is_explain()
        && policy.allow(StatementKind::Files).is_err()
        && reads_files(conn, text, params)?
    {
        policy.allow(StatementKind::Files)?;
    }
    Ok(())
}

/// Judges a statement DuckDB expands into several (so it cannot be prepared as
/// one): it creates catalog entries before it reads, so it is a
/// [`StatementKind::Session`] statement, and its plan is checked for files too.
pub fn judge_expanding(
    conn: &RawConnection,
    text: &str,
    policy: &dyn StatementPolicy,
) -> Result<()> {
    policy.allow(StatementKind::Session)?;
    if policy.allow(StatementKind::Files).is_err() && reads_files(conn, text, &Params::none())? {
        policy.allow(StatementKind::Files)?;
    }
    Ok(())
}

/// The result schema of the single statement `sql`, judged by `policy`, without
/// running it. InvalidArgument unless `sql` is exactly one statement.
pub fn result_schema(
    conn: &RawConnection,
    sql: &str,
    policy: &dyn StatementPolicy,
) -> Result<SchemaRef> {
    judged_single(conn, sql, policy)?.result_schema(conn)
}

/// [`result_schema`] with `params` bound: the schema executing it with them would
/// give (DuckDB types `SELECT ? + 1` only once the parameter's type is known).
pub fn bound_result_schema(
    conn: &RawConnection,
    sql: &str,
    policy: &dyn StatementPolicy,
    params: &Params,
) -> Result<SchemaRef> {
    drop(judged_single(conn, sql, policy)?);
    conn.bound_result_schema(sql, &params.handles())
}

/// The one statement of a schema lookup, prepared and judged by `policy`;
/// InvalidArgument unless `sql` is exactly one statement.
fn judged_single(
    conn: &RawConnection,
    sql: &str,
    policy: &dyn StatementPolicy,
) -> Result<Prepared> {
    check_mentions(conn, sql, policy)?;
    let statements = Extracted::parse(conn, sql)?;
    if statements.len() != 1 {
        return Err(Error::invalid_argument(format!(
            "a schema lookup takes exactly one statement, got {}",
            statements.len()
        )));
    }
    let prepared = statements.prepare(conn, 0)?;
    policy.allow(prepared.kind())?;
    Ok(prepared)
}

fn message(ptr: *const c_char, fallback: &str) -> String {
    if ptr.is_null() {
        fallback.to_owned()
    } else {
        // SAFETY: DuckDB hands out NUL-terminated messages that live as long as their owner.
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    }
}

/// The statements of one request, extracted by DuckDB's parser.
pub struct Extracted {
    handle: ffi::duckdb_extracted_statements,
    count: usize,
}

impl Extracted {
    /// Splits `sql` into statements; InvalidArgument on a parse error or no statement.
    pub fn parse(conn: &RawConnection, sql: &str) -> Result<Self> {
        let text = CString::new(sql)
            .map_err(|_| Error::invalid_argument("the SQL contains a NUL byte"))?;
        let mut handle: ffi::duckdb_extracted_statements = ptr::null_mut();
        // SAFETY: valid connection, NUL-terminated SQL, out-pointer destroyed on drop.
        let count =
            unsafe { ffi::duckdb_extract_statements(conn.handle(), text.as_ptr(), &mut handle) };
        let extracted = Self {
            handle,
            count: count as usize,
        };
        if count == 0 {
            // SAFETY: the handle is live; its error string lives as long as it does.
            let error = unsafe { ffi::duckdb_extract_statements_error(handle) };
            let text = message(error, "the query has no statement");
            return Err(mallard_core::duckdb_errors::classify_message(text));
        }
        Ok(extracted)
    }

    /// How many statements the request holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the request holds no statement (never true after [`Extracted::parse`]).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Prepares statement `index` (binds it against the catalog as it is now).
    pub fn prepare(&self, conn: &RawConnection, index: usize) -> Result<Prepared> {
        let mut handle: ffi::duckdb_prepared_statement = ptr::null_mut();
        // SAFETY: valid connection and extracted statements; index < count.
        let state = unsafe {
            ffi::duckdb_prepare_extracted_statement(
                conn.handle(),
                self.handle,
                index as u64,
                &mut handle,
            )
        };
        let prepared = Prepared(handle);
        if state != ffi::DuckDBSuccess {
            // SAFETY: the prepared statement holds its error until destroyed.
            let error = unsafe { ffi::duckdb_prepare_error(handle) };
            return Err(mallard_core::duckdb_errors::classify_message(message(
                error,
                "preparing the statement failed",
            )));
        }
        Ok(prepared)
    }
}

impl Drop for Extracted {
    fn drop(&mut self) {
        // SAFETY: we own the extracted statements (destroy is documented as required).
        unsafe { ffi::duckdb_destroy_extracted(&mut self.handle) };
    }
}

/// A prepared statement, destroyed on drop.
pub struct Prepared(ffi::duckdb_prepared_statement);

impl Prepared {
    /// What the statement does.
    pub fn kind(&self) -> StatementKind {
        // SAFETY: live prepared statement.
        StatementKind::of(unsafe { ffi::duckdb_prepared_statement_type(self.0) })
    }

    /// Whether the statement is an EXPLAIN.
    pub fn is_explain(&self) -> bool {
        // SAFETY: live prepared statement.
        let statement_type = unsafe { ffi::duckdb_prepared_statement_type(self.0) };
        statement_type == ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXPLAIN
    }

    /// The Arrow schema the statement's result would have, without running it.
    pub fn result_schema(&self, conn: &RawConnection) -> Result<SchemaRef> {
        // SAFETY: live statement.
        let columns = unsafe { ffi::duckdb_prepared_statement_column_count(self.0) } as usize;
        let mut names = Vec::with_capacity(columns);
        let mut types = Vec::with_capacity(columns);
        let mut owned_names = Vec::with_capacity(columns);
        for i in 0..columns {
            // SAFETY: i < column count; the name is ours to free (below), the type ours to destroy.
            let name = unsafe { ffi::duckdb_prepared_statement_column_name(self.0, i as u64) };
            let logical =
                unsafe { ffi::duckdb_prepared_statement_column_logical_type(self.0, i as u64) };
            owned_names.push(name);
            names.push(name);
            types.push(logical);
        }
        let mut options: ffi::duckdb_arrow_options = ptr::null_mut();
        // SAFETY: valid connection; options destroyed below.
        unsafe { ffi::duckdb_connection_get_arrow_options(conn.handle(), &mut options) };
        let mut schema = FFI_ArrowSchema::empty();
        let outcome = if names.iter().any(|n| n.is_null()) || types.iter().any(|t| t.is_null()) {
            Err(Error::invalid_argument(
                "the statement's result columns are not known before it runs",
            ))
        } else {
            // SAFETY: `columns` valid types and names; the out schema has the C layout of
            // DuckDB's ArrowSchema (both are the Arrow C data interface struct).
            let mut error = unsafe {
                ffi::duckdb_to_arrow_schema(
                    options,
                    types.as_mut_ptr(),
                    names.as_mut_ptr(),
                    columns as u64,
                    (&mut schema as *mut FFI_ArrowSchema).cast(),
                )
            };
            // SAFETY: error data from DuckDB (may be null on success), destroyed here.
            let failed = !error.is_null() && unsafe { ffi::duckdb_error_data_has_error(error) };
            let text = if failed {
                Some(message(
                    unsafe { ffi::duckdb_error_data_message(error) },
                    "converting the schema to Arrow failed",
                ))
            } else {
                None
            };
            if !error.is_null() {
                unsafe { ffi::duckdb_destroy_error_data(&mut error) };
            }
            match text {
                Some(text) => Err(Error::invalid_argument(text)),
                None => Schema::try_from(&schema)
                    .map(Arc::new)
                    .map_err(|e| Error::internal(format!("DuckDB's Arrow schema: {e}"))),
            }
        };
        // SAFETY: each was handed to us above and is released exactly once.
        unsafe {
            ffi::duckdb_destroy_arrow_options(&mut options);
            for mut t in types {
                if !t.is_null() {
                    ffi::duckdb_destroy_logical_type(&mut t);
                }
            }
            for n in owned_names {
                if !n.is_null() {
                    ffi::duckdb_free(n as *mut _);
                }
            }
        }
        outcome
    }
}

impl Prepared {
    /// The statement's parameters (`$1`, `$2`, ...) as an Arrow schema; a
    /// parameter whose type DuckDB leaves open (or has no Arrow twin here) is
    /// typed Null, so clients send what they have and DuckDB casts it.
    pub fn parameter_schema(&self) -> SchemaRef {
        // SAFETY: live prepared statement.
        let count = unsafe { ffi::duckdb_nparams(self.0) };
        let fields: Vec<Field> = (1..=count)
            .map(|i| {
                // SAFETY: 1 <= i <= nparams.
                let ty = unsafe { ffi::duckdb_param_type(self.0, i) };
                Field::new(format!("${i}"), parameter_arrow_type(ty), true)
            })
            .collect();
        Arc::new(Schema::new(fields))
    }
}

fn parameter_arrow_type(ty: ffi::duckdb_type) -> DataType {
    use arrow::datatypes::TimeUnit;
    match ty {
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN => DataType::Boolean,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TINYINT => DataType::Int8,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_SMALLINT => DataType::Int16,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTEGER => DataType::Int32,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT => DataType::Int64,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UTINYINT => DataType::UInt8,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_USMALLINT => DataType::UInt16,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UINTEGER => DataType::UInt32,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UBIGINT => DataType::UInt64,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_FLOAT => DataType::Float32,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE => DataType::Float64,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR => DataType::Utf8,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB => DataType::Binary,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_DATE => DataType::Date32,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        _ => DataType::Null,
    }
}

/// What one statement is, before it runs: what it does, the schema of its
/// result and of its parameters (what a Flight SQL statement reports).
pub struct Shape {
    /// What the statement does.
    pub kind: StatementKind,
    /// Its result's schema (empty when DuckDB cannot tell before running).
    pub result: SchemaRef,
    /// Its parameters (`$1`, ...).
    pub params: SchemaRef,
}

/// The [`Shape`] of the single statement `sql`, judged by `policy`, without
/// running it. InvalidArgument unless `sql` is exactly one statement.
pub fn statement_shape(
    conn: &RawConnection,
    sql: &str,
    policy: &dyn StatementPolicy,
) -> Result<Shape> {
    check_mentions(conn, sql, policy)?;
    let statements = Extracted::parse(conn, sql)?;
    if statements.len() != 1 {
        return Err(Error::invalid_argument(format!(
            "a Flight SQL statement holds exactly one SQL statement, got {}",
            statements.len()
        )));
    }
    let prepared = statements.prepare(conn, 0)?;
    let kind = prepared.kind();
    policy.allow(kind)?;
    let result = prepared
        .result_schema(conn)
        .unwrap_or_else(|_| Arc::new(Schema::empty()));
    Ok(Shape {
        kind,
        result,
        params: prepared.parameter_schema(),
    })
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // SAFETY: we own the statement (destroy is required even after a failed prepare).
        unsafe { ffi::duckdb_destroy_prepare(&mut self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_function_of_this_duckdb_is_classified() {
        let conn = duckdb::Connection::open_in_memory().unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT DISTINCT function_name FROM duckdb_functions() \
                 WHERE function_type = 'table' ORDER BY 1",
            )
            .unwrap();
        let names: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert!(names.iter().any(|n| n == "read_blob"));
        let unknown: Vec<_> = names
            .iter()
            .filter(|n| {
                !FILE_FUNCTIONS.contains(&n.as_str())
                    && !FILELESS_FUNCTIONS.contains(&n.as_str())
                    && !is_metadata_function(n)
            })
            .collect();
        assert!(
            unknown.is_empty(),
            "classify these table functions as file-reading or not: {unknown:?}"
        );
    }

    #[test]
    fn calls_and_scanned_paths_come_from_duckdbs_tokenizer() {
        let db = crate::raw::RawDatabase::open(None, &[]).unwrap();
        let conn = db.connect().unwrap();
        let found = |sql: &str| mentions(&conn, sql).unwrap();
        let calls = |sql: &str| found(sql).calls;
        assert_eq!(
            calls(
                "SELECT count(*), 'read_blob(' FROM system.main.READ_BLOB /* c */ ('x') -- glob(\n"
            ),
            vec!["count", "read_blob"]
        );
        assert_eq!(
            calls(r#"SELECT * FROM "read_text"('x')"#),
            vec!["read_text"]
        );
        assert_eq!(calls("SELECT read_csv FROM t"), Vec::<String>::new());
        assert_eq!(calls("SELECT * FROM query('SELECT 1')"), vec!["query"]);
        for path in [
            "SELECT * FROM 'x.csv'",
            "SELECT * FROM t JOIN 'x.duckdb' USING (a)",
            "SELECT * FROM t AS a, 'x.csv'",
            "SELECT * FROM t LEFT JOIN 'x' ON true",
            "SELECT * FROM exchange('a', 'SELECT 1'), 'x.csv'",
            "SELECT * FROM (SELECT 1) s, 'x.csv'",
            "SELECT * FROM t WHERE x IN (SELECT y FROM u, 'x.csv')",
        ] {
            assert!(found(path).scans_a_path, "{path}");
        }
        for no_path in [
            "SELECT 'a', 'b' FROM t WHERE x IN ('c', 'd')",
            "SELECT * FROM (VALUES ('a'), ('b')) v(x)",
            "SELECT * FROM t JOIN u ON u.x = 'a', 'b'",
            "SELECT * FROM exchange('add_processed', 'SELECT * FROM flights')",
            "SELECT * FROM exchange('[{\"exchanger\": \"a\"}]', 'SELECT 1', params := map{'k': 'v'})",
        ] {
            assert!(!found(no_path).scans_a_path, "{no_path}");
        }
    }

    #[test]
    fn plan_functions_are_found_at_any_depth() {
        let plan = serde_json::json!([{
            "name": "PROJECTION",
            "children": [{"name": "CROSS_PRODUCT", "children": [
                {"name": "RANGE", "children": [], "extra_info": {"Function": "RANGE"}},
                {"name": "READ_BLOB", "children": [], "extra_info": {"Function": "READ_BLOB"}}
            ]}],
            "extra_info": {"Projections": "Function"}
        }]);
        assert_eq!(plan_functions(&plan), vec!["range", "read_blob"]);
    }

    #[test]
    fn only_select_and_explain_read() {
        for t in 0..=40 {
            let kind = StatementKind::of(t);
            let read = t == ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_SELECT
                || t == ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXPLAIN;
            assert_eq!(kind == StatementKind::Read, read, "statement type {t}");
        }
    }

    #[test]
    fn file_statements_are_files_and_unknown_types_are_session() {
        for t in [
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_COPY,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_EXPORT,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_ATTACH,
            ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_LOAD,
        ] {
            assert_eq!(StatementKind::of(t), StatementKind::Files);
        }
        assert_eq!(StatementKind::of(999), StatementKind::Session);
        assert_eq!(
            StatementKind::of(ffi::duckdb_statement_type_DUCKDB_STATEMENT_TYPE_PRAGMA),
            StatementKind::Session
        );
    }
}
