//! An upload sent on to every peer, as the uploader, so the same exchanger
//! (`name@sha256:…`, the same bytes) runs next to each node's part of a table.

use crate::auth::Principal;
use crate::client;
use crate::state::ServerState;
use arrow_flight::Action;
use futures::TryStreamExt;
use mallard_core::{Error, Result};
use mallard_protocol::PushTarget;
use mallard_protocol::upload::{UploadOptions, UploadRequest};

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
    let uploads = state
        .config
        .peers
        .iter()
        .map(|peer| upload_to(state, peer, token, body.clone()));
    let answers = futures::future::join_all(uploads).await;
    let mut reports = Vec::new();
    for (peer, answer) in state.config.peers.iter().zip(answers) {
        let report = answer.map_err(|e| {
            e.context(format!(
                "uploaded on this node and {} peer(s) before it; node {peer}",
                reports.len()
            ))
        })?;
        reports.push(serde_json::json!({
            "node": peer.to_string(),
            "exchanger": report["exchanger"],
            "pinned": report["pinned"],
            "sha256": report["sha256"],
            "dry_run": report["dry_run"],
        }));
    }
    Ok(reports)
}

async fn upload_to(
    state: &ServerState,
    peer: &PushTarget,
    token: &str,
    body: bytes::Bytes,
) -> Result<serde_json::Value> {
    let mut client =
        client::connect_with_token(peer, token, state.config.push_tls.as_ref()).await?;
    let results: Vec<bytes::Bytes> = client
        .do_action(Action::new("upload_exchanger", body))
        .await?
        .try_collect()
        .await?;
    let first = results
        .first()
        .ok_or_else(|| Error::internal("the peer answered the upload with nothing"))?;
    serde_json::from_slice(first)
        .map_err(|e| Error::internal(format!("the peer's upload report is not JSON: {e}")))
}
