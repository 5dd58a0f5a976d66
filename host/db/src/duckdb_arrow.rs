//! Arrow across DuckDB's C API, for the functions Mallard registers: schemas
//! converted once, batches turned into data chunks that share their buffers,
//! DuckDB's error data read, and the guards every callback needs (a panic is an
//! error, never an abort; an error keeps its gRPC status through DuckDB).

use crate::raw::RawConnection;
use arrow::array::{Array, RecordBatch, StructArray, new_null_array};
use arrow::datatypes::{Field, Schema};
use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use duckdb::ffi;
use mallard_core::duckdb_errors::tagged;
use mallard_core::{Error, Result};
use std::ffi::{CStr, CString, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::Arc;

/// Frees a `Box<T>` DuckDB owned (bind, init and extra data).
///
/// # Safety
/// `data` must come from `Box::<T>::into_raw`, freed once.
pub unsafe extern "C" fn drop_box<T>(data: *mut c_void) {
    // SAFETY: `data` came from Box::<T>::into_raw and DuckDB frees it once.
    drop(unsafe { Box::from_raw(data.cast::<T>()) });
}

/// An error as DuckDB carries it: tagged with its kind, without NUL bytes.
pub fn message(e: &Error) -> CString {
    CString::new(tagged(e).replace('\0', " ")).expect("NUL bytes replaced")
}

/// Runs a callback's work; a panic becomes an Internal error.
pub fn caught<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(Error::internal("a DuckDB function callback panicked")))
}

/// A schema as DuckDB's Arrow conversion needs it.
pub struct Converted(pub ffi::duckdb_arrow_converted_schema);

// SAFETY: an immutable description of a schema, read by one scan at a time.
unsafe impl Send for Converted {}
// SAFETY: see above.
unsafe impl Sync for Converted {}

impl Drop for Converted {
    fn drop(&mut self) {
        // SAFETY: created by duckdb_schema_from_arrow, destroyed once.
        unsafe { ffi::duckdb_destroy_arrow_converted_schema(&mut self.0) };
    }
}

/// An error DuckDB returned as error data (null or empty means success).
pub fn check(error: ffi::duckdb_error_data, what: &str) -> Result<()> {
    if error.is_null() {
        return Ok(());
    }
    let mut error = error;
    // SAFETY: valid error data, destroyed here.
    let outcome = unsafe {
        if ffi::duckdb_error_data_has_error(error) {
            let text = CStr::from_ptr(ffi::duckdb_error_data_message(error))
                .to_string_lossy()
                .into_owned();
            Err(Error::invalid_argument(format!("{what}: {text}")))
        } else {
            Ok(())
        }
    };
    // SAFETY: see above.
    unsafe { ffi::duckdb_destroy_error_data(&mut error) };
    outcome
}

impl Converted {
    /// `schema` converted with `conn`'s Arrow settings.
    pub fn new(conn: &RawConnection, schema: &Schema) -> Result<Self> {
        let mut arrow = FFI_ArrowSchema::try_from(schema)?;
        let mut converted: ffi::duckdb_arrow_converted_schema = ptr::null_mut();
        // SAFETY: valid connection and schema; DuckDB reads the schema (we release it).
        let error = unsafe {
            ffi::duckdb_schema_from_arrow(
                conn.handle(),
                (&mut arrow as *mut FFI_ArrowSchema).cast(),
                &mut converted,
            )
        };
        check(error, "converting the output schema for DuckDB")?;
        Ok(Self(converted))
    }

    /// `batch` as a DuckDB data chunk (at most one vector of rows), sharing its buffers.
    pub fn chunk(&self, conn: &RawConnection, batch: &RecordBatch) -> Result<Chunk> {
        let data = StructArray::from(batch.clone()).into_data();
        let mut array = FFI_ArrowArray::new(&data);
        let mut chunk: ffi::duckdb_data_chunk = ptr::null_mut();
        // SAFETY: valid connection, array and converted schema; DuckDB takes the
        // array's ownership (it nulls its release callback).
        let error = unsafe {
            ffi::duckdb_data_chunk_from_arrow(
                conn.handle(),
                (&mut array as *mut FFI_ArrowArray).cast(),
                self.0,
                &mut chunk,
            )
        };
        check(error, "converting a batch for DuckDB")?;
        Ok(Chunk(chunk))
    }
}

/// A data chunk we own.
pub struct Chunk(pub ffi::duckdb_data_chunk);

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: created by duckdb_data_chunk_from_arrow, destroyed once.
        unsafe { ffi::duckdb_destroy_data_chunk(&mut self.0) };
    }
}

/// The text of a VARCHAR (or any) value; `None` for NULL.
///
/// # Safety
/// `value` must be a valid value; it is destroyed here.
pub unsafe fn value_text(mut value: ffi::duckdb_value) -> Option<String> {
    if value.is_null() {
        return None;
    }
    // SAFETY: valid value, destroyed below; the string is ours to free.
    unsafe {
        let text = if ffi::duckdb_is_null_value(value) {
            None
        } else {
            let raw = ffi::duckdb_get_varchar(value);
            let text = CStr::from_ptr(raw).to_string_lossy().into_owned();
            ffi::duckdb_free(raw.cast());
            Some(text)
        };
        ffi::duckdb_destroy_value(&mut value);
        text
    }
}

/// DuckDB's logical types for `schema`, read from a one-row chunk of nulls
/// converted exactly as the scan will convert every batch.
pub fn logical_types(
    conn: &RawConnection,
    converted: &Converted,
    schema: &Schema,
) -> Result<Vec<ffi::duckdb_logical_type>> {
    let nullable: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let columns = nullable
        .iter()
        .map(|f| new_null_array(f.data_type(), 1))
        .collect();
    let sample = RecordBatch::try_new(Arc::new(Schema::new(nullable)), columns)?;
    let chunk = converted.chunk(conn, &sample)?;
    // SAFETY: a valid chunk of schema.len() columns; each type returned is ours.
    Ok((0..schema.fields().len())
        .map(|i| unsafe {
            ffi::duckdb_vector_get_column_type(ffi::duckdb_data_chunk_get_vector(chunk.0, i as u64))
        })
        .collect())
}
