//! Arrow's full validation of a decoded batch of flat columns, with the offsets and
//! UTF-8 of string and binary columns checked in one vectorisable pass.
//!
//! arrow-data checks a string column one offset at a time through a chain of
//! closures (about 5% of the server's CPU on a PUT of the flights table). For the
//! flat types below, [`validate_batch`] runs exactly the checks Arrow's decoder
//! would have run (buffer sizes, null counts, every offset non-negative, ordered
//! and within the values, UTF-8 that every offset cuts on a character boundary,
//! the batch's lengths, types and nullability), and Arrow's own code for every
//! column that is not a string or binary. Nested, dictionary and view types are
//! not "flat" here: their batches keep Arrow's validation during decoding.
//! `exercise_decoders` (the IPC fuzz target) decodes every input both ways and
//! requires the same verdict.

use arrow_array::cast::AsArray;
use arrow_array::types::{BinaryType, ByteArrayType, LargeBinaryType, LargeUtf8Type, Utf8Type};
use arrow_array::{Array, ArrayRef, OffsetSizeTrait, RecordBatch, RecordBatchOptions};
use arrow_schema::{ArrowError, DataType, Fields, SchemaRef};

/// Whether a column of this type is checked by [`validate_batch`].
pub fn is_flat(data_type: &DataType) -> bool {
    data_type.is_primitive()
        || matches!(
            data_type,
            DataType::Null
                | DataType::Boolean
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Binary
                | DataType::LargeBinary
        )
}

