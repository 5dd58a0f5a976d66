//! HTTP/2 and gRPC settings for bulk Arrow traffic, on servers and clients alike.
//!
//! tonic's defaults (64 KiB–1 MiB windows, 16 KiB frames, 4 MiB messages) are made
//! for small RPCs and roughly halve Flight throughput; these are sized for
//! multi-megabyte record batches.

use mallard_core::{Error, Result};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How a client verifies a `grpc+tls://` server and, for mTLS, proves itself.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// CA certificate (PEM) that signed the server's certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (PEM), for servers that require mTLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientTls {
    /// Trusts servers whose certificates `ca_pem` signed; no client certificate.
    pub fn trusting(ca_pem: Vec<u8>) -> Self {
        Self {
            ca_pem: Some(ca_pem),
            identity: None,
        }
    }

    /// [`ClientTls::trusting`] the CA in a PEM file.
    pub fn trusting_file(ca: &std::path::Path) -> std::io::Result<Self> {
        crate::config::read_pem(ca).map(Self::trusting)
    }
}

/// HTTP/2 per-stream flow-control window.
pub const STREAM_WINDOW_BYTES: u32 = 16 << 20;
/// HTTP/2 per-connection flow-control window.
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;
/// How often a server pings an idle HTTP/2 connection.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a server waits for a ping's answer before closing the connection.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// HTTP/2 maximum frame size (the protocol's ceiling is 16 MiB - 1).
pub const MAX_FRAME_BYTES: u32 = 1 << 20;
/// Largest FlightData message the encoder produces before splitting a batch.
pub const MAX_FLIGHT_DATA_BYTES: usize = 16 << 20;
/// Largest message a client accepts.
pub const CLIENT_MAX_MESSAGE_BYTES: usize = 256 << 20;

/// A tuned channel to `url` (`grpc://host:port`; `grpc+tls://` needs [`connect_with`]).
pub async fn connect(url: &str) -> Result<Channel> {
    connect_with(url, None).await
}

/// A tuned channel to `url`: `grpc://`/`grpc+tcp://` plain, `grpc+tls://` with `tls`
/// (parsed once, as [`connect_to`] dials it).
pub async fn connect_with(url: &str, tls: Option<&ClientTls>) -> Result<Channel> {
    connect_to(&mallard_protocol::PushTarget::parse(url)?, tls).await
}

/// A tuned channel to `target`: TLS exactly when the target says so (verified
/// against `tls`'s CA; never a plaintext fallback), to exactly its host and port.
pub async fn connect_to(
    target: &mallard_protocol::PushTarget,
    tls: Option<&ClientTls>,
) -> Result<Channel> {
    let url = target.to_string();
    let mut endpoint = Endpoint::from_shared(target.endpoint_uri())
        .map_err(|e| Error::invalid_argument(format!("bad server address {url:?}: {e}")))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        // Without it the server must cut what it sends into 16 KiB frames.
        .max_frame_size(MAX_FRAME_BYTES)
        .http2_keep_alive_interval(Duration::from_secs(30));
    if target.tls {
        let tls = tls.ok_or_else(|| {
            Error::invalid_argument(format!(
                "{url} uses TLS; give the CA certificate that signed its certificate"
            ))
        })?;
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &tls.ca_pem {
            config = config.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| Error::invalid_argument(format!("TLS settings for {url}: {e}")))?;
    }
    endpoint
        .connect()
        .await
        .map_err(|e| Error::unavailable(format!("cannot connect to {url}: {e}")))
}
