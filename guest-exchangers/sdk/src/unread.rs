//! Input columns an exchanger does not read ([`crate::Exchanger::reads`]).
//!
//! Under contract 0.2 such columns never enter the sandbox. The batch `push`
//! receives still has every column of the input schema, so user code that passes
//! columns through (`batch.columns().to_vec()`) is unchanged: an unread column is
//! a *placeholder* of the right type and length whose values are zeros (empty
//! strings, `false`), sliced from one shared zeroed buffer. Passed through as the
//! same array, it becomes "column k of the input" and the host sends the real
//! column. Anything derived from it would be derived from zeros: an emitted
//! column that shares the zeroed buffer (a slice of a placeholder) is refused, and
//! the rule is documented on `reads`. The native build hands `push` the same
//! placeholders, so both builds behave alike.

use crate::ExchangeError;
use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions, make_array};
use arrow_buffer::{Buffer, MutableBuffer};
use arrow_data::ArrayData;
use arrow_schema::{DataType, SchemaRef};
use std::sync::Arc;

/// The widest value (bytes a row) a placeholder is made for; wider columns are read.
pub const MAX_PLACEHOLDER_WIDTH: usize = 32;

/// The placeholders of one stream: which columns are read, and the zeros the
/// others are made of.
#[derive(Debug)]
pub struct Unread {
    schema: SchemaRef,
    /// Columns read, in schema order: those `reads` named, and every column whose
    /// type has no placeholder.
    reads: Vec<usize>,
    zeros: Buffer,
}

impl Unread {
    /// The plan for `schema` when `push` reads `declared` (indices into it).
    pub fn new(schema: SchemaRef, declared: &[usize]) -> Result<Self, ExchangeError> {
        let fields = schema.fields();
        let mut read = vec![false; fields.len()];
        for &k in declared {
            let slot = read.get_mut(k).ok_or_else(|| {
                ExchangeError::Failed(format!(
                    "reads() names column {k} of an input of {} columns",
                    fields.len()
                ))
            })?;
            *slot = true;
        }
        for (k, field) in fields.iter().enumerate() {
            if bytes_per_row(field.data_type()).is_none() {
                read[k] = true;
            }
        }
        let reads = (0..fields.len()).filter(|&k| read[k]).collect();
        Ok(Self {
            schema,
            reads,
            zeros: Buffer::from(MutableBuffer::new(0)),
        })
    }

    /// The input columns to read, in schema order.
    pub fn reads(&self) -> &[usize] {
        &self.reads
    }

    /// The batch `push` receives: `read` (the columns of [`Unread::reads`], in
    /// that order) in their places, placeholders of `rows` rows in the others.
    pub fn batch(
        &mut self,
        rows: usize,
        read: Vec<ArrayRef>,
    ) -> Result<RecordBatch, ExchangeError> {
        if read.len() != self.reads.len() {
            return Err(ExchangeError::Failed(format!(
                "read {} columns, expected {}",
                read.len(),
                self.reads.len()
            )));
        }
        let widest = self
            .schema
            .fields()
            .iter()
            .filter_map(|f| bytes_per_row(f.data_type()))
            .max()
            .unwrap_or(0);
        let needed = widest.saturating_mul(rows.saturating_add(1));
        if self.zeros.len() < needed {
            self.zeros = MutableBuffer::from_len_zeroed(needed).into();
        }
        let mut read = read.into_iter();
        let mut next_read = self.reads.iter().peekable();
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for (k, field) in self.schema.fields().iter().enumerate() {
            if next_read.next_if_eq(&&k).is_some() {
                columns.push(read.next().expect("counted above"));
            } else {
                columns.push(self.placeholder(field.data_type(), rows));
            }
        }
        RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| ExchangeError::Failed(format!("input columns: {e}")))
    }

    fn placeholder(&self, data_type: &DataType, rows: usize) -> ArrayRef {
        let zeros = |bytes: usize| self.zeros.slice_with_length(0, bytes);
        let builder = ArrayData::builder(data_type.clone()).len(rows);
        let builder = match data_type {
            DataType::Null => builder,
            DataType::Boolean => builder.add_buffer(zeros(rows.div_ceil(8))),
            DataType::Utf8 | DataType::Binary => builder
                .add_buffer(zeros(4 * (rows + 1)))
                .add_buffer(zeros(0)),
            DataType::LargeUtf8 | DataType::LargeBinary => builder
                .add_buffer(zeros(8 * (rows + 1)))
                .add_buffer(zeros(0)),
            other => {
                let width = bytes_per_row(other).expect("only placeholder types get here");
                builder.add_buffer(zeros(width * rows))
            }
        };
        // SAFETY: each buffer is zeros of at least the length its type needs for
        // `rows` rows: all-zero offsets (every value empty, inside the empty values
        // buffer), zero values, no validity buffer. Arrow's validation would walk
        // every offset of every placeholder string column per batch to learn that.
        let data = unsafe { builder.build_unchecked() };
        make_array(data)
    }

    /// The batch `push` receives for the whole input batch `batch`: its read
    /// columns in their places, placeholders in the others.
    pub fn view(&mut self, batch: &RecordBatch) -> Result<RecordBatch, ExchangeError> {
        let read = self
            .reads
            .iter()
            .map(|&k| batch.column(k).clone())
            .collect();
        self.batch(batch.num_rows(), read)
    }

    /// Refuses an emitted column made of a placeholder's zeros (a slice of an
    /// unread column, say), naming its output field.
    pub fn check_emitted(&self, field: &str, column: &ArrayRef) -> Result<(), ExchangeError> {
        if self.zeros.is_empty() {
            return Ok(());
        }
        let start = self.zeros.as_ptr() as usize;
        let end = start + self.zeros.len();
        if shares(&column.to_data(), start, end) {
            return Err(ExchangeError::Failed(format!(
                "output column {field:?} is made from an input column that reads() left \
                 out (its values are placeholders); add that column to reads()"
            )));
        }
        Ok(())
    }
}

