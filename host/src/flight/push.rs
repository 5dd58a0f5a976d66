//! `push_table`: stream a table from this server straight into another server's
//! `do_put`, without the data passing through the requesting client.

use crate::client;
use crate::db::query;
use crate::error::{Error, Result};
use crate::state::ServerState;
use crate::transport::MAX_FLIGHT_DATA_BYTES;
use arrow_flight::FlightDescriptor;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use futures::{StreamExt, TryStreamExt};
use mallard_protocol::PushRequest;
use std::sync::Arc;

/// Runs a push; returns the row count the target acknowledged.
pub async fn push(state: &Arc<ServerState>, request: PushRequest) -> Result<u64> {
    let PushRequest {
        table,
        to,
        target_table: target,
        credentials,
    } = request;
    let (user, password) = credentials.unwrap_or_else(|| {
        state.config.push_credentials.clone().unwrap_or_else(|| {
            (
                crate::auth::DEFAULT_USER.into(),
                crate::auth::DEFAULT_PASSWORD.into(),
            )
        })
    });
    let failed_push = format!("push_table to {to}");
    // Check the source first so a missing table is NotFound here, not a remote error.
    crate::db::catalog::describe(&state.db, &table)?;
    let mut remote = client::connect_with(&to, &user, &password, state.config.push_tls.as_ref())
        .await
        .map_err(|e| e.context(&failed_push))?;
    let source = query::run(
        state.db.clone(),
        format!("SELECT * FROM {}", table.quoted()),
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
        .build(batches);
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
    rows.ok_or_else(|| Error::Unavailable(format!("{to} did not acknowledge the put")))
}
