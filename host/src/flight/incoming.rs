//! What clients stream in (`DoPut`, `DoExchange`), decoded below tonic's codec
//! so each message's Arrow body is copied once, into memory Arrow can use as
//! it is.
//!
//! tonic joins every received HTTP/2 frame into one buffer (a copy), and the
//! body it hands out starts wherever the protobuf fields before it left it, so
//! Arrow's decoder copies every buffer again to align it. [`FlightDataReader`]
//! hands the frames to [`FlightDataParser`] (`mallard-protocol`, fuzzed there),
//! which copies each body field straight from the frames into a fresh
//! 64-byte-aligned buffer. Limits and statuses are tonic's: a message longer than
//! the limit is OutOfRange before anything is allocated, a compressed or
//! truncated message is Internal, a client that cancels ends the stream (its put
//! is then told apart by [`crate::flight::body_outcome`]); a message that is not
//! FlightData is InvalidArgument.

use arrow_flight::FlightData;
use futures::Stream;
use futures::stream::BoxStream;
use http_body::Body as _;
use mallard_protocol::flight_data::{FlightDataError, FlightDataParser};
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

/// The status a refused stream ends with.
fn status(error: FlightDataError) -> Status {
    let code = match error {
        FlightDataError::TooLarge { .. } => Code::OutOfRange,
        FlightDataError::Compressed | FlightDataError::Truncated => Code::Internal,
        FlightDataError::Malformed(_) => Code::InvalidArgument,
    };
    Status::new(code, error.to_string())
}

/// Decodes a request body of gRPC-framed FlightData messages.
pub struct FlightDataReader {
    body: Body,
    parser: FlightDataParser,
    ended: bool,
}

impl FlightDataReader {
    /// Reads `body`, refusing messages longer than `max_message_bytes`.
    pub fn new(body: Body, max_message_bytes: usize) -> Self {
        Self {
            body,
            parser: FlightDataParser::new(max_message_bytes),
            ended: false,
        }
    }
}

impl Stream for FlightDataReader {
    type Item = Result<FlightData, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match this.parser.next_message() {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) => {}
                Err(e) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(status(e))));
                }
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.parser.push(data);
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
                    if let Err(e) = this.parser.finish() {
                        return Poll::Ready(Some(Err(status(e))));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_flight::FlightDescriptor;
    use bytes::Bytes;
    use futures::StreamExt;
    use prost::Message;

    fn framed(data: &FlightData) -> Vec<u8> {
        mallard_protocol::flight_data::framed(&data.encode_to_vec())
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
            let wire = mallard_protocol::flight_data::framed(&message);
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