/// Whether any buffer of `data` (or its children) lies in `start..end`.
fn shares(data: &ArrayData, start: usize, end: usize) -> bool {
    let inside = |b: &Buffer| {
        let p = b.as_ptr() as usize;
        !b.is_empty() && p >= start && p < end
    };
    data.buffers().iter().any(inside)
        || data.nulls().is_some_and(|n| inside(n.buffer()))
        || data.child_data().iter().any(|c| shares(c, start, end))
}

/// The zeroed bytes a placeholder needs per row (a string column's offsets), or
/// None for a type that has no placeholder and is always read.
fn bytes_per_row(data_type: &DataType) -> Option<usize> {
    match data_type {
        DataType::Null => Some(0),
        DataType::Boolean => Some(1),
        DataType::Utf8 | DataType::Binary => Some(4),
        DataType::LargeUtf8 | DataType::LargeBinary => Some(8),
        DataType::FixedSizeBinary(_) => None,
        other => other
            .primitive_width()
            .filter(|w| *w <= MAX_PLACEHOLDER_WIDTH),
    }
}

/// The output of `push` over placeholders, with each passed-through column
/// swapped for the real one (`real[k]` for `seen[k]`), every other column
/// checked. Used by the native build, where the real columns are at hand.
pub fn restore(
    unread: &Unread,
    batches: Vec<RecordBatch>,
    seen: &[ArrayRef],
    real: &[ArrayRef],
) -> Result<Vec<RecordBatch>, ExchangeError> {
    batches
        .into_iter()
        .map(|batch| {
            let mut columns = Vec::with_capacity(batch.num_columns());
            for (field, column) in batch.schema_ref().fields().iter().zip(batch.columns()) {
                match seen.iter().position(|s| Arc::ptr_eq(s, column)) {
                    Some(k) => columns.push(real[k].clone()),
                    None => {
                        unread.check_emitted(field.name(), column)?;
                        columns.push(column.clone());
                    }
                }
            }
            RecordBatch::try_new_with_options(
                batch.schema(),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
            )
            .map_err(|e| ExchangeError::Failed(format!("output batch: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Decimal128Type, Int64Type};
    use arrow_array::{BooleanArray, Decimal128Array, Int64Array, ListArray, StringArray};
    use arrow_schema::{Field, Schema};

    fn input() -> RecordBatch {
        let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1)]),
            None,
            Some(vec![]),
        ]);
        RecordBatch::try_from_iter([
            ("a", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
            (
                "s",
                Arc::new(StringArray::from(vec!["x", "y", "z"])) as ArrayRef,
            ),
            (
                "b",
                Arc::new(BooleanArray::from(vec![true, false, true])) as ArrayRef,
            ),
            ("l", Arc::new(list) as ArrayRef),
            (
                "d",
                Arc::new(
                    Decimal128Array::from(vec![1, 2, 3])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn unread_columns_are_zeros_of_their_type_and_nested_ones_are_always_read() {
        let batch = input();
        let mut unread = Unread::new(batch.schema(), &[0]).unwrap();
        assert_eq!(unread.reads(), &[0, 3], "the list has no placeholder");
        let seen = unread.view(&batch).unwrap();
        assert_eq!(seen.schema(), batch.schema());
        assert!(Arc::ptr_eq(seen.column(0), batch.column(0)));
        assert!(Arc::ptr_eq(seen.column(3), batch.column(3)));
        assert_eq!(
            seen.column(1).as_string::<i32>().iter().collect::<Vec<_>>(),
            vec![Some(""); 3]
        );
        assert_eq!(seen.column(2).as_boolean().true_count(), 0);
        assert_eq!(
            seen.column(4)
                .as_primitive::<Decimal128Type>()
                .values()
                .to_vec(),
            vec![0; 3]
        );
        assert_eq!(
            seen.column(1).null_count(),
            0,
            "non-nullable fields stay valid"
        );
        for column in seen.columns() {
            column
                .to_data()
                .validate_full()
                .expect("placeholders are valid arrays");
        }
        let wide = unread.batch(
            70_000,
            vec![
                Arc::new(Int64Array::from(vec![0; 70_000])),
                arrow_array::new_null_array(batch.schema().field(3).data_type(), 70_000),
            ],
        );
        for column in wide.unwrap().columns() {
            column
                .to_data()
                .validate_full()
                .expect("after the zeros grew");
        }
    }

    #[test]
    fn passed_through_placeholders_become_the_real_columns_and_derived_ones_are_refused() {
        let batch = input();
        let mut unread = Unread::new(batch.schema(), &[]).unwrap();
        let seen = unread.view(&batch).unwrap();
        let restored =
            restore(&unread, vec![seen.clone()], seen.columns(), batch.columns()).unwrap();
        assert_eq!(restored[0], batch);

        let sliced = seen.slice(1, 2);
        let err = restore(&unread, vec![sliced], seen.columns(), batch.columns()).unwrap_err();
        assert!(err.to_string().contains("reads()"), "{err}");

        let own = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![7, 8, 9]))],
        )
        .unwrap();
        assert_eq!(
            restore(&unread, vec![own.clone()], seen.columns(), batch.columns()).unwrap()[0],
            own
        );
    }

    #[test]
    fn reads_past_the_schema_are_the_exchangers_error() {
        let err = Unread::new(input().schema(), &[5]).unwrap_err();
        assert!(
            err.to_string().contains("column 5 of an input of 5"),
            "{err}"
        );
    }
}
