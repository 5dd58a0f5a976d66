//! Values bound to a statement's `?` / `$n` parameters, taken from one row of an
//! Arrow batch (how Flight SQL clients send a prepared statement's parameters).
//!
//! Values are DuckDB's own (`duckdb_value`, owned and destroyed here) and are
//! bound by DuckDB, never spliced into SQL text.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use duckdb::ffi;
use mallard_core::{Error, Result};
use std::os::raw::c_char;

/// Most parameters one statement may take (DuckDB's own limit is far higher;
/// this keeps a hostile parameter batch from costing more than a row).
pub const MAX_PARAMS: usize = 1_024;

/// One owned DuckDB value.
struct Value(ffi::duckdb_value);

impl Drop for Value {
    fn drop(&mut self) {
        // SAFETY: we own the value.
        unsafe { ffi::duckdb_destroy_value(&mut self.0) };
    }
}

/// The parameter values of one execution, in order (`$1` first).
#[derive(Default)]
pub struct Params(Vec<Value>);

// SAFETY: the values are owned, immutable DuckDB values, used by one thread at a time.
unsafe impl Send for Params {}

impl Params {
    /// No parameters.
    pub fn none() -> Self {
        Self::default()
    }

    /// How many values there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The raw handles, for DuckDB's execute calls (valid while `self` lives).
    pub fn handles(&self) -> Vec<ffi::duckdb_value> {
        self.0.iter().map(|v| v.0).collect()
    }

    /// The values of row `row` of `batch`, one per column.
    pub fn from_row(batch: &RecordBatch, row: usize) -> Result<Self> {
        if batch.num_columns() > MAX_PARAMS {
            return Err(Error::invalid_argument(format!(
                "{} parameters; at most {MAX_PARAMS} are accepted",
                batch.num_columns()
            )));
        }
        if row >= batch.num_rows() {
            return Err(Error::invalid_argument(format!(
                "parameter row {row} of a batch of {}",
                batch.num_rows()
            )));
        }
        let mut values = Vec::with_capacity(batch.num_columns());
        for (i, column) in batch.columns().iter().enumerate() {
            let value = value_at(column.as_ref(), row).map_err(|e| {
                e.context(format!(
                    "parameter {} ({:?})",
                    i + 1,
                    batch.schema().field(i).name()
                ))
            })?;
            if value.0.is_null() {
                return Err(Error::invalid_argument(format!(
                    "parameter {} could not be converted for DuckDB",
                    i + 1
                )));
            }
            values.push(value);
        }
        Ok(Self(values))
    }
}

fn text(bytes: &[u8]) -> Value {
    // SAFETY: DuckDB copies `length` bytes; returns null for invalid UTF-8 (checked by the caller).
    Value(unsafe {
        ffi::duckdb_create_varchar_length(bytes.as_ptr().cast::<c_char>(), bytes.len() as u64)
    })
}

