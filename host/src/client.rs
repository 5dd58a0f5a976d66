//! A Flight client for Mallard servers (used by `push_table`, the demo and tests):
//! tuned transport, Basic handshake, bearer token on every call.

use crate::auth::basic_header;
use crate::transport;
use arrow_flight::FlightClient;
use arrow_flight::flight_service_client::FlightServiceClient;
use mallard_core::{Error, Result};
use tonic::metadata::MetadataValue;

/// Connects to `url` and authenticates with a Basic handshake; the returned client
/// sends the issued bearer token on every call.
pub async fn connect(url: &str, user: &str, password: &str) -> Result<FlightClient> {
    connect_with(url, user, password, None).await
}

/// [`connect`], with TLS settings for `grpc+tls://` servers.
pub async fn connect_with(
    url: &str,
    user: &str,
    password: &str,
    tls: Option<&transport::ClientTls>,
) -> Result<FlightClient> {
    connect_to(
        &mallard_protocol::PushTarget::parse(url)?,
        user,
        password,
        tls,
    )
    .await
}

/// An authenticated client of `target`, dialled exactly as parsed (see
/// [`transport::connect_to`]): the credentials go nowhere else.
pub async fn connect_to(
    target: &mallard_protocol::PushTarget,
    user: &str,
    password: &str,
    tls: Option<&transport::ClientTls>,
) -> Result<FlightClient> {
    let mut client = tuned(target, tls).await?;
    client
        .add_header("authorization", &basic_header(user, password))
        .map_err(|e| Error::internal(format!("header: {e}")))?;
    let token = client
        .handshake(Vec::<u8>::new())
        .await
        .map_err(Error::from)?;
    let token = String::from_utf8(token.to_vec())
        .map_err(|_| Error::internal("server returned a non-UTF-8 token"))?;
    bearer(&mut client, &token)?;
    Ok(client)
}

/// A client of `target` over a tuned channel, taking messages as large as a
/// server sends; no credentials yet.
async fn tuned(
    target: &mallard_protocol::PushTarget,
    tls: Option<&transport::ClientTls>,
) -> Result<FlightClient> {
    let channel = transport::connect_to(target, tls).await?;
    let inner = FlightServiceClient::new(channel)
        .max_decoding_message_size(transport::CLIENT_MAX_MESSAGE_BYTES)
        .max_encoding_message_size(transport::CLIENT_MAX_MESSAGE_BYTES);
    Ok(FlightClient::new_from_inner(inner))
}

/// Makes `client` send `token` as its bearer token on every call.
fn bearer(client: &mut FlightClient, token: &str) -> Result<()> {
    let value: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| Error::internal("a bearer token that is not a header value"))?;
    client.metadata_mut().insert("authorization", value);
    Ok(())
}

/// A client of `target` that sends `token` as its bearer token (a cluster token,
/// for a node acting for its caller); no handshake.
pub async fn connect_with_token(
    target: &mallard_protocol::PushTarget,
    token: &str,
    tls: Option<&transport::ClientTls>,
) -> Result<FlightClient> {
    let mut client = tuned(target, tls).await?;
    bearer(&mut client, token)?;
    Ok(client)
}
