//! `push_table`: stream a table from this server straight into another server's
//! `do_put`, without the data passing through the requesting client.
//!
//! Only targets the operator allowed (`--push-allow`, by default the addresses
//! this process serves) are ever connected to, so the server's push credentials
//! cannot be sent to a listener of the caller's choosing, and push is no port
//! scanner. A target that stops reading is cut off after the stall timeout.

use crate::client;
use crate::db::query;
use crate::db::statements::ServerSql;
use crate::error::{Error, Result};
use crate::flight::stall;
use crate::state::ServerState;
use crate::transport::MAX_FLIGHT_DATA_BYTES;
use arrow_flight::FlightDescriptor;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use futures::{StreamExt, TryStreamExt};
use mallard_protocol::{PushRequest, PushTarget};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex};

/// The addresses Mallard servers of this process listen on, with whether they serve TLS.
static SERVED: LazyLock<Mutex<HashSet<(SocketAddr, bool)>>> =
    LazyLock::new(|| Mutex::new(HashSet::new()));

/// Records that this process serves `addr` (until [`unserve`]).
pub fn serve(addr: SocketAddr, tls: bool) {
    SERVED.lock().expect("served lock").insert((addr, tls));
}

/// Forgets a stopped server's address.
pub fn unserve(addr: SocketAddr, tls: bool) {
    SERVED.lock().expect("served lock").remove(&(addr, tls));
}

/// The push targets this process serves; a wildcard listener counts as loopback.
pub fn served_targets() -> Vec<PushTarget> {
    let served = SERVED.lock().expect("served lock");
    let mut targets = Vec::new();
    for &(addr, tls) in served.iter() {
        let hosts = if addr.ip().is_unspecified() {
            vec!["127.0.0.1".to_owned(), "::1".to_owned()]
        } else {
            vec![addr.ip().to_string()]
        };
        for host in hosts {
            targets.push(PushTarget {
                tls,
                host,
                port: addr.port(),
            });
        }
    }
    targets
}

/// PermissionDenied unless the operator allowed `to` (before any connection).
pub fn check_target(state: &ServerState, to: &str) -> Result<PushTarget> {
    let target = PushTarget::parse(to)?;
    let allowed = if state.config.push_allow.is_empty() {
        served_targets()
    } else {
        state.config.push_allow.clone()
    };
    if allowed.contains(&target) {
        Ok(target)
    } else {
        Err(Error::PermissionDenied(format!(
            "push target {target} is not allowed on this server; the operator allows \
             targets with --push-allow (by default only the servers of this process)"
        )))
    }
}

/// Runs a push; returns the row count the target acknowledged.
pub async fn push(state: &Arc<ServerState>, request: PushRequest) -> Result<u64> {
    let PushRequest {
        table,
        to,
        target_table: target,
        credentials,
    } = request;
    let target_address = check_target(state, &to)?;
    let (user, password) = credentials.unwrap_or_else(|| {
        state.config.push_credentials.clone().unwrap_or_else(|| {
            (
                crate::auth::DEFAULT_USER.into(),
                crate::auth::DEFAULT_PASSWORD.into(),
            )
        })
    });
    let failed_push = format!("push_table to {target_address}");
    // Check the source first so a missing table is NotFound here, not a remote error.
    let db = state.db.clone();
    let source_table = table.clone();
    crate::flight::actions::blocking(move || crate::db::catalog::require(&db, &source_table))
        .await?;
    let mut remote = client::connect_with(&to, &user, &password, state.config.push_tls.as_ref())
        .await
        .map_err(|e| e.context(&failed_push))?;
    let source = query::run(
        state.db.clone(),
        format!("SELECT * FROM {}", table.quoted()),
        Arc::new(ServerSql),
    )
    .await?;
    let schema = source.schema.clone();
    let batches = source
        .into_stream()
        .map_err(|e: Error| FlightError::Tonic(Box::new(e.into())));
    let flight_data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_max_flight_data_size(MAX_FLIGHT_DATA_BYTES)
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(target.as_str().to_owned())))
        .build(batches)
        .map_err(|e| tonic::Status::from(Error::from(e)));
    let (flight_data, stalled) = stall::guard(flight_data, state.config.stall_timeout, "push");
    let flight_data = flight_data.map_err(|s| FlightError::Tonic(Box::new(s)));
    let send = async {
        let mut results = remote
            .do_put(flight_data)
            .await
            .map_err(|e| Error::from(e).context(&failed_push))?;
        let mut rows = None;
        while let Some(result) = results.next().await {
            let result = result.map_err(|e| Error::from(e).context(&failed_push))?;
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&result.app_metadata) {
                rows = v.get("rows").and_then(|r| r.as_u64());
            }
        }
        rows.ok_or_else(|| {
            Error::Unavailable(format!("{target_address} did not acknowledge the put"))
        })
    };
    tokio::select! {
        outcome = send => outcome,
        () = stalled.stalled() => Err(Error::DeadlineExceeded(format!(
            "{failed_push}: the target read nothing for {:?}; the push was stopped",
            state.config.stall_timeout
        ))),
    }
}