fn value_at(array: &dyn Array, row: usize) -> Result<Value> {
    // SAFETY (all arms): each constructor copies a plain value into a new DuckDB value.
    unsafe {
        if array.is_null(row) {
            return Ok(Value(ffi::duckdb_create_null_value()));
        }
        Ok(Value(match array.data_type() {
            DataType::Boolean => ffi::duckdb_create_bool(array.as_boolean().value(row)),
            DataType::Int8 => ffi::duckdb_create_int8(array.as_primitive::<Int8Type>().value(row)),
            DataType::Int16 => {
                ffi::duckdb_create_int16(array.as_primitive::<Int16Type>().value(row))
            }
            DataType::Int32 => {
                ffi::duckdb_create_int32(array.as_primitive::<Int32Type>().value(row))
            }
            DataType::Int64 => {
                ffi::duckdb_create_int64(array.as_primitive::<Int64Type>().value(row))
            }
            DataType::UInt8 => {
                ffi::duckdb_create_uint8(array.as_primitive::<UInt8Type>().value(row))
            }
            DataType::UInt16 => {
                ffi::duckdb_create_uint16(array.as_primitive::<UInt16Type>().value(row))
            }
            DataType::UInt32 => {
                ffi::duckdb_create_uint32(array.as_primitive::<UInt32Type>().value(row))
            }
            DataType::UInt64 => {
                ffi::duckdb_create_uint64(array.as_primitive::<UInt64Type>().value(row))
            }
            DataType::Float32 => {
                ffi::duckdb_create_float(array.as_primitive::<Float32Type>().value(row))
            }
            DataType::Float64 => {
                ffi::duckdb_create_double(array.as_primitive::<Float64Type>().value(row))
            }
            DataType::Utf8 => return Ok(text(array.as_string::<i32>().value(row).as_bytes())),
            DataType::LargeUtf8 => {
                return Ok(text(array.as_string::<i64>().value(row).as_bytes()));
            }
            DataType::Utf8View => return Ok(text(array.as_string_view().value(row).as_bytes())),
            DataType::Binary => {
                let bytes = array.as_binary::<i32>().value(row);
                ffi::duckdb_create_blob(bytes.as_ptr(), bytes.len() as u64)
            }
            DataType::LargeBinary => {
                let bytes = array.as_binary::<i64>().value(row);
                ffi::duckdb_create_blob(bytes.as_ptr(), bytes.len() as u64)
            }
            DataType::Date32 => ffi::duckdb_create_date(ffi::duckdb_date {
                days: array.as_primitive::<Date32Type>().value(row),
            }),
            DataType::Timestamp(unit, tz) => {
                let micros = match unit {
                    TimeUnit::Second => array
                        .as_primitive::<TimestampSecondType>()
                        .value(row)
                        .checked_mul(1_000_000),
                    TimeUnit::Millisecond => array
                        .as_primitive::<TimestampMillisecondType>()
                        .value(row)
                        .checked_mul(1_000),
                    TimeUnit::Microsecond => {
                        Some(array.as_primitive::<TimestampMicrosecondType>().value(row))
                    }
                    TimeUnit::Nanosecond => {
                        Some(array.as_primitive::<TimestampNanosecondType>().value(row) / 1_000)
                    }
                }
                .ok_or_else(|| Error::invalid_argument("timestamp out of range"))?;
                let ts = ffi::duckdb_timestamp { micros };
                if tz.is_some() {
                    ffi::duckdb_create_timestamp_tz(ts)
                } else {
                    ffi::duckdb_create_timestamp(ts)
                }
            }
            DataType::Decimal128(precision, scale) if *precision <= 38 && *scale >= 0 => {
                let v = array.as_primitive::<Decimal128Type>().value(row);
                ffi::duckdb_create_decimal(ffi::duckdb_decimal {
                    width: *precision,
                    scale: *scale as u8,
                    value: ffi::duckdb_hugeint {
                        lower: v as u64,
                        upper: (v >> 64) as i64,
                    },
                })
            }
            DataType::Null => ffi::duckdb_create_null_value(),
            other => {
                return Err(Error::invalid_argument(format!(
                    "parameters of Arrow type {other} are not supported"
                )));
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("a", DataType::Int64, true),
                Field::new("b", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec![Some("x"), Some("y")])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn a_row_becomes_one_value_per_column() {
        assert_eq!(Params::from_row(&batch(), 0).unwrap().len(), 2);
        assert_eq!(Params::from_row(&batch(), 1).unwrap().len(), 2);
    }

    #[test]
    fn rows_beyond_the_batch_and_unknown_types_are_refused() {
        let e = Params::from_row(&batch(), 2).err().unwrap();
        assert_eq!(e.kind(), mallard_core::ErrorKind::InvalidArgument);
        let list =
            arrow::array::ListArray::from_iter_primitive::<Int32Type, _, _>([Some([Some(1)])]);
        let odd = RecordBatch::try_from_iter([("l", Arc::new(list) as _)]).unwrap();
        let e = Params::from_row(&odd, 0).err().unwrap();
        assert!(e.to_string().contains("not supported"), "{e}");
    }
}
