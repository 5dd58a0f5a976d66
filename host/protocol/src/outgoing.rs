//! A Flight message on its way to a client, its Arrow body in pieces, and how
//! it is written on the wire as a gRPC message without copying those pieces.
//!
//! A result batch's body, or an exchange's output that passes input columns
//! through, is Arrow buffers with padding between them; its FlightData would
//! need them in one contiguous (copied) `Bytes`. An [`Outgoing`] keeps them
//! apart until the socket: [`Outgoing::wire_pieces`] writes the gRPC prefix, the
//! protobuf fields and every small piece into one buffer and passes each large
//! piece through.

use arrow_array::RecordBatch;
use arrow_data::ArrayData;
use arrow_flight::FlightData;
use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

/// A piece smaller than this is copied into its neighbours' buffer: a separate
/// piece costs hyper and h2 more than copying it.
pub const SEPARATE_PIECE_MIN_BYTES: usize = 4096;

/// The protobuf field number of `FlightData.data_body`.
const DATA_BODY_FIELD: u32 = 1000;

/// A message gRPC cannot carry: its length does not fit the 4-byte prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a Flight message of {0} bytes is larger than gRPC's 4 GiB limit")]
pub struct TooLargeForGrpc(pub usize);

/// One Flight message to send: every field but the body, and the body as
/// pieces in order.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// The message's descriptor, header and metadata; its `data_body` is empty.
    pub fields: FlightData,
    /// The body, in order.
    pub body: Vec<Bytes>,
    /// The record batch the message encodes, already validated by this server,
    /// when the server built or decoded it: a consumer inside the server (DuckDB
    /// under `exchange()`, a scalar call) takes it instead of joining the pieces
    /// and decoding them again. The network ignores it. It holds no memory of its
    /// own (see [`Self::with_batch`]), so what budgets a message's bytes budgets it.
    pub batch: Option<RecordBatch>,
}

impl From<FlightData> for Outgoing {
    fn from(mut fields: FlightData) -> Self {
        let body = std::mem::take(&mut fields.data_body);
        Self {
            fields,
            body: if body.is_empty() { vec![] } else { vec![body] },
            batch: None,
        }
    }
}

impl Outgoing {
    /// A message of `header` and `body` pieces, no other field.
    pub fn data(header: Bytes, body: Vec<Bytes>) -> Self {
        Self {
            fields: FlightData {
                data_header: header,
                ..FlightData::default()
            },
            body,
            batch: None,
        }
    }

    /// The same message, carrying `batch`, the validated record batch it
    /// encodes (see [`Self::batch`]), if every buffer of the batch lies inside
    /// the body's pieces. A decoder that had to copy (a misaligned buffer, which
    /// a guest can emit on purpose) made a batch that would double the memory a
    /// queued message holds; then nothing is carried and a consumer decodes.
    pub fn with_batch(mut self, batch: RecordBatch) -> Self {
        if batch
            .columns()
            .iter()
            .all(|column| lies_inside(&column.to_data(), &self.body))
        {
            self.batch = Some(batch);
        }
        self
    }

    /// The body's length.
    pub fn body_len(&self) -> usize {
        self.body.iter().map(Bytes::len).sum()
    }

    /// The IPC message's length: its header and its body.
    pub fn ipc_len(&self) -> usize {
        self.fields.data_header.len() + self.body_len()
    }

    /// The message as one FlightData, its body joined (copied unless it is one
    /// piece): for a path that has only tonic's codec.
    pub fn into_flight_data(self) -> FlightData {
        let mut data = self.fields;
        data.data_body = match <[Bytes; 1]>::try_from(self.body) {
            Ok([one]) => one,
            Err(pieces) => pieces.concat().into(),
        };
        data
    }

    /// The message as a gRPC message on the wire, in pieces that together are
    /// byte for byte the prefix and prost's encoding of [`Self::into_flight_data`]:
    /// large body pieces as they are, everything else copied between them.
    pub fn wire_pieces(self) -> Result<Vec<Bytes>, TooLargeForGrpc> {
        let body_len = self.body_len();
        let fields_len = self.fields.encoded_len();
        let body_field_len = if body_len == 0 {
            0
        } else {
            prost::encoding::key_len(DATA_BODY_FIELD)
                + prost::encoding::encoded_len_varint(body_len as u64)
                + body_len
        };
        let total = fields_len + body_field_len;
        let length = u32::try_from(total).map_err(|_| TooLargeForGrpc(total))?;
        let mut pieces = Vec::with_capacity(1 + self.body.len());
        let mut buffer = BytesMut::with_capacity(5 + fields_len + 16);
        buffer.put_u8(0);
        buffer.put_u32(length);
        self.fields.encode_raw(&mut buffer);
        if body_len > 0 {
            prost::encoding::encode_key(
                DATA_BODY_FIELD,
                prost::encoding::WireType::LengthDelimited,
                &mut buffer,
            );
            prost::encoding::encode_varint(body_len as u64, &mut buffer);
        }
        for piece in self.body {
            if piece.len() < SEPARATE_PIECE_MIN_BYTES {
                buffer.put(piece);
            } else {
                if !buffer.is_empty() {
                    pieces.push(buffer.split().freeze());
                }
                pieces.push(piece);
            }
        }
        if !buffer.is_empty() {
            pieces.push(buffer.freeze());
        }
        Ok(pieces)
    }
}

