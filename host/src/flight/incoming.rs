//! What clients stream in (`DoPut`, `DoExchange`), decoded below tonic's codec
//! so each message's Arrow body is copied once, into memory Arrow can use as
//! it is.
//!
//! tonic joins every received HTTP/2 frame into one buffer (a copy), and the
//! body it hands out starts wherever the protobuf fields before it left it, so
//! Arrow's decoder copies every buffer again to align it. [`FlightDataReader`]
//! parses FlightData's protobuf fields as the frames arrive and copies the body
//! field straight from the frames into a fresh 64-byte-aligned buffer; the
//! small fields are taken as they are. Limits and statuses are tonic's: a
//! message longer than the limit is OutOfRange before anything is allocated, a
//! compressed or truncated message is Internal, a client that cancels ends the
//! stream (its put is then told apart by [`crate::flight::body_outcome`]).

use arrow::buffer::{Buffer, MutableBuffer};
use arrow_flight::{FlightData, FlightDescriptor};
use bytes::{Buf, Bytes};
use futures::Stream;
use futures::stream::BoxStream;
use http_body::Body as _;
use prost::Message;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tonic::body::Body;
use tonic::{Code, Status, Streaming};

/// The messages a client streams in, however they were decoded.
pub type Incoming = BoxStream<'static, Result<FlightData, Status>>;

/// tonic's decoded stream as [`Incoming`] (for the trait's own entry points).
pub fn from_tonic(streaming: Streaming<FlightData>) -> Incoming {
    Box::pin(streaming)
}

/// Field numbers of FlightData.
const DESCRIPTOR: u32 = 1;
const HEADER: u32 = 2;
const APP_METADATA: u32 = 3;
const BODY: u32 = 1000;

/// Decodes a request body of gRPC-framed FlightData messages.
pub struct FlightDataReader {
    body: Body,
    max_message_bytes: usize,
    /// Received bytes not parsed yet, as the frames brought them.
    received: VecDeque<Bytes>,
    available: usize,
    message: Option<Partial>,
    ended: bool,
}

/// The message being read.
struct Partial {
    /// Bytes of it not parsed yet.
    remaining: usize,
    data: FlightData,
    /// The body field being filled, and how long it is.
    body: Option<(MutableBuffer, usize)>,
}

