//! DuckDB scalar functions whose values come from Rust, vectorised per chunk:
//! `name(DESCRIPTOR VARCHAR, arg, …)` of a fixed result type.
//!
//! DuckDB's C API fixes a scalar function's return type when it is registered
//! (it refuses `ANY`), so one function is registered per result type and the
//! caller picks it by name. `bind` reads the constant descriptor and the
//! arguments' types and asks the [`ScalarSource`] for a [`BoundScalar`]; `init`
//! runs once per DuckDB thread and opens that thread's [`ScalarEvaluator`]; each
//! chunk (at most one vector of rows) goes to the thread's evaluator as an Arrow
//! batch of the arguments (`arg1`, `arg2`, …), converted by DuckDB's own Arrow
//! conversion, and the array that comes back, which must have the chunk's rows
//! and the function's type, is referenced into the output vector.
//!
//! Who is calling is found from the connection id, as for table functions.
//! Errors keep their gRPC status through DuckDB; a panic is an error.

use super::duckdb_arrow::{Converted, caught, check, drop_box, message, value_text};
use super::raw::RawConnection;
use super::scopes::{ConnectionScopes, Scope};
use arrow::array::{Array, ArrayRef, RecordBatch, StructArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema, from_ffi};
use duckdb::ffi;
use mallard_core::{Error, Result};
use std::ffi::CString;
use std::ptr;
use std::sync::{Arc, Mutex};

/// What the functions do; implemented outside `db`.
pub trait ScalarSource: Send + Sync + 'static {
    /// Binds one call for the connection's `scope`: `descriptor` is the first
    /// argument's constant text, `arguments` the others' schema (`arg1`, …),
    /// `result` the function's type. Must not start any work.
    fn bind(
        &self,
        scope: Option<Scope>,
        descriptor: String,
        arguments: SchemaRef,
        result: &DataType,
    ) -> Result<Box<dyn BoundScalar>>;
}

/// A bound call.
pub trait BoundScalar: Send + Sync {
    /// One DuckDB thread's evaluator (called once per thread per execution).
    fn open(&self) -> Result<Box<dyn ScalarEvaluator>>;
}

/// One thread's evaluator.
pub trait ScalarEvaluator: Send {
    /// The values for `arguments`' rows: exactly as many, of the function's type.
    fn evaluate(&mut self, arguments: RecordBatch) -> Result<ArrayRef>;
}

/// The functions' extra info.
struct Registered {
    source: Arc<dyn ScalarSource>,
    scopes: Arc<ConnectionScopes>,
    result: DataType,
    /// For DuckDB's Arrow conversions (not a connection that runs queries);
    /// one conversion at a time.
    connection: Mutex<RawConnection>,
}

/// The DuckDB type of an Arrow result type the functions can return.
fn duckdb_type(result: &DataType) -> Result<ffi::DUCKDB_TYPE> {
    Ok(match result {
        DataType::Utf8 => ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR,
        DataType::Int64 => ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT,
        DataType::Int32 => ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTEGER,
        DataType::Float64 => ffi::DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE,
        DataType::Boolean => ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN,
        other => {
            return Err(Error::internal(format!(
                "no scalar function returns {other}"
            )));
        }
    })
}

