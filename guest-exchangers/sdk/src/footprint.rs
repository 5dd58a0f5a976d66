//! What one IPC message costs once decoded and materialised, read from its header
//! and body before any decoding.
//!
//! Arrow lets a message reference the same bytes many times: two buffers may point
//! at one region of the body, every row of a `Utf8View` column may point at the same
//! long string, dictionary keys and run ends repeat their values. Decoding, Arrow's
//! validation (UTF-8 of every referenced string) and whatever consumes the batch
//! (DuckDB stores every row's string) all pay for the *referenced* bytes, not the
//! bytes sent. This walk counts the referenced bytes, checks every buffer and node
//! against the body it came with (so nothing downstream slices past it), and lets
//! the decoder refuse a message whose footprint is out of proportion to its size.
//!
//! The walk follows the buffer layout of arrow-rs's IPC reader field by field. Union
//! and list-view columns are refused: their children can be referenced any number of
//! times, and no Mallard consumer needs them.

use arrow_ipc::{Buffer as BufferSpec, FieldNode};
use arrow_schema::{ArrowError, DataType, Field};
use std::collections::HashMap;

/// Footprint a message may have per byte it was sent with (header and body):
/// dictionary-encoded categories commonly expand 10-40x, shared views without bound.
pub const MAX_FOOTPRINT_PER_SENT_BYTE: u64 = 64;
/// Footprint any message may have beyond that proportion (a few short rows).
pub const FOOTPRINT_WITHOUT_BYTES: u64 = 16 << 10;
/// Footprint of one message however large it is: bounds the memory and the validation
/// work (about 0.3 s of UTF-8 checking) one decoded message can cost.
pub const MAX_MESSAGE_FOOTPRINT: u64 = 1 << 30;

/// The footprint a message of `sent` bytes (header and body) may have.
pub fn allowed_footprint(sent: usize) -> u64 {
    MAX_MESSAGE_FOOTPRINT.min(
        FOOTPRINT_WITHOUT_BYTES
            .saturating_add(MAX_FOOTPRINT_PER_SENT_BYTE.saturating_mul(sent as u64)),
    )
}

/// The size each value of a column has once materialised, for the dictionaries and
/// run-end encoded values that other rows reference by index.
#[derive(Debug, Clone)]
pub enum ValueSizes {
    /// Every value has this size.
    Each(u64),
    /// The size of each value, in order.
    Listed(Vec<u32>),
}

impl ValueSizes {
    /// The size of value `index`; an index past the end costs nothing (only a null
    /// slot can hold one: Arrow's validation refuses any other).
    fn of(&self, index: u64) -> u64 {
        match self {
            Self::Each(size) => *size,
            Self::Listed(sizes) => usize::try_from(index)
                .ok()
                .and_then(|i| sizes.get(i))
                .map_or(0, |s| u64::from(*s)),
        }
    }

    /// These sizes (of `len` values) followed by a delta's (of `delta_len` values).
    pub fn extended(self, len: u64, delta: ValueSizes, delta_len: u64) -> ValueSizes {
        match (self, delta) {
            (Self::Each(a), Self::Each(b)) if a == b => Self::Each(a),
            (this, delta) => {
                let mut sizes = this.listed(len);
                sizes.extend(delta.listed(delta_len));
                Self::Listed(sizes)
            }
        }
    }

    fn listed(self, len: u64) -> Vec<u32> {
        match self {
            Self::Each(size) => vec![clamp(size); usize::try_from(len).unwrap_or(0)],
            Self::Listed(sizes) => sizes,
        }
    }
}

fn clamp(size: u64) -> u32 {
    u32::try_from(size).unwrap_or(u32::MAX)
}

/// A stored dictionary: how many values it has and what each costs.
#[derive(Debug, Clone)]
pub struct DictionarySizes {
    /// Values in the dictionary.
    pub len: u64,
    /// Their materialised sizes.
    pub sizes: ValueSizes,
}

/// One column as the walk saw it.
pub struct Column<'a> {
    /// Rows (the node's length).
    pub len: u64,
    /// Bytes it references once materialised, shared bytes counted every time.
    pub footprint: u64,
    /// Each value's size, when asked for.
    pub sizes: Option<ValueSizes>,
    /// The values buffer of a fixed-width column (run ends are read from it).
    values: Option<&'a [u8]>,
}