impl FlightDataReader {
    /// Reads `body`, refusing messages longer than `max_message_bytes`.
    pub fn new(body: Body, max_message_bytes: usize) -> Self {
        Self {
            body,
            max_message_bytes,
            received: VecDeque::new(),
            available: 0,
            message: None,
            ended: false,
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

    /// The next `n` received bytes (sliced when they sit in one frame).
    fn take(&mut self, n: usize) -> Bytes {
        if n == 0 {
            return Bytes::new();
        }
        let front = self.received.front().expect("taken only once arrived");
        if front.len() >= n {
            let taken = front.slice(..n);
            self.consume(n);
            return taken;
        }
        let joined = Bytes::from(peek(&self.received, n));
        self.consume(n);
        joined
    }

    /// Parses what has arrived: `Ok(Some)` a whole message, `Ok(None)` more
    /// bytes are needed.
    fn parse(&mut self) -> Result<Option<FlightData>, Status> {
        loop {
            let Some(message) = &mut self.message else {
                if self.available < 5 {
                    return Ok(None);
                }
                let prefix = peek(&self.received, 5);
                if prefix[0] != 0 {
                    return Err(Status::internal(
                        "protocol error: received a compressed message; this server \
                         accepts no grpc-encoding",
                    ));
                }
                let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
                if len > self.max_message_bytes {
                    return Err(Status::out_of_range(format!(
                        "Error, decoded message length too large: found {len} bytes, the limit \
                         is: {} bytes",
                        self.max_message_bytes
                    )));
                }
                self.consume(5);
                self.message = Some(Partial {
                    remaining: len,
                    data: FlightData::default(),
                    body: None,
                });
                continue;
            };
            if let Some((buffer, len)) = &mut message.body {
                while buffer.len() < *len && self.available > 0 {
                    let front = self.received.front_mut().expect("available");
                    let n = front.len().min(*len - buffer.len());
                    buffer.extend_from_slice(&front[..n]);
                    self.available -= n;
                    if n == front.len() {
                        self.received.pop_front();
                    } else {
                        front.advance(n);
                    }
                }
                if buffer.len() < *len {
                    return Ok(None);
                }
                let (buffer, _) = message.body.take().expect("just filled");
                message.data.data_body = Bytes::from(Buffer::from(buffer));
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
            let (length, length_len) = match key & 7 {
                2 => match varint(&head[key_len..]) {
                    Some((length, n)) => (length, n),
                    None if head.len() - key_len >= 10.min(remaining - key_len) => {
                        return Err(malformed("a field length that is no varint"));
                    }
                    None => return Ok(None),
                },
                0 => match varint(&head[key_len..]) {
                    Some((_, n)) => (0, n),
                    None if head.len() - key_len >= 10.min(remaining - key_len) => {
                        return Err(malformed("a varint field that is no varint"));
                    }
                    None => return Ok(None),
                },
                1 => (8, 0),
                5 => (4, 0),
                _ => return Err(malformed("a field of an unsupported wire type")),
            };
            let length = usize::try_from(length).map_err(|_| malformed("a field length"))?;
            let field_len = key_len + length_len + length;
            if field_len > remaining {
                return Err(malformed("a field longer than its message"));
            }
            if key & 7 == 2 && field == BODY {
                let message = self.message.as_mut().expect("a message");
                message.remaining -= field_len;
                message.body = Some((MutableBuffer::with_capacity(length), length));
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
            match (key & 7, field) {
                // A repeated message field merges into the one before, as in protobuf.
                (2, DESCRIPTOR) => message
                    .data
                    .flight_descriptor
                    .get_or_insert_with(FlightDescriptor::default)
                    .merge(value)
                    .map_err(|e| malformed(&format!("a descriptor: {e}")))?,
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
    for chunk in received {
        let take = (n - out.len()).min(chunk.len());
        out.extend_from_slice(&chunk[..take]);
        if out.len() == n {
            break;
        }
    }
    out
}

fn malformed(what: &str) -> Status {
    Status::invalid_argument(format!("a FlightData message that does not decode: {what}"))
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

impl Stream for FlightDataReader {
    type Item = Result<FlightData, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match this.parse() {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) => {}
                Err(status) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(status)));
                }
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        this.available += data.len();
                        this.received.push_back(data);
                    }
                }
                // A client that cancels its request ends it, as in tonic.
                Some(Err(status)) if status.code() == Code::Cancelled => this.ended = true,
                Some(Err(status)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(status)));
                }
                None => {
                    this.ended = true;
                    if this.available > 0 || this.message.is_some() {
                        return Poll::Ready(Some(Err(Status::internal(
                            "Unexpected EOF decoding stream.",
                        ))));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn framed(data: &FlightData) -> Vec<u8> {
        let message = data.encode_to_vec();
        let mut wire = vec![0];
        wire.extend_from_slice(&(message.len() as u32).to_be_bytes());
        wire.extend_from_slice(&message);
        wire
    }

    fn sample(i: u8, body_len: usize) -> FlightData {
        FlightData {
            flight_descriptor: (i == 0).then(|| FlightDescriptor::new_path(vec!["t".into()])),
            data_header: Bytes::from(vec![i; 40]),
            app_metadata: Bytes::from(vec![i; (i % 2) as usize]),
            data_body: Bytes::from((0..body_len).map(|b| (b % 251) as u8).collect::<Vec<_>>()),
        }
    }

    /// Reads `wire` delivered in frames of `frame` bytes.
    async fn read(wire: Vec<u8>, frame: usize, max: usize) -> Vec<Result<FlightData, Status>> {
        let frames: Vec<Result<http_body::Frame<Bytes>, Status>> = wire
            .chunks(frame)
            .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let body = Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )));
        FlightDataReader::new(body, max).collect().await
    }

    #[tokio::test]
    async fn messages_decode_as_prost_does_whatever_the_frame_boundaries() {
        let messages: Vec<FlightData> = (0..4).map(|i| sample(i, 1000 * i as usize)).collect();
        let wire: Vec<u8> = messages.iter().flat_map(framed).collect();
        for frame in [1, 2, 3, 7, 64, 999, 4096, wire.len()] {
            let read: Vec<FlightData> = read(wire.clone(), frame, 1 << 20)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
            assert_eq!(read, messages, "frames of {frame} bytes");
            for message in read.iter().filter(|m| !m.data_body.is_empty()) {
                assert_eq!(message.data_body.as_ptr() as usize % 64, 0, "aligned body");
            }
        }
    }