/// Registers `name(VARCHAR, ANY…) -> result` in the database of `conn`.
pub fn register(
    conn: &RawConnection,
    name: &str,
    result: DataType,
    source: Arc<dyn ScalarSource>,
    scopes: Arc<ConnectionScopes>,
    type_connection: RawConnection,
) -> Result<()> {
    let cname = CString::new(name).map_err(|_| Error::internal("function name"))?;
    let result_type = duckdb_type(&result)?;
    let extra = Box::into_raw(Box::new(Registered {
        source,
        scopes,
        result,
        connection: Mutex::new(type_connection),
    }));
    // SAFETY: a fresh scalar function configured and registered here, then
    // destroyed (DuckDB copies it); `extra` is DuckDB's from now on, freed with
    // `drop_box`.
    unsafe {
        let mut function = ffi::duckdb_create_scalar_function();
        ffi::duckdb_scalar_function_set_name(function, cname.as_ptr());
        let mut varchar = ffi::duckdb_create_logical_type(ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR);
        let mut any = ffi::duckdb_create_logical_type(ffi::DUCKDB_TYPE_DUCKDB_TYPE_ANY);
        let mut returns = ffi::duckdb_create_logical_type(result_type);
        ffi::duckdb_scalar_function_add_parameter(function, varchar);
        ffi::duckdb_scalar_function_set_varargs(function, any);
        ffi::duckdb_scalar_function_set_return_type(function, returns);
        ffi::duckdb_destroy_logical_type(&mut varchar);
        ffi::duckdb_destroy_logical_type(&mut any);
        ffi::duckdb_destroy_logical_type(&mut returns);
        // A guest decides about NULLs itself, and is never folded into a constant.
        ffi::duckdb_scalar_function_set_special_handling(function);
        ffi::duckdb_scalar_function_set_volatile(function);
        ffi::duckdb_scalar_function_set_extra_info(
            function,
            extra.cast(),
            Some(drop_box::<Registered>),
        );
        ffi::duckdb_scalar_function_set_bind(function, Some(bind));
        ffi::duckdb_scalar_function_set_init(function, Some(init));
        ffi::duckdb_scalar_function_set_function(function, Some(evaluate));
        let state = ffi::duckdb_register_scalar_function(conn.handle(), function);
        ffi::duckdb_destroy_scalar_function(&mut function);
        if state != ffi::DuckDBSuccess {
            return Err(Error::internal(format!(
                "registering the scalar function {name} failed"
            )));
        }
    }
    Ok(())
}

/// A bound call and what its chunks convert with.
struct BindData {
    bound: Box<dyn BoundScalar>,
    /// The input chunk's schema: the descriptor, then `arg1`, ….
    input: SchemaRef,
    result: DataType,
}

/// The descriptor's text and the input chunk's Arrow schema.
///
/// # Safety
/// `info` must be the bind info of a function registered by [`register`].
unsafe fn arguments(
    info: ffi::duckdb_bind_info,
    context: ffi::duckdb_client_context,
    connection: &RawConnection,
) -> Result<(String, SchemaRef)> {
    // SAFETY: valid bind info and context; every expression, value, type and
    // options object obtained is destroyed.
    unsafe {
        let count = ffi::duckdb_scalar_function_bind_get_argument_count(info);
        let mut first = ffi::duckdb_scalar_function_bind_get_argument(info, 0);
        let descriptor = if ffi::duckdb_expression_is_foldable(first) {
            let mut value: ffi::duckdb_value = ptr::null_mut();
            let error = ffi::duckdb_expression_fold(context, first, &mut value);
            let folded = check(error, "the descriptor").map(|()| value_text(value));
            ffi::duckdb_destroy_expression(&mut first);
            folded?
        } else {
            ffi::duckdb_destroy_expression(&mut first);
            None
        };
        let descriptor = descriptor.ok_or_else(|| {
            Error::invalid_argument(
                "the first argument (the exchanger) must be a constant, non-NULL text",
            )
        })?;
        let mut types = Vec::new();
        for i in 0..count {
            let mut expression = ffi::duckdb_scalar_function_bind_get_argument(info, i);
            types.push(ffi::duckdb_expression_return_type(expression));
            ffi::duckdb_destroy_expression(&mut expression);
        }
        let names: Vec<CString> = (0..count)
            .map(|i| match i {
                0 => CString::new("descriptor").expect("static"),
                i => CString::new(format!("arg{i}")).expect("no NUL"),
            })
            .collect();
        let name_ptrs: Vec<*const std::os::raw::c_char> =
            names.iter().map(|n| n.as_ptr()).collect();
        let mut options: ffi::duckdb_arrow_options = ptr::null_mut();
        ffi::duckdb_connection_get_arrow_options(connection.handle(), &mut options);
        let mut schema = FFI_ArrowSchema::empty();
        let error = ffi::duckdb_to_arrow_schema(
            options,
            types.as_mut_ptr(),
            name_ptrs.as_ptr().cast_mut(),
            count,
            (&mut schema as *mut FFI_ArrowSchema).cast(),
        );
        ffi::duckdb_destroy_arrow_options(&mut options);
        for mut t in types {
            ffi::duckdb_destroy_logical_type(&mut t);
        }
        check(error, "the arguments' types")?;
        let schema = Schema::try_from(&schema)?;
        Ok((descriptor, Arc::new(schema)))
    }
}