/// Walks one record batch's nodes and buffers against its body.
pub struct Walk<'a, 'd> {
    nodes: std::vec::IntoIter<FieldNode>,
    buffers: std::vec::IntoIter<BufferSpec>,
    variadic: std::vec::IntoIter<i64>,
    body: &'a [u8],
    dictionaries: &'d HashMap<i64, DictionarySizes>,
}

fn refuse(message: String) -> ArrowError {
    ArrowError::IpcError(message)
}

impl<'a, 'd> Walk<'a, 'd> {
    /// A walk over `batch`, whose buffers lie in `body`; dictionary columns are
    /// costed from `dictionaries`.
    pub fn new(
        batch: &arrow_ipc::RecordBatch<'_>,
        body: &'a [u8],
        dictionaries: &'d HashMap<i64, DictionarySizes>,
    ) -> Self {
        let nodes: Vec<FieldNode> = batch
            .nodes()
            .map(|n| n.iter().copied().collect())
            .unwrap_or_default();
        let buffers: Vec<BufferSpec> = batch
            .buffers()
            .map(|b| b.iter().copied().collect())
            .unwrap_or_default();
        let variadic: Vec<i64> = batch
            .variadicBufferCounts()
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        Self {
            nodes: nodes.into_iter(),
            buffers: buffers.into_iter(),
            variadic: variadic.into_iter(),
            body,
            dictionaries,
        }
    }

    fn node(&mut self, field: &Field) -> Result<u64, ArrowError> {
        let node = self
            .nodes
            .next()
            .ok_or_else(|| refuse(format!("no field node for column {:?}", field.name())))?;
        if node.length() < 0 || node.null_count() < 0 || node.null_count() > node.length() {
            return Err(refuse(format!(
                "column {:?} declares length {} with {} nulls",
                field.name(),
                node.length(),
                node.null_count()
            )));
        }
        Ok(node.length() as u64)
    }

