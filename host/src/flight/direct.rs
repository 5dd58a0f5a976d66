//! The Flight data methods served below tonic's codec, so a stream's Arrow
//! bytes are not copied on their way between the socket and Arrow.
//!
//! Out (`DoGet`, `DoExchange`): tonic encodes every response message into one
//! contiguous buffer, copying each FlightData's Arrow body, most of a stream's
//! bytes, once more. Here each [`Outgoing`] message reaches hyper as its
//! [`Outgoing::wire_pieces`]: the Arrow buffers pass through, and h2 writes a
//! large piece to the socket without copying it. The bytes on the wire are
//! exactly what tonic would have sent, and a stream ends with the same
//! trailers (the status, its message, its metadata: the receipts).
//!
//! In (`DoPut`, `DoExchange`): [`FlightDataReader`] copies each body once, from
//! the HTTP/2 frames into aligned memory, where tonic copied it into its buffer
//! and Arrow copied it again to align it.
//!
//! Every other method goes to tonic unchanged.

use crate::flight::MallardService;
use crate::flight::incoming::{FlightDataReader, Incoming};
use arrow_flight::{PutResult, Ticket};
use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use http_body::{Body as _, Frame};
use mallard_protocol::outgoing::Outgoing;
use prost::Message;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tower_service::Service;

const DO_GET_PATH: &str = "/arrow.flight.protocol.FlightService/DoGet";
const DO_PUT_PATH: &str = "/arrow.flight.protocol.FlightService/DoPut";
const DO_EXCHANGE_PATH: &str = "/arrow.flight.protocol.FlightService/DoExchange";

/// The Flight service with `DoGet`, `DoPut` and `DoExchange` served here; every
/// other call goes to `inner` (tonic's generated server for the same service).
#[derive(Clone)]
pub struct DirectFlight<S> {
    inner: S,
    service: Arc<MallardService>,
    max_message_bytes: usize,
}

impl<S> DirectFlight<S> {
    /// `inner` for the other methods; `service` answers these, reading client
    /// messages of at most `max_message_bytes`.
    pub fn new(inner: S, service: Arc<MallardService>, max_message_bytes: usize) -> Self {
        Self {
            inner,
            service,
            max_message_bytes,
        }
    }
}

impl<S: NamedService> NamedService for DirectFlight<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for DirectFlight<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let service = self.service.clone();
        let max = self.max_message_bytes;
        match request.uri().path() {
            DO_GET_PATH => Box::pin(async move { Ok(serve_do_get(&service, request, max).await) }),
            DO_PUT_PATH => Box::pin(async move {
                let request = incoming_request(request, max);
                Ok(answer(service.do_put_incoming(request).await))
            }),
            DO_EXCHANGE_PATH => Box::pin(async move {
                let request = incoming_request(request, max);
                Ok(answer(service.do_exchange_incoming(request).await))
            }),
            _ => Box::pin(self.inner.call(request)),
        }
    }
}

/// Reads the ticket, runs the service's `do_get` and answers its stream as
/// [`FlightDataFrames`]; a refusal before the stream is a trailers-only answer,
/// as tonic gives it.
async fn serve_do_get(
    service: &MallardService,
    request: http::Request<Body>,
    max_ticket_bytes: usize,
) -> http::Response<Body> {
    let (parts, body) = request.into_parts();
    let ticket = match read_unary_body(body, max_ticket_bytes)
        .await
        .and_then(|bytes| unary_message::<Ticket>(&bytes, max_ticket_bytes))
    {
        Ok(ticket) => ticket,
        Err(status) => return status.into_http(),
    };
    let request = tonic::Request::from_http(http::Request::from_parts(parts, ticket));
    answer(service.do_get_outgoing(request).await)
}

/// A streaming request whose messages [`FlightDataReader`] decodes.
fn incoming_request(
    request: http::Request<Body>,
    max_message_bytes: usize,
) -> tonic::Request<Incoming> {
    let (parts, body) = request.into_parts();
    let incoming: Incoming = Box::pin(FlightDataReader::new(body, max_message_bytes));
    tonic::Request::from_http(http::Request::from_parts(parts, incoming))
}

/// A handler's answer as an HTTP response: its messages as [`GrpcFrames`], or
/// a refusal before any as a trailers-only answer, as tonic gives it.
fn answer<S, M>(response: Result<tonic::Response<S>, Status>) -> http::Response<Body>
where
    S: Stream<Item = Result<M, Status>> + Unpin + Send + 'static,
    M: WireMessage,
{
    match response {
        Err(status) => status.into_http(),
        Ok(response) => {
            let (metadata, messages, extensions) = response.into_parts();
            let mut http = http::Response::new(Body::new(GrpcFrames::new(messages)));
            *http.headers_mut() = metadata.into_headers();
            http.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            *http.extensions_mut() = extensions;
            http
        }
    }
}

/// A response message that knows its gRPC wire pieces.
pub trait WireMessage {
    /// The prefix and the message, in pieces sent in order.
    fn wire_pieces(self) -> Result<Vec<Bytes>, Status>;
}

impl WireMessage for Outgoing {
    fn wire_pieces(self) -> Result<Vec<Bytes>, Status> {
        Outgoing::wire_pieces(self).map_err(|e| Status::internal(e.to_string()))
    }
}

