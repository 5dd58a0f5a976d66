//! A DuckDB table function whose rows come from Rust as Arrow record batches.
//!
//! DuckDB calls `bind` (possibly several times per statement: Mallard prepares a
//! statement to judge it before running it), then `init` once per execution and
//! `local_init` once per scanning thread, then the scan on each thread until it
//! returns an empty chunk. Here `bind` asks the [`TableSource`] for the output
//! schema only; `init` starts the work; each thread takes whole batches from it
//! in turn and hands DuckDB slices of at most one vector (2,048 rows), converted
//! by DuckDB's own Arrow conversion (`duckdb_data_chunk_from_arrow`, zero-copy
//! for strings) on the thread's own connection and referenced into the output
//! chunk, so no row is copied by Rust. Only the columns the query reads are
//! converted (projection pushdown).
//!
//! The scan runs on up to [`MAX_SCAN_THREADS`] threads (and never more than
//! DuckDB's own `threads`), so DuckDB can run an aggregate or a join over the
//! function in parallel. Where the result must keep the source's order (a plain
//! `SELECT`, an insert, without `ORDER BY`), DuckDB itself runs the pipeline on
//! one thread: this function gives no batch indices.
//!
//! Who is calling is found from the connection id DuckDB passes to `bind`, in
//! [`ConnectionScopes`]: a request registers its caller for its connection.
//! Errors keep their gRPC status through DuckDB ([`mallard_core::duckdb_errors::tagged`]); a
//! panic in a callback is an error, never an abort.

use super::duckdb_arrow::{Converted, caught, drop_box, logical_types, message, value_text};
use super::raw::RawConnection;
use super::scopes::{ConnectionScopes, Scope};
use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use duckdb::ffi;
use mallard_core::{Error, ErrorKind, Result};
use std::ffi::CString;
use std::ptr;
use std::sync::{Arc, Mutex};

/// Most threads one call's scan runs on (each holds a connection of its own for
/// the conversions while the scan lasts).
pub const MAX_SCAN_THREADS: u64 = 16;

/// One call of the function: its positional arguments (VARCHAR) and the named
/// `params` MAP(VARCHAR, VARCHAR), if given.
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// Positional arguments.
    pub args: Vec<String>,
    /// The `params := map{…}` pairs.
    pub params: Vec<(String, String)>,
}

/// Whether two schemas have the same column names and types (nullability and
/// metadata aside: DuckDB's column types depend on neither).
pub fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

/// What the function does; implemented outside `db`.
pub trait TableSource: Send + Sync + 'static {
    /// Binds one call for the connection's `scope`: checks it and returns its
    /// output schema. Must not start any work (a bind may never run).
    fn bind(&self, scope: Option<Scope>, call: Call) -> Result<Box<dyn BoundSource>>;
}

/// A bound call.
pub trait BoundSource: Send {
    /// The output schema, fixed at bind.
    fn schema(&self) -> SchemaRef;
    /// A connection for DuckDB's Arrow conversions at bind (not the one running the query).
    fn connection(&self) -> &RawConnection;
    /// A new connection for one scanning thread's conversions (connections are
    /// not shared between threads).
    fn scan_connection(&self) -> Result<RawConnection>;
    /// Starts producing (once per execution).
    fn start(&self) -> Result<Box<dyn Batches>>;
}

/// The running call's output; `None` is the explicit end.
pub trait Batches: Send {
    /// The next batch, waiting for it.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>>;
}

/// The function's extra info: the source and the database's scopes.
struct Registered {
    source: Arc<dyn TableSource>,
    scopes: Arc<ConnectionScopes>,
}