    fn buffer(&mut self, field: &Field) -> Result<&'a [u8], ArrowError> {
        let spec = self
            .buffers
            .next()
            .ok_or_else(|| refuse(format!("too few buffers for column {:?}", field.name())))?;
        let (offset, length) = (spec.offset(), spec.length());
        let end = offset.checked_add(length);
        match (usize::try_from(offset), usize::try_from(length), end) {
            (Ok(start), Ok(len), Some(_)) if start.saturating_add(len) <= self.body.len() => {
                Ok(&self.body[start..start + len])
            }
            _ => Err(refuse(format!(
                "a buffer of column {:?} at offset {offset}, length {length} lies outside \
                 the {}-byte body",
                field.name(),
                self.body.len()
            ))),
        }
    }

    /// Walks every column of `fields`; the sum of their footprints.
    pub fn columns(&mut self, fields: &[std::sync::Arc<Field>]) -> Result<u64, ArrowError> {
        let mut total = 0u64;
        for field in fields {
            total = total.saturating_add(self.column(field, false)?.footprint);
        }
        Ok(total)
    }

    /// Walks one column (and its children); `sizes` asks for each value's size.
    pub fn column(&mut self, field: &Field, sizes: bool) -> Result<Column<'a>, ArrowError> {
        use DataType::*;
        let data_type = field.data_type();
        if matches!(data_type, RunEndEncoded(..)) {
            return self.run_end_encoded(field, sizes);
        }
        let len = self.node(field)?;
        let mut column = Column {
            len,
            footprint: 0,
            sizes: None,
            values: None,
        };
        match data_type {
            Null => column.sizes = Some(ValueSizes::Each(0)),
            Utf8 | Binary => {
                let [_, offsets, data] = self.buffers_n::<3>(field)?;
                column.footprint = (offsets.len() + data.len()) as u64;
                column.sizes = sizes.then(|| offset_sizes::<4>(offsets));
            }
            LargeUtf8 | LargeBinary => {
                let [_, offsets, data] = self.buffers_n::<3>(field)?;
                column.footprint = (offsets.len() + data.len()) as u64;
                column.sizes = sizes.then(|| offset_sizes::<8>(offsets));
            }
            Utf8View | BinaryView => {
                let variadic = self.variadic.next().ok_or_else(|| {
                    refuse(format!(
                        "no variadic buffer count for column {:?}",
                        field.name()
                    ))
                })?;
                let variadic = usize::try_from(variadic)
                    .ok()
                    .filter(|n| *n <= self.buffers.len())
                    .ok_or_else(|| {
                        refuse(format!(
                            "column {:?} declares {variadic} data buffers",
                            field.name()
                        ))
                    })?;
                let [nulls, views] = self.buffers_n::<2>(field)?;
                let _ = nulls;
                for _ in 0..variadic {
                    self.buffer(field)?;
                }
                let lengths = views
                    .chunks_exact(16)
                    .take(usize::try_from(len).unwrap_or(0));
                let mut referenced = 0u64;
                let mut listed = sizes.then(Vec::new);
                for view in lengths {
                    let length = u32::from_le_bytes([view[0], view[1], view[2], view[3]]);
                    // Strings of up to 12 bytes sit inside the view itself.
                    let outside = if length > 12 { u64::from(length) } else { 0 };
                    referenced = referenced.saturating_add(outside);
                    if let Some(listed) = listed.as_mut() {
                        listed.push(clamp(16 + outside));
                    }
                }
                column.footprint = (views.len() as u64).saturating_add(referenced);
                column.sizes = listed.map(ValueSizes::Listed);
            }
            List(child) | LargeList(child) | Map(child, _) => {
                let [nulls, offsets] = self.buffers_n::<2>(field)?;
                let child = self.column(child, false)?;
                column.footprint =
                    ((nulls.len() + offsets.len()) as u64).saturating_add(child.footprint);
                column.sizes = sizes.then_some(ValueSizes::Each(child.footprint));
            }
            FixedSizeList(child, _) => {
                let [nulls] = self.buffers_n::<1>(field)?;
                let child = self.column(child, false)?;
                column.footprint = (nulls.len() as u64).saturating_add(child.footprint);
                column.sizes = sizes.then_some(ValueSizes::Each(child.footprint));
            }
            Struct(children) => {
                let [nulls] = self.buffers_n::<1>(field)?;
                let mut footprint = nulls.len() as u64;
                for child in children {
                    footprint = footprint.saturating_add(self.column(child, false)?.footprint);
                }
                column.footprint = footprint;
                column.sizes = sizes.then_some(ValueSizes::Each(footprint));
            }
            Dictionary(key_type, _) => {
                let [nulls, keys] = self.buffers_n::<2>(field)?;
                #[expect(deprecated, reason = "arrow-ipc keys dictionaries by the field's id")]
                let id = field.dict_id().unwrap_or_default();
                let referenced = match self.dictionaries.get(&id) {
                    None => 0,
                    Some(dictionary) => {
                        let mut total = 0u64;
                        let mut listed = sizes.then(Vec::new);
                        for key in integers(keys, key_type).take(usize::try_from(len).unwrap_or(0))
                        {
                            let size = u64::try_from(key).map_or(0, |k| dictionary.sizes.of(k));
                            total = total.saturating_add(size);
                            if let Some(listed) = listed.as_mut() {
                                listed.push(clamp(size));
                            }
                        }
                        column.sizes = listed.map(ValueSizes::Listed);
                        total
                    }
                };
                column.footprint = ((nulls.len() + keys.len()) as u64).saturating_add(referenced);
            }
            Union(..) | ListView(_) | LargeListView(_) => {
                return Err(refuse(format!(
                    "column {:?} is of type {data_type}; union and list-view columns are not \
                     accepted",
                    field.name()
                )));
            }
            _ => {
                let [nulls, values] = self.buffers_n::<2>(field)?;
                column.footprint = (nulls.len() + values.len()) as u64;
                let width = match data_type {
                    Boolean => Some(1),
                    FixedSizeBinary(n) => usize::try_from(*n).ok(),
                    other => other.primitive_width(),
                };
                column.sizes = sizes.then(|| ValueSizes::Each(width.unwrap_or(0) as u64));
                column.values = Some(values);
            }
        }
        Ok(column)
    }

    fn buffers_n<const N: usize>(&mut self, field: &Field) -> Result<[&'a [u8]; N], ArrowError> {
        let mut out = [&[][..]; N];
        for slot in &mut out {
            *slot = self.buffer(field)?;
        }
        Ok(out)
    }

    fn run_end_encoded(&mut self, field: &Field, sizes: bool) -> Result<Column<'a>, ArrowError> {
        let DataType::RunEndEncoded(run_ends_field, values_field) = field.data_type() else {
            unreachable!("called for run-end encoded columns only")
        };
        let len = self.node(field)?;
        let run_ends = self.column(run_ends_field, false)?;
        let values = self.column(values_field, true)?;
        let value_sizes = values.sizes.unwrap_or(ValueSizes::Each(values.footprint));
        let mut footprint = run_ends.footprint;
        let mut listed = sizes.then(Vec::new);
        let mut previous = 0i64;
        let ends = integers(run_ends.values.unwrap_or(&[]), run_ends_field.data_type());
        for (index, end) in ends
            .take(usize::try_from(run_ends.len).unwrap_or(0))
            .enumerate()
        {
            let end = end.clamp(previous, len as i64);
            let run = (end - previous) as u64;
            previous = end;
            let size = value_sizes.of(index as u64);
            footprint = footprint.saturating_add(run.saturating_mul(size));
            if let Some(listed) = listed.as_mut() {
                listed.extend(std::iter::repeat_n(clamp(size), run as usize));
            }
        }
        Ok(Column {
            len,
            footprint,
            sizes: listed.map(ValueSizes::Listed),
            values: None,
        })
    }
}

