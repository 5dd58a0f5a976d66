//! `running_totals`: a stateful exchanger. Appends `running_total`, the cumulative
//! sum of a numeric column across every batch of the stream so far, optionally per
//! group (`key` parameter, a UTF-8 column).
//!
//! Parameters: `value` (column to sum, default `passengers`), `key` (optional group
//! column). Nulls add nothing. Integer inputs give an Int64 total, floats a Float64.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type};
use arrow_array::{Float64Array, Int64Array};
use mallard_exchanger::prelude::*;
use std::collections::HashMap;

/// Running sums, either one for the whole stream or one per key.
pub struct RunningTotals {
    output: SchemaRef,
    value: usize,
    key: Option<usize>,
    float: bool,
    total: f64,
    total_int: i64,
    by_key: HashMap<String, (i64, f64)>,
}

fn value_at(column: &dyn Array, row: usize) -> Option<(i64, f64)> {
    if column.is_null(row) {
        return None;
    }
    let v = match column.data_type() {
        DataType::Int8 => column.as_primitive::<Int8Type>().value(row) as i64,
        DataType::Int16 => column.as_primitive::<Int16Type>().value(row) as i64,
        DataType::Int32 => column.as_primitive::<Int32Type>().value(row) as i64,
        DataType::Int64 => column.as_primitive::<Int64Type>().value(row),
        DataType::Float32 => {
            return Some((0, column.as_primitive::<Float32Type>().value(row) as f64));
        }
        DataType::Float64 => return Some((0, column.as_primitive::<Float64Type>().value(row))),
        _ => return None,
    };
    Some((v, v as f64))
}

impl Exchanger for RunningTotals {
    const INFO: Info = Info {
        name: "running_totals",
        version: "1.0.0",
        description: "appends `running_total`: cumulative sum of `value` (per `key` if given)",
    };

    fn open(input: SchemaRef, params: &Params) -> Result<Self, ExchangeError> {
        let value_name = params.get("value").unwrap_or("passengers");
        let (value, field) = input
            .column_with_name(value_name)
            .ok_or_else(|| ExchangeError::InvalidParams(format!("no column `{value_name}`")))?;
        let float = match field.data_type() {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => false,
            DataType::Float32 | DataType::Float64 => true,
            other => {
                return Err(ExchangeError::InvalidInput(format!(
                    "column `{value_name}` is {other}, expected an integer or float column"
                )));
            }
        };
        let key = match params.get("key") {
            None => None,
            Some(name) => {
                let (idx, f) = input
                    .column_with_name(name)
                    .ok_or_else(|| ExchangeError::InvalidParams(format!("no column `{name}`")))?;
                if !matches!(f.data_type(), DataType::Utf8) {
                    return Err(ExchangeError::InvalidInput(format!(
                        "key `{name}` must be utf8"
                    )));
                }
                Some(idx)
            }
        };
        let total_type = if float {
            DataType::Float64
        } else {
            DataType::Int64
        };
        let mut fields: Vec<_> = input.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new("running_total", total_type, false)));
        Ok(Self {
            output: Arc::new(Schema::new(fields)),
            value,
            key,
            float,
            total: 0.0,
            total_int: 0,
            by_key: HashMap::new(),
        })
    }

    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn push(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>, ExchangeError> {
        let values = batch.column(self.value).as_ref();
        let keys = self.key.map(|k| batch.column(k).as_string::<i32>());
        let mut ints = Vec::with_capacity(if self.float { 0 } else { batch.num_rows() });
        let mut floats = Vec::with_capacity(if self.float { batch.num_rows() } else { 0 });
        for row in 0..batch.num_rows() {
            let (di, df) = value_at(values, row).unwrap_or((0, 0.0));
            let (ti, tf) = match keys {
                Some(keys) if keys.is_valid(row) => {
                    let slot = self.by_key.entry(keys.value(row).to_owned()).or_default();
                    slot.0 += di;
                    slot.1 += df;
                    *slot
                }
                Some(_) => (di, df),
                None => {
                    self.total_int += di;
                    self.total += df;
                    (self.total_int, self.total)
                }
            };
            if self.float {
                floats.push(tf)
            } else {
                ints.push(ti)
            }
        }
        let total: ArrayRef = if self.float {
            Arc::new(Float64Array::from(floats))
        } else {
            Arc::new(Int64Array::from(ints))
        };
        let mut columns = batch.columns().to_vec();
        columns.push(total);
        Ok(vec![RecordBatch::try_new(self.output.clone(), columns)?])
    }
}

export_exchanger!(RunningTotals);
