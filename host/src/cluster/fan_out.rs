//! One FlightInfo for the parts of a table or query that live on several nodes.
//!
//! A `get_flight_info` carrying `x-mallard-nodes: all` is answered by this node
//! and by each of its peers: the node asks every peer for the same descriptor,
//! as the caller (a short-lived cluster token for the caller's user, so each peer
//! applies its own role and namespaces), checks that every part has the same
//! schema, and returns all the endpoints, the peers' with their locations. The
//! client reads each endpoint from its node (pyarrow per endpoint, the ADBC
//! Flight SQL driver in parallel, reusing its bearer token, which the peers
//! accept). A peer that fails to answer fails the call, naming the node: a
//! partial answer would be a silently truncated table.

use crate::auth::Principal;
use crate::client;
use crate::state::ServerState;
use arrow::datatypes::Schema;
use arrow_flight::{FlightDescriptor, FlightInfo, IpcMessage, Location};
use mallard_core::{Error, Result};
use mallard_protocol::PushTarget;
use std::sync::Arc;
use std::time::Duration;
use tonic::metadata::MetadataMap;

/// The request header that asks for every node's part (`all`) or this node's (`local`).
pub const NODES_HEADER: &str = "x-mallard-nodes";
/// How long a node waits for one peer's part of the answer.
pub const PEER_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the call asked for every node's part; InvalidArgument for a value
/// other than `all` or `local`.
pub fn wants_every_node(metadata: &MetadataMap) -> Result<bool> {
    match metadata.get(NODES_HEADER).map(|v| v.to_str()) {
        None | Some(Ok("local")) => Ok(false),
        Some(Ok("all")) => Ok(true),
        Some(_) => Err(Error::invalid_argument(format!(
            "{NODES_HEADER} must be `all` or `local`"
        ))),
    }
}

/// `local`, this node's answer, joined by every peer's answer for `descriptor`.
pub async fn gather(
    state: &Arc<ServerState>,
    principal: &Principal,
    descriptor: FlightDescriptor,
    local: FlightInfo,
) -> Result<FlightInfo> {
    let peers = &state.config.peers;
    if peers.is_empty() {
        return Ok(local);
    }
    let token = state.auth.token_for_peers(principal).ok_or_else(|| {
        Error::failed_precondition("this node has peers but no cluster key (--cluster-key-file)")
    })?;
    let local_schema = schema_of(&local)?;
    let answers = futures::future::join_all(
        peers
            .iter()
            .map(|peer| ask(state, peer, &token, descriptor.clone())),
    )
    .await;
    let mut info = local;
    for (peer, answer) in peers.iter().zip(answers) {
        let part = answer.map_err(|e| e.context(format!("node {peer}")))?;
        let schema = schema_of(&part)?;
        if schema.fields() != local_schema.fields() {
            return Err(Error::failed_precondition(format!(
                "node {peer} answers with a different schema ({schema}) than this node \
                 ({local_schema}); the parts cannot be read as one"
            )));
        }
        info.total_records = add_known(info.total_records, part.total_records);
        info.total_bytes = add_known(info.total_bytes, part.total_bytes);
        for mut endpoint in part.endpoint {
            // No location means "the service that answered": here, the peer.
            if endpoint.location.is_empty() {
                endpoint.location.push(Location {
                    uri: peer.to_string(),
                });
            }
            info.endpoint.push(endpoint);
        }
    }
    info.ordered = false;
    Ok(info)
}

/// The schema an answer declares (its IPC bytes shared, not the answer copied).
fn schema_of(info: &FlightInfo) -> Result<Schema> {
    Ok(Schema::try_from(IpcMessage(info.schema.clone()))?)
}

/// The sum of two counts where -1 means unknown.
fn add_known(a: i64, b: i64) -> i64 {
    if a < 0 || b < 0 {
        -1
    } else {
        a.saturating_add(b)
    }
}

/// One peer's own answer for `descriptor`, asked as the caller.
async fn ask(
    state: &ServerState,
    peer: &PushTarget,
    token: &str,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo> {
    let call = async {
        let mut client =
            client::connect_with_token(peer, token, state.config.push_tls.as_ref()).await?;
        Ok::<_, Error>(client.get_flight_info(descriptor).await?)
    };
    tokio::time::timeout(PEER_ANSWER_TIMEOUT, call)
        .await
        .map_err(|_| {
            Error::deadline_exceeded(format!(
                "no answer within {} s",
                PEER_ANSWER_TIMEOUT.as_secs()
            ))
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_counts_stay_unknown() {
        assert_eq!(add_known(2, 3), 5);
        assert_eq!(add_known(-1, 3), -1);
        assert_eq!(add_known(2, -1), -1);
        assert_eq!(add_known(i64::MAX, 1), i64::MAX);
    }

    #[test]
    fn the_header_says_all_or_local() {
        let mut metadata = MetadataMap::new();
        assert!(!wants_every_node(&metadata).unwrap());
        metadata.insert(NODES_HEADER, "all".parse().unwrap());
        assert!(wants_every_node(&metadata).unwrap());
        metadata.insert(NODES_HEADER, "local".parse().unwrap());
        assert!(!wants_every_node(&metadata).unwrap());
        metadata.insert(NODES_HEADER, "peers".parse().unwrap());
        assert!(wants_every_node(&metadata).is_err());
    }
}