impl WireMessage for PutResult {
    fn wire_pieces(self) -> Result<Vec<Bytes>, Status> {
        let length = u32::try_from(self.encoded_len())
            .map_err(|_| Status::internal("a put result larger than 4 GiB"))?;
        let mut wire = BytesMut::with_capacity(5 + length as usize);
        wire.put_u8(0);
        wire.put_u32(length);
        self.encode(&mut wire)
            .map_err(|e| Status::internal(format!("encoding a put result: {e}")))?;
        Ok(vec![wire.freeze()])
    }
}

/// A unary request's body, refused once it passes one message of
/// `max_message_bytes` and its 5-byte gRPC prefix.
async fn read_unary_body(mut body: Body, max_message_bytes: usize) -> Result<BytesMut, Status> {
    let mut bytes = BytesMut::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame?.into_data() {
            if bytes.len() + data.len() > max_message_bytes + 5 {
                return Err(too_large(max_message_bytes));
            }
            bytes.put(data);
        }
    }
    Ok(bytes)
}

fn too_large(max_message_bytes: usize) -> Status {
    Status::resource_exhausted(format!(
        "the request is larger than {max_message_bytes} bytes"
    ))
}

/// The one message of a unary gRPC request body: a 5-byte prefix (uncompressed
/// flag, big-endian length) and exactly that many bytes of `M`.
fn unary_message<M: Message + Default>(body: &[u8], max_message_bytes: usize) -> Result<M, Status> {
    let Some((prefix, message)) = body.split_first_chunk::<5>() else {
        return Err(Status::invalid_argument("the request carries no message"));
    };
    if prefix[0] != 0 {
        return Err(Status::unimplemented(
            "compressed requests are not supported",
        ));
    }
    let declared = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if declared > max_message_bytes {
        return Err(too_large(max_message_bytes));
    }
    if declared != message.len() {
        return Err(Status::invalid_argument(format!(
            "the request must carry exactly one message: its prefix declares {declared} bytes, \
             {} follow",
            message.len()
        )));
    }
    M::decode(message)
        .map_err(|e| Status::invalid_argument(format!("the request does not decode: {e}")))
}

/// A stream of messages as a gRPC response body: each message as its wire
/// pieces; after the stream, trailers with its status (an `Ok` status carrying
/// metadata is a clean end with those trailers, as in tonic).
pub struct GrpcFrames<S> {
    messages: S,
    pieces: VecDeque<Bytes>,
    ended: bool,
}

impl<S> GrpcFrames<S> {
    /// The response body for `messages`.
    pub fn new(messages: S) -> Self {
        Self {
            messages,
            pieces: VecDeque::new(),
            ended: false,
        }
    }
}

impl<S, M> http_body::Body for GrpcFrames<S>
where
    S: Stream<Item = Result<M, Status>> + Unpin,
    M: WireMessage,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        loop {
            if let Some(piece) = this.pieces.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let end = match ready!(this.messages.poll_next_unpin(cx)) {
                Some(Ok(message)) => match message.wire_pieces() {
                    Ok(pieces) => {
                        this.pieces.extend(pieces);
                        continue;
                    }
                    Err(status) => status,
                },
                Some(Err(status)) => status,
                None => Status::ok(""),
            };
            this.ended = true;
            return Poll::Ready(Some(Ok(Frame::trailers(trailers(&end)))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.pieces.is_empty()
    }
}

/// The trailers that end a stream with `status`.
fn trailers(status: &Status) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.clear();
        let _ =
            Status::internal("the stream's status does not fit in a trailer").add_header(&mut map);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut wire = vec![0];
        wire.extend_from_slice(&(message.len() as u32).to_be_bytes());
        wire.extend_from_slice(message);
        wire
    }

    #[test]
    fn a_unary_request_carries_exactly_one_uncompressed_message_within_the_limit() {
        let ticket = Ticket::new("SELECT 1");
        let wire = framed(&ticket.encode_to_vec());
        assert_eq!(unary_message::<Ticket>(&wire, 64).unwrap(), ticket);
        let code = |body: &[u8], max| unary_message::<Ticket>(body, max).unwrap_err().code();
        assert_eq!(code(&[], 64), tonic::Code::InvalidArgument);
        assert_eq!(code(&wire[..4], 64), tonic::Code::InvalidArgument);
        assert_eq!(
            code(&wire[..wire.len() - 1], 64),
            tonic::Code::InvalidArgument
        );
        let mut two = wire.clone();
        two.extend_from_slice(&wire);
        assert_eq!(code(&two, 64), tonic::Code::InvalidArgument);
        let mut compressed = wire.clone();
        compressed[0] = 1;
        assert_eq!(code(&compressed, 64), tonic::Code::Unimplemented);
        assert_eq!(code(&wire, wire.len() - 6), tonic::Code::ResourceExhausted);
        assert!(
            unary_message::<Ticket>(&wire, wire.len() - 5).is_ok(),
            "at the limit"
        );
        assert_eq!(
            code(&framed(&[0xff, 0xff, 0xff]), 64),
            tonic::Code::InvalidArgument
        );
    }
}