/// Registers `source` as the table function `name(VARCHAR × positional,
/// params := MAP(VARCHAR, VARCHAR))` in the database of `conn` (for every
/// connection: DuckDB keeps table functions in its system catalog).
pub fn register(
    conn: &RawConnection,
    name: &str,
    positional: usize,
    source: Arc<dyn TableSource>,
    scopes: Arc<ConnectionScopes>,
) -> Result<()> {
    let cname = CString::new(name).map_err(|_| Error::internal("function name"))?;
    let params = CString::new("params").expect("static");
    let extra = Box::into_raw(Box::new(Registered { source, scopes }));
    // SAFETY: a fresh table function configured and registered here, then
    // destroyed (DuckDB copies it); `extra` is owned by DuckDB from now on and
    // freed with `drop_box`.
    unsafe {
        let mut function = ffi::duckdb_create_table_function();
        ffi::duckdb_table_function_set_name(function, cname.as_ptr());
        let mut varchar = ffi::duckdb_create_logical_type(ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR);
        for _ in 0..positional {
            ffi::duckdb_table_function_add_parameter(function, varchar);
        }
        let mut map = ffi::duckdb_create_map_type(varchar, varchar);
        ffi::duckdb_table_function_add_named_parameter(function, params.as_ptr(), map);
        ffi::duckdb_destroy_logical_type(&mut map);
        ffi::duckdb_destroy_logical_type(&mut varchar);
        ffi::duckdb_table_function_set_extra_info(
            function,
            extra.cast(),
            Some(drop_box::<Registered>),
        );
        ffi::duckdb_table_function_supports_projection_pushdown(function, true);
        ffi::duckdb_table_function_set_bind(function, Some(bind));
        ffi::duckdb_table_function_set_init(function, Some(init));
        ffi::duckdb_table_function_set_local_init(function, Some(local_init));
        ffi::duckdb_table_function_set_function(function, Some(scan));
        let state = ffi::duckdb_register_table_function(conn.handle(), function);
        ffi::duckdb_destroy_table_function(&mut function);
        if state != ffi::DuckDBSuccess {
            return Err(Error::internal(format!(
                "registering the table function {name} failed"
            )));
        }
    }
    Ok(())
}

/// The bound call and DuckDB's view of its schema.
struct BindData {
    schema: SchemaRef,
    /// Behind a lock: DuckDB calls `init` and the scans from different threads.
    bound: Mutex<Box<dyn BoundSource>>,
}

/// The call's arguments, as DuckDB bound them.
///
/// # Safety
/// `info` must be the bind info of a call of a function registered by [`register`].
unsafe fn arguments(info: ffi::duckdb_bind_info) -> Result<Call> {
    let mut call = Call::default();
    // SAFETY: valid bind info; every value obtained is destroyed.
    unsafe {
        for i in 0..ffi::duckdb_bind_get_parameter_count(info) {
            let text = value_text(ffi::duckdb_bind_get_parameter(info, i)).ok_or_else(|| {
                Error::invalid_argument(format!("argument {} of the function is NULL", i + 1))
            })?;
            call.args.push(text);
        }
        let name = CString::new("params").expect("static");
        let mut map = ffi::duckdb_bind_get_named_parameter(info, name.as_ptr());
        if !map.is_null() {
            if !ffi::duckdb_is_null_value(map) {
                for i in 0..ffi::duckdb_get_map_size(map) {
                    let key = value_text(ffi::duckdb_get_map_key(map, i));
                    let value = value_text(ffi::duckdb_get_map_value(map, i));
                    match (key, value) {
                        (Some(k), Some(v)) => call.params.push((k, v)),
                        _ => {
                            ffi::duckdb_destroy_value(&mut map);
                            return Err(Error::invalid_argument(
                                "params holds a NULL key or value",
                            ));
                        }
                    }
                }
            }
            ffi::duckdb_destroy_value(&mut map);
        }
    }
    Ok(call)
}

/// The id of the connection a bind runs for.
///
/// # Safety
/// `info` must be a valid bind info.
unsafe fn connection_id(info: ffi::duckdb_bind_info) -> u64 {
    let mut context: ffi::duckdb_client_context = ptr::null_mut();
    // SAFETY: valid bind info; the context wrapper is destroyed here.
    unsafe {
        ffi::duckdb_table_function_get_client_context(info, &mut context);
        let id = ffi::duckdb_client_context_get_connection_id(context);
        ffi::duckdb_destroy_client_context(&mut context);
        id
    }
}

