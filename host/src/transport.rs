//! HTTP/2 and gRPC settings for bulk Arrow traffic, on servers and clients alike.
//!
//! tonic's defaults (64 KiB–1 MiB windows, 16 KiB frames, 4 MiB messages) are made
//! for small RPCs and roughly halve Flight throughput; these are sized for
//! multi-megabyte record batches.

use crate::error::{Error, Result};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// HTTP/2 per-stream flow-control window.
pub const STREAM_WINDOW_BYTES: u32 = 16 << 20;
/// HTTP/2 per-connection flow-control window.
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;
/// HTTP/2 maximum frame size (the protocol's ceiling is 16 MiB - 1).
pub const MAX_FRAME_BYTES: u32 = 1 << 20;
/// Largest FlightData message the encoder produces before splitting a batch.
pub const MAX_FLIGHT_DATA_BYTES: usize = 16 << 20;
/// Largest message a client accepts.
pub const CLIENT_MAX_MESSAGE_BYTES: usize = 256 << 20;

/// A tuned channel to `url` (`grpc://host:port` or `http://host:port`).
pub async fn connect(url: &str) -> Result<Channel> {
    let http = url
        .replacen("grpc://", "http://", 1)
        .replacen("grpc+tcp://", "http://", 1);
    let endpoint = Endpoint::from_shared(http)
        .map_err(|e| Error::InvalidArgument(format!("bad server address {url:?}: {e}")))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .http2_keep_alive_interval(Duration::from_secs(30));
    endpoint
        .connect()
        .await
        .map_err(|e| Error::Unavailable(format!("cannot connect to {url}: {e}")))
}