/// Whether every non-empty buffer of `data` and its children is inside one of `pieces`.
fn lies_inside(data: &ArrayData, pieces: &[Bytes]) -> bool {
    let inside = |buffer: &arrow_buffer::Buffer| {
        let start = buffer.as_ptr() as usize;
        buffer.is_empty()
            || pieces.iter().any(|piece| {
                let range = piece.as_ptr() as usize..piece.as_ptr() as usize + piece.len();
                range.contains(&start) && start + buffer.len() <= range.end
            })
    };
    data.buffers().iter().all(inside)
        && data.nulls().is_none_or(|nulls| inside(nulls.buffer()))
        && data
            .child_data()
            .iter()
            .all(|child| lies_inside(child, pieces))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_flight::FlightDescriptor;

    fn as_tonic_would(data: &FlightData) -> Vec<u8> {
        let message = data.encode_to_vec();
        let mut wire = vec![0];
        wire.extend_from_slice(&(message.len() as u32).to_be_bytes());
        wire.extend_from_slice(&message);
        wire
    }

    fn outgoing(header_len: usize, pieces: &[usize]) -> Outgoing {
        Outgoing {
            fields: FlightData {
                flight_descriptor: (header_len == 5)
                    .then(|| FlightDescriptor::new_path(vec!["t".into()])),
                data_header: Bytes::from(vec![7; header_len]),
                app_metadata: Bytes::from_static(b"meta"),
                data_body: Bytes::new(),
            },
            batch: None,
            body: pieces
                .iter()
                .enumerate()
                .map(|(i, &n)| Bytes::from(vec![i as u8; n]))
                .collect(),
        }
    }

    #[test]
    fn a_batch_is_carried_only_when_it_lies_inside_the_body() {
        use arrow_array::{ArrayRef, Int64Array, ListArray, StringArray};
        use arrow_buffer::Buffer;
        use mallard_exchanger::ipc::{MessageDecoder, MessageEncoder};
        use std::sync::Arc;
        let list = ListArray::from_iter_primitive::<arrow_array::types::Int64Type, _, _>([
            Some(vec![Some(1), None]),
            None,
            Some(vec![]),
        ]);
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef),
            (
                "s",
                Arc::new(StringArray::from(vec![Some("a"), None, Some("é")])),
            ),
            ("l", Arc::new(list)),
        ])
        .unwrap();
        let mut messages = Vec::new();
        MessageEncoder::new(batch.schema())
            .encode(&batch, &mut messages)
            .unwrap();
        let message = messages.pop().unwrap();
        let (header, body) = (Bytes::from(message.header), Bytes::from(message.body));
        let decoded = MessageDecoder::new(batch.schema())
            .decode(&header, Buffer::from(body.clone()))
            .unwrap()
            .unwrap();
        let carried = Outgoing::data(header.clone(), vec![body.clone()]).with_batch(decoded);
        assert_eq!(carried.batch.as_ref(), Some(&batch));
        // The same values in memory of their own would double what the message holds.
        let own = Outgoing::data(header, vec![body]).with_batch(batch);
        assert!(own.batch.is_none());
    }

    #[test]
    fn the_pieces_are_byte_for_byte_what_tonic_would_send() {
        let big = SEPARATE_PIECE_MIN_BYTES;
        for header_len in [0, 5, 300] {
            for body in [
                &[][..],
                &[1],
                &[127, 1],
                &[big - 1],
                &[big],
                &[8, big, 56, big + 1, 0, 3],
                &[1 << 20, 1 << 20],
            ] {
                let message = outgoing(header_len, body);
                let expected = as_tonic_would(&message.clone().into_flight_data());
                let wire: Vec<u8> = message.wire_pieces().unwrap().concat();
                assert_eq!(wire, expected, "header {header_len}, body {body:?}");
            }
        }
    }

    #[test]
    fn large_pieces_are_passed_through_and_small_ones_joined() {
        let message = outgoing(300, &[8, 1 << 20, 56, 64, 1 << 16]);
        let large: Vec<*const u8> = [1, 4].iter().map(|&i| message.body[i].as_ptr()).collect();
        let pieces = message.wire_pieces().unwrap();
        // head + 8; the first large; 56 + 64; the second large.
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces[1].as_ptr(), large[0]);
        assert_eq!(pieces[3].as_ptr(), large[1]);
        assert_eq!(pieces[2].len(), 120);
    }

    #[test]
    fn a_flight_data_round_trips_and_one_piece_is_not_copied() {
        let body = Bytes::from(vec![3; 1000]);
        let data = FlightData {
            data_header: Bytes::from_static(b"h"),
            data_body: body.clone(),
            ..Default::default()
        };
        let back = Outgoing::from(data.clone()).into_flight_data();
        assert_eq!(back, data);
        assert_eq!(back.data_body.as_ptr(), body.as_ptr());
        assert!(Outgoing::from(FlightData::default()).body.is_empty());
    }
}