unsafe extern "C" fn bind(info: ffi::duckdb_bind_info) {
    let outcome = caught(|| {
        // SAFETY: DuckDB passes our extra info and a valid bind info.
        let registered = unsafe { &*ffi::duckdb_bind_get_extra_info(info).cast::<Registered>() };
        let scope = registered.scopes.get(unsafe { connection_id(info) });
        let call = unsafe { arguments(info) }?;
        let bound = registered.source.bind(scope, call)?;
        let schema = bound.schema();
        if schema.fields().is_empty() {
            return Err(Error::invalid_argument("the output has no columns"));
        }
        let converted = Converted::new(bound.connection(), &schema)?;
        let types = logical_types(bound.connection(), &converted, &schema)?;
        for (field, mut logical) in schema.fields().iter().zip(types) {
            let name = CString::new(field.name().replace('\0', " ")).expect("NUL replaced");
            // SAFETY: valid bind info and type; DuckDB copies both.
            unsafe {
                ffi::duckdb_bind_add_result_column(info, name.as_ptr(), logical);
                ffi::duckdb_destroy_logical_type(&mut logical);
            }
        }
        let data = Box::into_raw(Box::new(BindData {
            schema,
            bound: Mutex::new(bound),
        }));
        // SAFETY: DuckDB owns the bind data from here and frees it with drop_box.
        unsafe { ffi::duckdb_bind_set_bind_data(info, data.cast(), Some(drop_box::<BindData>)) };
        Ok(())
    });
    if let Err(e) = outcome {
        // SAFETY: valid bind info; DuckDB copies the message.
        unsafe { ffi::duckdb_bind_set_error(info, message(&e).as_ptr()) };
    }
}

/// The columns a query reads, as DuckDB asked for them in `init` (projection
/// pushdown): only these are converted into DuckDB vectors.
struct Projection {
    /// For each output vector, the function's column it holds; `None` for an
    /// identifier DuckDB asks for that the function does not have (a row id,
    /// for `count(*)`), which is filled with NULLs.
    columns: Vec<Option<usize>>,
    /// The function's columns that are read, in output order.
    read: Vec<usize>,
    /// `read`'s schema converted for DuckDB on `connection` (`None` when nothing is read).
    converted: Option<Converted>,
}

impl Projection {
    /// The projection `init` asks for, converted on `connection`.
    ///
    /// # Safety
    /// `info` must be the init info of a call of a function registered by [`register`].
    unsafe fn of(
        info: ffi::duckdb_init_info,
        bind: &BindData,
        connection: &RawConnection,
    ) -> Result<Self> {
        let fields = bind.schema.fields().len();
        // SAFETY: valid init info; indices below its column count.
        let columns: Vec<Option<usize>> = unsafe {
            (0..ffi::duckdb_init_get_column_count(info))
                .map(|i| ffi::duckdb_init_get_column_index(info, i) as usize)
                .map(|column| (column < fields).then_some(column))
                .collect()
        };
        let read: Vec<usize> = columns.iter().flatten().copied().collect();
        let converted = if read.is_empty() {
            None
        } else {
            let schema = bind.schema.project(&read)?;
            Some(Converted::new(connection, &schema)?)
        };
        Ok(Self {
            columns,
            read,
            converted,
        })
    }
}

/// One execution's running source, shared by its scanning threads: one thread
/// at a time takes the next batch. Once it has ended or failed, every thread
/// asking gets that end or that error again, never a second call to the source.
struct SharedSource(Mutex<SourceState>);

enum SourceState {
    Running(Box<dyn Batches>),
    Ended,
    Failed(ErrorKind, String),
}

impl SharedSource {
    /// The next batch, or `None` at the end (for every caller from then on).
    fn next_batch(&self) -> Result<Option<RecordBatch>> {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let next = match &mut *state {
            SourceState::Running(batches) => batches.next_batch(),
            SourceState::Ended => return Ok(None),
            SourceState::Failed(kind, message) => return Err(Error::new(*kind, message.clone())),
        };
        match &next {
            Ok(Some(_)) => {}
            Ok(None) => *state = SourceState::Ended,
            Err(e) => *state = SourceState::Failed(e.kind(), e.message().to_owned()),
        }
        next
    }
}

/// One scanning thread's state: its connection, the batch it is handing out and
/// the columns the query reads (converted on its connection).
struct ThreadScan {
    projection: Projection,
    current: Option<RecordBatch>,
    offset: usize,
    /// Declared last: dropped after the converted schema made on it.
    connection: RawConnection,
}

