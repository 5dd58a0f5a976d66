//! gRPC-framed FlightData messages read from the bytes a client streams in, as
//! they arrive, so each message's Arrow body is copied once: from the received
//! pieces straight into a 64-byte-aligned buffer that Arrow uses as it is (reused
//! from [`crate::body_pool`] once Arrow is done with it).
//!
//! The server feeds it HTTP/2 frames (`host/src/flight/incoming.rs`); nothing
//! here does I/O, so `fuzz/` runs it on arbitrary bytes in arbitrary pieces.

use crate::body_pool::BodyBuffer;
use arrow_flight::{FlightData, FlightDescriptor};
use bytes::{Buf, Bytes};
use prost::Message;
use std::collections::VecDeque;

/// Field numbers of FlightData.
const DESCRIPTOR: u32 = 1;
const HEADER: u32 = 2;
const APP_METADATA: u32 = 3;
const BODY: u32 = 1000;

/// Why a stream of messages was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlightDataError {
    /// A message's prefix declares more than the limit (refused before anything
    /// is allocated).
    #[error(
        "Error, decoded message length too large: found {found} bytes, the limit is: {limit} bytes"
    )]
    TooLarge {
        /// Declared length.
        found: usize,
        /// The limit.
        limit: usize,
    },
    /// A message with its compressed flag set (no encoding is accepted).
    #[error("protocol error: received a compressed message; this server accepts no grpc-encoding")]
    Compressed,
    /// The stream ended inside a message.
    #[error("Unexpected EOF decoding stream.")]
    Truncated,
    /// A message that is not FlightData; the text says how.
    #[error("a FlightData message that does not decode: {0}")]
    Malformed(String),
}

fn malformed(what: impl Into<String>) -> FlightDataError {
    FlightDataError::Malformed(what.into())
}

/// Reads gRPC-framed FlightData from pieces of a byte stream.
pub struct FlightDataParser {
    max_message_bytes: usize,
    /// Received bytes not parsed yet, as they came.
    received: VecDeque<Bytes>,
    available: usize,
    message: Option<Partial>,
}

/// The message being read.
struct Partial {
    /// Bytes of it not parsed yet.
    remaining: usize,
    data: FlightData,
    /// The body field being filled.
    body: Option<BodyBuffer>,
}