/// Each value's size from an offsets buffer of `W`-byte offsets.
fn offset_sizes<const W: usize>(offsets: &[u8]) -> ValueSizes {
    let read = |chunk: &[u8]| -> i64 {
        if W == 4 {
            i64::from(i32::from_le_bytes(chunk.try_into().expect("4 bytes")))
        } else {
            i64::from_le_bytes(chunk.try_into().expect("8 bytes"))
        }
    };
    let offsets: Vec<i64> = offsets.chunks_exact(W).map(read).collect();
    ValueSizes::Listed(
        offsets
            .windows(2)
            .map(|w| clamp(u64::try_from(w[1].saturating_sub(w[0])).unwrap_or(0)))
            .collect(),
    )
}

/// The integers of a buffer of `data_type` (any integer type), little-endian.
fn integers<'b>(bytes: &'b [u8], data_type: &DataType) -> Box<dyn Iterator<Item = i64> + 'b> {
    use DataType::*;
    macro_rules! read {
        ($t:ty) => {
            Box::new(
                bytes
                    .chunks_exact(std::mem::size_of::<$t>())
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("width")) as i64),
            )
        };
    }
    match data_type {
        Int8 => read!(i8),
        Int16 => read!(i16),
        Int32 => read!(i32),
        Int64 => read!(i64),
        UInt8 => read!(u8),
        UInt16 => read!(u16),
        UInt32 => read!(u32),
        UInt64 => Box::new(bytes.chunks_exact(8).map(|c| {
            i64::try_from(u64::from_le_bytes(c.try_into().expect("width"))).unwrap_or(i64::MAX)
        })),
        _ => Box::new(std::iter::empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowance_grows_with_the_bytes_sent_up_to_a_ceiling() {
        assert_eq!(allowed_footprint(0), FOOTPRINT_WITHOUT_BYTES);
        assert_eq!(
            allowed_footprint(1 << 20),
            FOOTPRINT_WITHOUT_BYTES + MAX_FOOTPRINT_PER_SENT_BYTE * (1 << 20)
        );
        assert_eq!(allowed_footprint(1 << 30), MAX_MESSAGE_FOOTPRINT);
    }

    #[test]
    fn offsets_give_each_value_its_length() {
        let offsets: Vec<u8> = [0i32, 3, 3, 10]
            .iter()
            .flat_map(|o| o.to_le_bytes())
            .collect();
        let ValueSizes::Listed(sizes) = offset_sizes::<4>(&offsets) else {
            panic!("listed")
        };
        assert_eq!(sizes, vec![3, 0, 7]);
    }

    #[test]
    fn deltas_extend_a_dictionary_s_sizes() {
        let sizes = ValueSizes::Each(4).extended(3, ValueSizes::Each(4), 2);
        assert!(matches!(sizes, ValueSizes::Each(4)));
        let sizes = sizes.extended(5, ValueSizes::Listed(vec![9]), 1);
        let ValueSizes::Listed(listed) = &sizes else {
            panic!("listed")
        };
        assert_eq!(listed, &vec![4, 4, 4, 4, 4, 9]);
        assert_eq!(sizes.of(5), 9);
        assert_eq!(
            sizes.of(6),
            0,
            "an index past the end (a null slot) costs nothing"
        );
    }
}
