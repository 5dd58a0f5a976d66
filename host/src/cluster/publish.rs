//! An upload or a publish sent on to every peer, as the caller, so the same
//! exchanger (`name@sha256:…`, the same bytes) runs next to each node's part of
//! a table, in the caller's namespace or the shared one.

use crate::auth::Principal;
use crate::client;
use crate::state::ServerState;
use arrow_flight::Action;
use futures::TryStreamExt;
use mallard_core::{Error, Result};
use mallard_protocol::upload::{UploadOptions, UploadRequest};
use mallard_protocol::{ExchangerRef, PublishRequest, PushTarget};

/// FailedPrecondition unless this node can upload to peers for `principal`:
/// it has peers and a cluster key (checked before anything is stored here).
pub fn check(state: &ServerState, principal: &Principal) -> Result<String> {
    if state.config.peers.is_empty() {
        return Err(Error::failed_precondition(
            "`to_peers`: this node has no peers (--peer)",
        ));
    }
    state.auth.token_for_peers(principal).ok_or_else(|| {
        Error::failed_precondition("`to_peers` needs a cluster key (--cluster-key-file)")
    })
}

/// Uploads `upload` (without `to_peers`) to every peer with `token` (the
/// uploader's); each peer's report: node, exchanger, sha256, dry run. A peer that
/// refuses fails the call naming it (what was uploaded stays: uploads are
/// content-addressed, so uploading again is harmless).
pub async fn upload_to_peers(
    state: &ServerState,
    token: &str,
    upload: &UploadRequest,
) -> Result<Vec<serde_json::Value>> {
    let options = UploadOptions {
        to_peers: false,
        ..upload.options.clone()
    };
    let body = bytes::Bytes::from(UploadRequest::encode(&upload.component, &options));
    let keys = ["exchanger", "pinned", "sha256", "dry_run"];
    on_every_peer(state, token, "upload_exchanger", body, "uploaded", &keys).await
}

/// Publishes `pinned` (a user's version named by its full sha256) on every peer
/// with `token` (the caller's; each peer applies its own role for the caller);
/// each peer's report: node, exchanger, sha256. A peer without those bytes
/// (upload with `to_peers` first) fails the call naming it; what was published
/// stays (publishing again is harmless: the same bytes are found and reported).
pub async fn publish_on_peers(
    state: &ServerState,
    token: &str,
    pinned: &ExchangerRef,
) -> Result<Vec<serde_json::Value>> {
    let body = bytes::Bytes::from(PublishRequest::encode(pinned, false));
    let keys = ["exchanger", "pinned", "sha256"];
    on_every_peer(state, token, "publish_exchanger", body, "published", &keys).await
}

/// Runs action `kind` with `body` on every peer at once, with `token`; for each
/// peer in order, `{"node": URL}` and the `keys` of its answer, or the first
/// failure naming its node and how many peers had `done` it before.
async fn on_every_peer(
    state: &ServerState,
    token: &str,
    kind: &'static str,
    body: bytes::Bytes,
    done: &str,
    keys: &[&str],
) -> Result<Vec<serde_json::Value>> {
    let calls = state
        .config
        .peers
        .iter()
        .map(|peer| action_on(state, peer, token, kind, body.clone()));
    let answers = futures::future::join_all(calls).await;
    let mut reports = Vec::new();
    for (peer, answer) in state.config.peers.iter().zip(answers) {
        let report = answer.map_err(|e| {
            e.context(format!(
                "{done} on this node and {} peer(s) before it; node {peer}",
                reports.len()
            ))
        })?;
        let mut entry = serde_json::json!({ "node": peer.to_string() });
        for key in keys {
            entry[*key] = report[*key].clone();
        }
        reports.push(entry);
    }
    Ok(reports)
}

async fn action_on(
    state: &ServerState,
    peer: &PushTarget,
    token: &str,
    kind: &'static str,
    body: bytes::Bytes,
) -> Result<serde_json::Value> {
    let mut client =
        client::connect_with_token(peer, token, state.config.push_tls.as_ref()).await?;
    let results: Vec<bytes::Bytes> = client
        .do_action(Action::new(kind, body))
        .await?
        .try_collect()
        .await?;
    let first = results
        .first()
        .ok_or_else(|| Error::internal(format!("the peer answered {kind} with nothing")))?;
    serde_json::from_slice(first)
        .map_err(|e| Error::internal(format!("the peer's {kind} report is not JSON: {e}")))
}