/// Whether every buffer of `batch` (a record batch message of flat `fields`) is
/// long enough for its column's rows, as the unchecked decode assumes: Arrow's
/// array constructors panic on a short buffer, which its validation would have
/// refused first. Conservative: a message that fails it is decoded with Arrow's
/// own validation instead, so its verdict stays Arrow's.
pub fn buffers_suffice(batch: &arrow_ipc::RecordBatch<'_>, fields: &Fields) -> bool {
    let (Some(nodes), Some(buffers)) = (batch.nodes(), batch.buffers()) else {
        return fields.is_empty();
    };
    let (mut nodes, mut buffers) = (nodes.iter(), buffers.iter());
    let mut next_len = || buffers.next().map(|b| usize::try_from(b.length()).ok());
    for field in fields {
        let Some(node) = nodes.next() else {
            return false;
        };
        let Ok(rows) = usize::try_from(node.length()) else {
            return false;
        };
        let bits = rows.div_ceil(8);
        let validity_ok = |len: Option<Option<usize>>| match len {
            Some(Some(len)) => node.null_count() == 0 || len >= bits,
            _ => false,
        };
        let at_least = |len: Option<Option<usize>>, needed: Option<usize>| matches!((len, needed), (Some(Some(len)), Some(needed)) if len >= needed);
        let ok = match field.data_type() {
            DataType::Null => true,
            DataType::Boolean => validity_ok(next_len()) && at_least(next_len(), Some(bits)),
            DataType::Utf8 | DataType::Binary | DataType::LargeUtf8 | DataType::LargeBinary => {
                let offset_width = match field.data_type() {
                    DataType::Utf8 | DataType::Binary => 4,
                    _ => 8,
                };
                let offsets = rows
                    .checked_add(1)
                    .and_then(|n| n.checked_mul(offset_width));
                validity_ok(next_len()) && at_least(next_len(), offsets) && next_len().is_some()
            }
            other => match other.primitive_width() {
                Some(width) => {
                    validity_ok(next_len()) && at_least(next_len(), rows.checked_mul(width))
                }
                None => false,
            },
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Validates `columns`, decoded from one record batch message of `rows` rows
/// without Arrow's validation, as that validation would have, and returns them as
/// a batch of `schema`. Every field of `schema` must be [`is_flat`].
pub fn validate_batch(
    schema: SchemaRef,
    columns: Vec<ArrayRef>,
    rows: usize,
) -> Result<RecordBatch, ArrowError> {
    for (column, field) in columns.iter().zip(schema.fields()) {
        validate_column(column.as_ref()).map_err(|e| {
            ArrowError::InvalidArgumentError(format!("column `{}`: {e}", field.name()))
        })?;
    }
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(schema, columns, &options)
}

fn validate_column(column: &dyn Array) -> Result<(), ArrowError> {
    match column.data_type() {
        DataType::Utf8 => byte_array::<Utf8Type>(column, true),
        DataType::LargeUtf8 => byte_array::<LargeUtf8Type>(column, true),
        DataType::Binary => byte_array::<BinaryType>(column, false),
        DataType::LargeBinary => byte_array::<LargeBinaryType>(column, false),
        _ => column.to_data().validate_full(),
    }
}

/// Arrow's structural and null checks of a string or binary column, then
/// [`check_offsets`] in place of Arrow's per-offset values check.
fn byte_array<T: ByteArrayType>(column: &dyn Array, utf8: bool) -> Result<(), ArrowError> {
    let data = column.to_data();
    data.validate()?;
    data.validate_nulls()?;
    let array = column.as_bytes::<T>();
    check_offsets(array.value_offsets(), array.values(), utf8)
}

/// Every offset non-negative, none smaller than the one before, the last within
/// `values`; with `utf8`, the bytes between the first and last offsets are UTF-8
/// and every offset falls on a character boundary.
fn check_offsets<O: OffsetSizeTrait>(
    offsets: &[O],
    values: &[u8],
    utf8: bool,
) -> Result<(), ArrowError> {
    let (Some(&first), Some(&last)) = (offsets.first(), offsets.last()) else {
        return Ok(());
    };
    // No early exit: a branch-free fold vectorises.
    let ordered = offsets
        .windows(2)
        .fold(true, |ordered, pair| ordered & (pair[0] <= pair[1]));
    if !ordered {
        let at = offsets
            .windows(2)
            .position(|pair| pair[0] > pair[1])
            .expect("an unordered pair exists");
        return Err(invalid(format!(
            "offset {at} ({:?}) is greater than the next ({:?})",
            offsets[at],
            offsets[at + 1]
        )));
    }
    let (Some(first), Some(last)) = (first.to_usize(), last.to_usize()) else {
        return Err(invalid(format!("a negative offset ({first:?})")));
    };
    if last > values.len() {
        return Err(invalid(format!(
            "offset {last} is beyond the {} bytes of values",
            values.len()
        )));
    }
    if !utf8 {
        return Ok(());
    }
    let span = &values[first..last];
    // ASCII is UTF-8 and every ASCII byte begins a character.
    if span.is_ascii() {
        return Ok(());
    }
    std::str::from_utf8(span).map_err(|e| invalid(format!("invalid UTF-8: {e}")))?;
    let cuts_characters = offsets.iter().fold(false, |cuts, &offset| {
        let at = offset.as_usize();
        // A continuation byte is 0b10xx_xxxx: as i8, below -0x40.
        cuts | (at < last && (values[at] as i8) < -0x40)
    });
    if cuts_characters {
        return Err(invalid("an offset falls inside a UTF-8 character".into()));
    }
    Ok(())
}

fn invalid(message: String) -> ArrowError {
    ArrowError::InvalidArgumentError(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{BinaryArray, Int64Array, StringArray};
    use arrow_buffer::{Buffer, NullBuffer};
    use arrow_data::ArrayDataBuilder;
    use arrow_schema::{Field, Schema};
    use std::sync::Arc;

    /// A string column of `offsets` into `values`, built without validation, and
    /// whether Arrow's own validation accepts it.
    fn strings(offsets: &[i32], values: &[u8]) -> (ArrayRef, bool) {
        let builder = || {
            ArrayDataBuilder::new(DataType::Utf8)
                .len(offsets.len().saturating_sub(1))
                .add_buffer(Buffer::from_slice_ref(offsets))
                .add_buffer(Buffer::from_slice_ref(values))
        };
        let arrow_accepts = builder().build().is_ok();
        // SAFETY: the test only validates it, never reads values.
        let data = unsafe { builder().build_unchecked() };
        (Arc::new(StringArray::from(data)), arrow_accepts)
    }

    fn verdict(column: &ArrayRef) -> bool {
        validate_column(column.as_ref()).is_ok()
    }

    #[test]
    fn the_verdict_is_arrows_for_every_kind_of_bad_offset_and_utf8() {
        let cases: &[(&[i32], &[u8])] = &[
            (&[0, 1, 3, 3], b"abc"),
            (&[2, 3], b"abc"),               // the first offset need not be 0
            (&[0, 2, 1], b"abc"),            // unordered
            (&[-1, 1], b"abc"),              // negative
            (&[0, 4], b"abc"),               // beyond the values
            (&[0, 2], b"\xc3\xa9x"),         // é
            (&[0, 1, 3], b"\xc3\xa9x"),      // cuts é
            (&[0, 2], b"\xff\xfe"),          // not UTF-8
            (&[1, 3], b"\xa9\xc3\xa9"),      // skips a stray continuation byte
            (&[0, 0, 3, 3], "€".as_bytes()), // three bytes, whole
            (&[0, 3, 0], b"abc"),            // goes back to the start
            (&[0, 1], b"a\xff"),             // bad bytes beyond the last offset
        ];
        for (offsets, values) in cases {
            let (column, arrow) = strings(offsets, values);
            assert_eq!(verdict(&column), arrow, "{offsets:?} over {values:?}");
        }
    }

    #[test]
    fn binary_columns_need_ordered_offsets_within_their_values_only() {
        let data = |offsets: &[i32]| {
            let builder = ArrayDataBuilder::new(DataType::Binary)
                .len(offsets.len() - 1)
                .add_buffer(Buffer::from_slice_ref(offsets))
                .add_buffer(Buffer::from_slice_ref(b"\xff\xfe\xfd"));
            // SAFETY: validated, never read.
            Arc::new(BinaryArray::from(unsafe { builder.build_unchecked() })) as ArrayRef
        };
        assert!(verdict(&data(&[0, 1, 3])));
        assert!(!verdict(&data(&[0, 3, 1])));
        assert!(!verdict(&data(&[0, 4])));
    }

    #[test]
    fn a_wrong_null_count_or_a_null_in_a_required_field_is_refused() {
        let values = Buffer::from_slice_ref([1i64, 2, 3]);
        let bitmap = Buffer::from_slice_ref([0b101u8]);
        let lying = ArrayDataBuilder::new(DataType::Int64)
            .len(3)
            .add_buffer(values.clone())
            .null_bit_buffer(Some(bitmap))
            .null_count(2);
        // SAFETY: validated, never read.
        let lying: ArrayRef = Arc::new(Int64Array::from(unsafe { lying.build_unchecked() }));
        assert!(!verdict(&lying));

        let nulls = Arc::new(Int64Array::new(
            values.into(),
            Some(NullBuffer::from(vec![true, false, true])),
        )) as ArrayRef;
        let required = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let refused = validate_batch(required.clone(), vec![nulls], 3).unwrap_err();
        assert!(refused.to_string().contains("non-nullable"), "{refused}");
        let short = Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef;
        assert!(validate_batch(required, vec![short], 3).is_err(), "rows");
    }

    #[test]
    fn the_error_names_the_column() {
        let (column, _) = strings(&[0, 2, 1], b"abc");
        let schema = Arc::new(Schema::new(vec![Field::new("city", DataType::Utf8, true)]));
        let refused = validate_batch(schema, vec![column], 2).unwrap_err();
        assert!(refused.to_string().contains("column `city`"), "{refused}");
    }

    #[test]
    fn flat_means_no_children_no_dictionary_and_no_views() {
        assert!(is_flat(&DataType::Int64));
        assert!(is_flat(&DataType::Utf8));
        assert!(is_flat(&DataType::Decimal128(10, 2)));
        assert!(!is_flat(&DataType::Utf8View));
        assert!(!is_flat(&DataType::new_list(DataType::Int64, true)));
        assert!(!is_flat(&DataType::Dictionary(
            Box::new(DataType::Int8),
            Box::new(DataType::Utf8)
        )));
    }
}