unsafe extern "C" fn init(info: ffi::duckdb_init_info) {
    let outcome = caught(|| {
        // SAFETY: the bind data we set in `bind`.
        let bind = unsafe { &*ffi::duckdb_init_get_bind_data(info).cast::<BindData>() };
        let batches = bind
            .bound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .start()?;
        let state = Box::into_raw(Box::new(SharedSource(Mutex::new(SourceState::Running(
            batches,
        )))));
        // SAFETY: valid init info; DuckDB owns the init data from here and frees
        // it with drop_box.
        unsafe {
            ffi::duckdb_init_set_max_threads(info, MAX_SCAN_THREADS);
            ffi::duckdb_init_set_init_data(info, state.cast(), Some(drop_box::<SharedSource>))
        };
        Ok(())
    });
    if let Err(e) = outcome {
        // SAFETY: valid init info; DuckDB copies the message.
        unsafe { ffi::duckdb_init_set_error(info, message(&e).as_ptr()) };
    }
}

unsafe extern "C" fn local_init(info: ffi::duckdb_init_info) {
    let outcome = caught(|| {
        // SAFETY: the bind data we set in `bind`.
        let bind = unsafe { &*ffi::duckdb_init_get_bind_data(info).cast::<BindData>() };
        let connection = bind
            .bound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .scan_connection()?;
        // SAFETY: the (local) init info of a call of this function.
        let projection = unsafe { Projection::of(info, bind, &connection) }?;
        let state = Box::into_raw(Box::new(ThreadScan {
            projection,
            current: None,
            offset: 0,
            connection,
        }));
        // SAFETY: DuckDB owns the local init data from here and frees it with drop_box.
        unsafe { ffi::duckdb_init_set_init_data(info, state.cast(), Some(drop_box::<ThreadScan>)) };
        Ok(())
    });
    if let Err(e) = outcome {
        // SAFETY: valid init info; DuckDB copies the message.
        unsafe { ffi::duckdb_init_set_error(info, message(&e).as_ptr()) };
    }
}

/// Fills `output` with the next slice of the projected columns; an empty chunk
/// ends the scan.
fn fill(
    bind: &BindData,
    source: &SharedSource,
    state: &mut ThreadScan,
    output: ffi::duckdb_data_chunk,
) -> Result<()> {
    // SAFETY: a constant of the DuckDB build.
    let vector = unsafe { ffi::duckdb_vector_size() } as usize;
    let batch = loop {
        match &state.current {
            Some(batch) if state.offset < batch.num_rows() => break batch,
            _ => {}
        }
        match source.next_batch()? {
            Some(batch) => {
                if !same_columns(&batch.schema(), &bind.schema) {
                    return Err(Error::internal(
                        "a batch does not have the function's bound schema",
                    ));
                }
                state.current = Some(batch);
                state.offset = 0;
            }
            None => {
                state.current = None;
                // SAFETY: valid output chunk.
                unsafe { ffi::duckdb_data_chunk_set_size(output, 0) };
                return Ok(());
            }
        }
    };
    let rows = (batch.num_rows() - state.offset).min(vector);
    let projection = &state.projection;
    let chunk = match &projection.converted {
        Some(converted) => {
            let slice = batch.slice(state.offset, rows).project(&projection.read)?;
            Some(converted.chunk(&state.connection, &slice)?)
        }
        None => None,
    };
    let mut read = 0u64;
    // SAFETY: the output has one vector per projected column, with the types
    // bind declared for them; `chunk` has the read columns in that order with
    // the same types (converted from the same schema); the output references
    // the chunk's vectors, which keep the Arrow buffers alive after `chunk` is
    // destroyed. A column the function does not have gets NULLs only.
    unsafe {
        for (position, column) in projection.columns.iter().enumerate() {
            let vector = ffi::duckdb_data_chunk_get_vector(output, position as u64);
            match (column, &chunk) {
                (Some(_), Some(chunk)) => {
                    ffi::duckdb_vector_reference_vector(
                        vector,
                        ffi::duckdb_data_chunk_get_vector(chunk.0, read),
                    );
                    read += 1;
                }
                _ => {
                    ffi::duckdb_vector_ensure_validity_writable(vector);
                    let validity = ffi::duckdb_vector_get_validity(vector);
                    for row in 0..rows as u64 {
                        ffi::duckdb_validity_set_row_invalid(validity, row);
                    }
                }
            }
        }
        ffi::duckdb_data_chunk_set_size(output, rows as u64);
    }
    state.offset += rows;
    Ok(())
}