impl FlightDataParser {
    /// A parser refusing messages longer than `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            max_message_bytes,
            received: VecDeque::new(),
            available: 0,
            message: None,
        }
    }

    /// Adds the next piece of the stream.
    pub fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.available += piece.len();
            self.received.push_back(piece);
        }
    }

    /// Whether the stream could end here: no message begun, no byte waiting.
    pub fn at_boundary(&self) -> bool {
        self.available == 0 && self.message.is_none()
    }

    /// The stream ended: an error when it ended inside a message.
    pub fn finish(&self) -> Result<(), FlightDataError> {
        if self.at_boundary() {
            Ok(())
        } else {
            Err(FlightDataError::Truncated)
        }
    }

    fn consume(&mut self, mut n: usize) {
        self.available -= n;
        while n > 0 {
            let front = self.received.front_mut().expect("consumed what arrived");
            if front.len() <= n {
                n -= front.len();
                self.received.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }

    /// The next `n` received bytes (sliced when they sit in one piece).
    fn take(&mut self, n: usize) -> Bytes {
        if n == 0 {
            return Bytes::new();
        }
        let front = self.received.front().expect("taken only once arrived");
        let taken = if front.len() >= n {
            front.slice(..n)
        } else {
            Bytes::from(peek(&self.received, n))
        };
        self.consume(n);
        taken
    }

    /// The next whole message, `None` until more bytes arrive.
    pub fn next_message(&mut self) -> Result<Option<FlightData>, FlightDataError> {
        loop {
            let Some(message) = &mut self.message else {
                if self.available < 5 {
                    return Ok(None);
                }
                let prefix = peek(&self.received, 5);
                if prefix[0] != 0 {
                    return Err(FlightDataError::Compressed);
                }
                let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
                if len > self.max_message_bytes {
                    return Err(FlightDataError::TooLarge {
                        found: len,
                        limit: self.max_message_bytes,
                    });
                }
                self.consume(5);
                self.message = Some(Partial {
                    remaining: len,
                    data: FlightData::default(),
                    body: None,
                });
                continue;
            };
            if let Some(buffer) = &mut message.body {
                while buffer.missing() > 0 && self.available > 0 {
                    let front = self.received.front_mut().expect("available");
                    let n = buffer.fill(front);
                    self.available -= n;
                    if n == front.len() {
                        self.received.pop_front();
                    } else {
                        front.advance(n);
                    }
                }
                if buffer.missing() > 0 {
                    return Ok(None);
                }
                let buffer = message.body.take().expect("just filled");
                message.data.data_body = buffer.freeze();
                continue;
            }
            let remaining = message.remaining;
            if remaining == 0 {
                let done = self.message.take().expect("a message");
                return Ok(Some(done.data));
            }
            // A key and a length: at most 10 bytes each.
            let head = peek(&self.received, 20.min(remaining).min(self.available));
            let Some((key, key_len)) = varint(&head) else {
                if head.len() >= 10.min(remaining) {
                    return Err(malformed("a field key that is no varint"));
                }
                return Ok(None);
            };
            let field = u32::try_from(key >> 3).map_err(|_| malformed("a field number"))?;
            let wire_type = key & 7;
            let (length, length_len) = match wire_type {
                0 | 2 => match varint(&head[key_len..]) {
                    Some((value, n)) => (if wire_type == 2 { value } else { 0 }, n),
                    None if head.len() - key_len >= 10.min(remaining - key_len) => {
                        return Err(malformed("a field length or value that is no varint"));
                    }
                    None => return Ok(None),
                },
                1 => (8, 0),
                5 => (4, 0),
                _ => return Err(malformed("a field of an unsupported wire type")),
            };
            let length = usize::try_from(length).map_err(|_| malformed("a field length"))?;
            let field_len = key_len
                .checked_add(length_len)
                .and_then(|n| n.checked_add(length))
                .filter(|&n| n <= remaining)
                .ok_or_else(|| malformed("a field longer than its message"))?;
            if wire_type == 2 && field == BODY {
                let message = self.message.as_mut().expect("a message");
                message.remaining -= field_len;
                message.body = Some(BodyBuffer::new(length));
                self.consume(key_len + length_len);
                continue;
            }
            if self.available < field_len {
                return Ok(None);
            }
            self.consume(key_len + length_len);
            let value = self.take(length);
            let message = self.message.as_mut().expect("a message");
            message.remaining -= field_len;
            match (wire_type, field) {
                // A repeated message field merges into the one before, as in protobuf.
                (2, DESCRIPTOR) => message
                    .data
                    .flight_descriptor
                    .get_or_insert_with(FlightDescriptor::default)
                    .merge(value)
                    .map_err(|e| malformed(format!("a descriptor: {e}")))?,
                (2, HEADER) => message.data.data_header = value,
                (2, APP_METADATA) => message.data.app_metadata = value,
                _ => {} // unknown fields are skipped, as protobuf readers do
            }
        }
    }
}

/// Copies of the next `n` bytes of `received`, not consumed; fewer when fewer
/// have arrived.
fn peek(received: &VecDeque<Bytes>, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    for piece in received {
        let take = (n - out.len()).min(piece.len());
        out.extend_from_slice(&piece[..take]);
        if out.len() == n {
            break;
        }
    }
    out
}

/// A protobuf varint at the start of `bytes` and its length, if it is whole.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Every message of `wire` delivered in pieces of `piece` bytes, then the end:
/// what a reader of that stream gets (for tests and the fuzz target).
pub fn read_all(
    wire: &[u8],
    piece: usize,
    max_message_bytes: usize,
) -> Vec<Result<FlightData, FlightDataError>> {
    let mut parser = FlightDataParser::new(max_message_bytes);
    let mut out = Vec::new();
    for chunk in wire.chunks(piece.max(1)) {
        parser.push(Bytes::copy_from_slice(chunk));
        loop {
            match parser.next_message() {
                Ok(Some(message)) => out.push(Ok(message)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    if let Err(e) = parser.finish() {
        out.push(Err(e));
    }
    out
}

/// `message` behind a gRPC prefix.
pub fn framed(message: &[u8]) -> Vec<u8> {
    let mut wire = vec![0];
    wire.extend_from_slice(&(message.len() as u32).to_be_bytes());
    wire.extend_from_slice(message);
    wire
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: u8, body_len: usize) -> FlightData {
        FlightData {
            flight_descriptor: (i == 0).then(|| FlightDescriptor::new_path(vec!["t".into()])),
            data_header: Bytes::from(vec![i; 40]),
            app_metadata: Bytes::from(vec![i; (i % 2) as usize]),
            data_body: Bytes::from((0..body_len).map(|b| (b % 251) as u8).collect::<Vec<_>>()),
        }
    }

    #[test]
    fn messages_decode_as_prost_does_whatever_the_piece_boundaries() {
        let messages: Vec<FlightData> = (0..4).map(|i| sample(i, 1000 * i as usize)).collect();
        let wire: Vec<u8> = messages
            .iter()
            .flat_map(|m| framed(&m.encode_to_vec()))
            .collect();
        for piece in [1, 2, 3, 7, 64, 999, 4096, wire.len()] {
            let read: Vec<FlightData> = read_all(&wire, piece, 1 << 20)
                .into_iter()
                .map(Result::unwrap)
                .collect();
            assert_eq!(read, messages, "pieces of {piece} bytes");
            for message in read.iter().filter(|m| !m.data_body.is_empty()) {
                assert_eq!(message.data_body.as_ptr() as usize % 64, 0, "aligned body");
            }
        }
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut message = sample(1, 10).encode_to_vec();
        // Field 7 as a varint, field 8 as fixed64, field 9 as bytes, field 10 as fixed32.
        message.extend_from_slice(&[7 << 3, 0x96, 0x01]);
        message.extend_from_slice(&[(8 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8]);
        message.extend_from_slice(&[(9 << 3) | 2, 2, 0xaa, 0xbb]);
        message.extend_from_slice(&[(10 << 3) | 5, 1, 2, 3, 4]);
        let read = read_all(&framed(&message), 3, 1 << 20);
        assert_eq!(read, vec![Ok(sample(1, 10))]);
    }

    #[test]
    fn bad_streams_are_refused_with_their_reason() {
        let good = framed(&sample(1, 100).encode_to_vec());
        let last =
            |r: Vec<Result<FlightData, FlightDataError>>| r.last().cloned().unwrap().unwrap_err();
        let mut huge = vec![0];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            last(read_all(&huge, 5, 1 << 20)),
            FlightDataError::TooLarge { .. }
        ));
        assert!(matches!(
            last(read_all(&good, 7, good.len() - 6)),
            FlightDataError::TooLarge { .. }
        ));
        assert!(
            read_all(&good, 7, good.len() - 5)[0].is_ok(),
            "at the limit"
        );
        let mut compressed = good.clone();
        compressed[0] = 1;
        assert_eq!(
            last(read_all(&compressed, 7, 1 << 20)),
            FlightDataError::Compressed
        );
        for cut in [3, 10, good.len() - 1] {
            assert_eq!(
                last(read_all(&good[..cut], 4, 1 << 20)),
                FlightDataError::Truncated,
                "cut at {cut}"
            );
        }
        let malformed = |wire: &[u8]| {
            matches!(
                last(read_all(wire, 2, 1 << 20)),
                FlightDataError::Malformed(_)
            )
        };
        assert!(
            malformed(&[0, 0, 0, 0, 4, (2 << 3) | 2, 100, 1, 2]),
            "a field longer than its message"
        );
        assert!(
            malformed(&[0, 0, 0, 0, 5, 0xc2, 0x3e, 0x7f, 1, 2]),
            "a body longer than its message"
        );
        assert!(malformed(&[0, 0, 0, 0, 1, (4 << 3) | 3]), "a group");
        assert!(
            malformed(&[[0, 0, 0, 0, 12].as_slice(), &[0xff; 12]].concat()),
            "an endless key"
        );
        assert!(
            malformed(&[0, 0, 0, 0, 3, (1 << 3) | 2, 1, 0xff]),
            "a bad descriptor"
        );
        assert!(
            read_all(&[], 1, 1 << 20).is_empty(),
            "an empty stream is a clean end"
        );
        assert_eq!(
            read_all(&[0, 0, 0, 0, 0], 1, 1 << 20),
            vec![Ok(FlightData::default())]
        );
    }
}