unsafe extern "C" fn bind(info: ffi::duckdb_bind_info) {
    let outcome = caught(|| {
        // SAFETY: DuckDB passes our extra info and a valid bind info; the
        // context wrapper is destroyed below.
        let registered =
            unsafe { &*ffi::duckdb_scalar_function_bind_get_extra_info(info).cast::<Registered>() };
        let mut context: ffi::duckdb_client_context = ptr::null_mut();
        unsafe { ffi::duckdb_scalar_function_get_client_context(info, &mut context) };
        let id = unsafe { ffi::duckdb_client_context_get_connection_id(context) };
        let read = {
            let connection = registered
                .connection
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            unsafe { arguments(info, context, &connection) }
        };
        unsafe { ffi::duckdb_destroy_client_context(&mut context) };
        let (descriptor, input) = read?;
        let arguments = Arc::new(Schema::new(input.fields()[1..].to_vec()));
        let scope = registered.scopes.get(id);
        let bound = registered
            .source
            .bind(scope, descriptor, arguments, &registered.result)?;
        let data = Box::into_raw(Box::new(BindData {
            bound,
            input,
            result: registered.result.clone(),
        }));
        // SAFETY: DuckDB owns the bind data from here and frees it with drop_box.
        unsafe {
            ffi::duckdb_scalar_function_set_bind_data(info, data.cast(), Some(drop_box::<BindData>))
        };
        Ok(())
    });
    if let Err(e) = outcome {
        // SAFETY: valid bind info; DuckDB copies the message.
        unsafe { ffi::duckdb_scalar_function_bind_set_error(info, message(&e).as_ptr()) };
    }
}

/// One DuckDB thread's state: its evaluator and what converts its output.
struct ThreadState {
    evaluator: Box<dyn ScalarEvaluator>,
    options: ffi::duckdb_arrow_options,
    output: Converted,
    output_schema: SchemaRef,
}

// SAFETY: DuckDB uses one thread's state from that thread only; the options
// object is immutable after creation.
unsafe impl Send for ThreadState {}

impl Drop for ThreadState {
    fn drop(&mut self) {
        // SAFETY: created in `init`, destroyed once.
        unsafe { ffi::duckdb_destroy_arrow_options(&mut self.options) };
    }
}