unsafe extern "C" fn scan(info: ffi::duckdb_function_info, output: ffi::duckdb_data_chunk) {
    let outcome = caught(|| {
        // SAFETY: the bind, init and this thread's local init data we set; the
        // local data is this thread's alone.
        let bind = unsafe { &*ffi::duckdb_function_get_bind_data(info).cast::<BindData>() };
        let source = unsafe { &*ffi::duckdb_function_get_init_data(info).cast::<SharedSource>() };
        let state =
            unsafe { &mut *ffi::duckdb_function_get_local_init_data(info).cast::<ThreadScan>() };
        fill(bind, source, state, output)
    });
    if let Err(e) = outcome {
        // SAFETY: valid function info; DuckDB copies the message.
        unsafe { ffi::duckdb_function_set_error(info, message(&e).as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Hands out `batches`, then its end (clean or an error) once; counts the
    /// calls it gets, and fails any call after its end.
    struct Scripted {
        batches: Vec<RecordBatch>,
        end: Option<Result<()>>,
        calls: Arc<AtomicUsize>,
    }

    impl Batches for Scripted {
        fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if !self.batches.is_empty() {
                return Ok(Some(self.batches.remove(0)));
            }
            match self.end.take() {
                Some(end) => end.map(|()| None),
                None => Err(Error::internal("called after its end")),
            }
        }
    }

    /// Two batches of two rows, then `end`.
    fn shared(end: Result<()>) -> (SharedSource, Arc<AtomicUsize>) {
        let calls = Arc::default();
        let batch = RecordBatch::try_from_iter([(
            "x",
            Arc::new(arrow::array::Int64Array::from(vec![1, 2])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let source = Scripted {
            batches: vec![batch.clone(), batch],
            end: Some(end),
            calls: Arc::clone(&calls),
        };
        (
            SharedSource(Mutex::new(SourceState::Running(Box::new(source)))),
            calls,
        )
    }

    /// Four threads read `source` to its end; each thread's rows and how it ended.
    fn read_from_four_threads(source: &SharedSource) -> Vec<(usize, Result<()>)> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        let mut rows = 0;
                        loop {
                            match source.next_batch() {
                                Ok(Some(batch)) => rows += batch.num_rows(),
                                Ok(None) => return (rows, Ok(())),
                                Err(e) => return (rows, Err(e)),
                            }
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn after_its_end_or_error_the_source_is_not_asked_again() {
        // A source that ends: every thread sees the end, the source hears of it once.
        let (ends, calls) = shared(Ok(()));
        let outcomes = read_from_four_threads(&ends);
        assert_eq!(outcomes.iter().map(|(rows, _)| rows).sum::<usize>(), 4);
        assert!(outcomes.iter().all(|(_, end)| end.is_ok()));
        assert!(ends.next_batch().unwrap().is_none());
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        // A source that fails: every later caller gets the same kind and message.
        let (failing, calls) = shared(Err(Error::deadline_exceeded("guest too slow")));
        let outcomes = read_from_four_threads(&failing);
        assert_eq!(outcomes.iter().map(|(rows, _)| rows).sum::<usize>(), 4);
        for (_, end) in outcomes {
            let e = end.expect_err("a failed source ended cleanly");
            assert_eq!(e.kind(), ErrorKind::DeadlineExceeded, "{e}");
            assert_eq!(e.message(), "guest too slow");
        }
        assert!(failing.next_batch().is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn columns_compare_by_name_and_type_only() {
        let a = Schema::new(vec![Field::new("x", DataType::Int64, false)]);
        let nullable = Schema::new(vec![Field::new("x", DataType::Int64, true)]);
        let renamed = Schema::new(vec![Field::new("y", DataType::Int64, false)]);
        let retyped = Schema::new(vec![Field::new("x", DataType::Int32, false)]);
        assert!(same_columns(&a, &nullable));
        assert!(!same_columns(&a, &renamed));
        assert!(!same_columns(&a, &retyped));
        assert!(!same_columns(&a, &Schema::empty()));
    }
}