    /// Mutated messages in random frames: the reader never panics or hangs, and
    /// whatever it accepts is what prost reads from the same bytes.
    #[tokio::test]
    async fn mutated_messages_are_refused_or_read_as_prost_reads_them() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let samples: Vec<Vec<u8>> = (0..4)
            .map(|i| sample(i, 300 * i as usize).encode_to_vec())
            .collect();
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..3000 {
            let mut message = samples[rng.random_range(0..samples.len())].clone();
            for _ in 0..rng.random_range(1..4) {
                match rng.random_range(0..3) {
                    0 if !message.is_empty() => {
                        let at = rng.random_range(0..message.len());
                        message[at] = rng.random();
                    }
                    1 if !message.is_empty() => {
                        message.truncate(rng.random_range(0..message.len()))
                    }
                    _ => message.extend((0..rng.random_range(1..8)).map(|_| rng.random::<u8>())),
                }
            }
            let mut wire = vec![0];
            wire.extend_from_slice(&(message.len() as u32).to_be_bytes());
            wire.extend_from_slice(&message);
            let frame = rng.random_range(1..64);
            let read = read(wire, frame, 1 << 20).await;
            match read.as_slice() {
                [Ok(ours)] => {
                    accepted += 1;
                    if let Ok(theirs) = FlightData::decode(message.as_slice()) {
                        assert_eq!(ours, &theirs);
                    }
                }
                [Err(_)] => refused += 1,
                other => panic!("one message read as {} results", other.len()),
            }
        }
        assert!(
            accepted > 100 && refused > 100,
            "{accepted} accepted, {refused} refused"
        );
    }

    #[tokio::test]
    async fn unknown_fields_are_skipped() {
        let mut message = sample(1, 10).encode_to_vec();
        // Field 7 as a varint, field 8 as fixed64, field 9 as bytes, field 10 as fixed32.
        message.extend_from_slice(&[7 << 3, 0x96, 0x01]);
        message.extend_from_slice(&[(8 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8]);
        message.extend_from_slice(&[(9 << 3) | 2, 2, 0xaa, 0xbb]);
        message.extend_from_slice(&[(10 << 3) | 5, 1, 2, 3, 4]);
        let mut wire = vec![0];
        wire.extend_from_slice(&(message.len() as u32).to_be_bytes());
        wire.extend_from_slice(&message);
        let read = read(wire, 3, 1 << 20).await;
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].as_ref().unwrap(), &sample(1, 10));
    }

    #[tokio::test]
    async fn bad_streams_end_with_tonics_statuses() {
        let good = framed(&sample(1, 100));
        let code =
            |r: &[Result<FlightData, Status>]| r.last().unwrap().as_ref().unwrap_err().code();
        // Over the limit: refused from the prefix, nothing allocated.
        let mut huge = vec![0];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(code(&read(huge, 5, 1 << 20).await), Code::OutOfRange);
        assert_eq!(
            code(&read(good.clone(), 7, good.len() - 6).await),
            Code::OutOfRange
        );
        assert!(
            read(good.clone(), 7, good.len() - 5).await[0].is_ok(),
            "at the limit"
        );
        // Compressed.
        let mut compressed = good.clone();
        compressed[0] = 1;
        assert_eq!(code(&read(compressed, 7, 1 << 20).await), Code::Internal);
        // Cut short, in the prefix, in the fields and in the body.
        for cut in [3, 10, good.len() - 1] {
            let read = read(good[..cut].to_vec(), 4, 1 << 20).await;
            assert_eq!(code(&read), Code::Internal, "cut at {cut}");
        }
        // A field longer than its message.
        let mut lying = vec![0, 0, 0, 0, 4, (2 << 3) | 2, 100, 1, 2];
        assert_eq!(
            code(&read(lying.clone(), 2, 1 << 20).await),
            Code::InvalidArgument
        );
        // A body field longer than its message.
        lying = vec![0, 0, 0, 0, 5, 0xc2, 0x3e, 0x7f, 1, 2];
        assert_eq!(code(&read(lying, 2, 1 << 20).await), Code::InvalidArgument);
        // A group (wire type 3) and a key that never ends.
        let group = vec![0, 0, 0, 0, 1, (4 << 3) | 3];
        assert_eq!(code(&read(group, 1, 1 << 20).await), Code::InvalidArgument);
        let endless = [vec![0, 0, 0, 0, 12], vec![0xff; 12]].concat();
        assert_eq!(
            code(&read(endless, 5, 1 << 20).await),
            Code::InvalidArgument
        );
        // A descriptor that does not decode.
        let bad_descriptor = vec![0, 0, 0, 0, 3, (1 << 3) | 2, 1, 0xff];
        assert_eq!(
            code(&read(bad_descriptor, 1, 1 << 20).await),
            Code::InvalidArgument
        );
        // An empty stream is a clean end; an empty message is a message.
        assert!(read(vec![], 1, 1 << 20).await.is_empty());
        let empty = read(vec![0, 0, 0, 0, 0], 1, 1 << 20).await;
        assert_eq!(empty[0].as_ref().unwrap(), &FlightData::default());
    }
}