unsafe extern "C" fn init(info: ffi::duckdb_init_info) {
    let outcome = caught(|| {
        // SAFETY: the bind data we set in `bind`, and our extra info.
        let bind =
            unsafe { &*ffi::duckdb_scalar_function_init_get_bind_data(info).cast::<BindData>() };
        let registered =
            unsafe { &*ffi::duckdb_scalar_function_init_get_extra_info(info).cast::<Registered>() };
        let evaluator = bind.bound.open()?;
        let connection = registered
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut options: ffi::duckdb_arrow_options = ptr::null_mut();
        // SAFETY: a valid connection; the options are destroyed with the state.
        unsafe { ffi::duckdb_connection_get_arrow_options(connection.handle(), &mut options) };
        let output_schema = Arc::new(Schema::new(vec![Field::new(
            "result",
            bind.result.clone(),
            true,
        )]));
        let output = Converted::new(&connection, &output_schema)?;
        drop(connection);
        let state = Box::into_raw(Box::new(ThreadState {
            evaluator,
            options,
            output,
            output_schema,
        }));
        // SAFETY: DuckDB owns the state from here and frees it with drop_box.
        unsafe {
            ffi::duckdb_scalar_function_init_set_state(
                info,
                state.cast(),
                Some(drop_box::<ThreadState>),
            )
        };
        Ok(())
    });
    if let Err(e) = outcome {
        // SAFETY: valid init info; DuckDB copies the message.
        unsafe { ffi::duckdb_scalar_function_init_set_error(info, message(&e).as_ptr()) };
    }
}

/// The chunk's arguments as an Arrow batch (the descriptor column dropped).
fn arguments_batch(
    bind: &BindData,
    state: &ThreadState,
    input: ffi::duckdb_data_chunk,
) -> Result<RecordBatch> {
    let mut array = FFI_ArrowArray::empty();
    // SAFETY: a valid chunk and options; the array is ours (released by arrow).
    let error = unsafe {
        ffi::duckdb_data_chunk_to_arrow(
            state.options,
            input,
            (&mut array as *mut FFI_ArrowArray).cast(),
        )
    };
    check(error, "converting the function's arguments")?;
    let schema = FFI_ArrowSchema::try_from(&DataType::Struct(bind.input.fields().clone()))?;
    // SAFETY: the array DuckDB wrote follows the schema it was bound with.
    let data = unsafe { from_ffi(array, &schema) }?;
    let batch = RecordBatch::from(StructArray::from(data));
    let columns: Vec<usize> = (1..batch.num_columns()).collect();
    Ok(batch.project(&columns)?)
}

fn evaluate_chunk(
    registered: &Registered,
    bind: &BindData,
    state: &mut ThreadState,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) -> Result<()> {
    let arguments = arguments_batch(bind, state, input)?;
    let rows = arguments.num_rows();
    let values = state.evaluator.evaluate(arguments)?;
    if values.len() != rows {
        return Err(Error::invalid_argument(format!(
            "the exchanger returned {} values for {rows} rows",
            values.len()
        )));
    }
    if values.data_type() != &bind.result {
        return Err(Error::invalid_argument(format!(
            "the exchanger returned {} values where the function returns {}",
            values.data_type(),
            bind.result
        )));
    }
    let batch = RecordBatch::try_new(state.output_schema.clone(), vec![values])?;
    let chunk = {
        let connection = registered
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        state.output.chunk(&connection, &batch)?
    };
    // SAFETY: the chunk's one vector has the function's return type (the same
    // conversion); the output references it, which keeps its buffers alive.
    unsafe {
        ffi::duckdb_vector_reference_vector(output, ffi::duckdb_data_chunk_get_vector(chunk.0, 0));
    }
    Ok(())
}

unsafe extern "C" fn evaluate(
    info: ffi::duckdb_function_info,
    input: ffi::duckdb_data_chunk,
    output: ffi::duckdb_vector,
) {
    let outcome = caught(|| {
        // SAFETY: the bind data and thread state we set.
        let bind = unsafe { &*ffi::duckdb_scalar_function_get_bind_data(info).cast::<BindData>() };
        let state =
            unsafe { &mut *ffi::duckdb_scalar_function_get_state(info).cast::<ThreadState>() };
        let registered =
            unsafe { &*ffi::duckdb_scalar_function_get_extra_info(info).cast::<Registered>() };
        evaluate_chunk(registered, bind, state, input, output)
    });
    if let Err(e) = outcome {
        // SAFETY: valid function info; DuckDB copies the message.
        unsafe { ffi::duckdb_scalar_function_set_error(info, message(&e).as_ptr()) };
    }
}
