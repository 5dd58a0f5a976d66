//! `do_action` handlers and the `list_actions` catalogue.

use crate::auth::Principal;
use crate::flight::blocking::blocking;
use crate::flight::push;
use crate::state::ServerState;
use arrow_flight::ActionType;
use mallard_access::authz::Operation;
use mallard_core::{Error, Result};
use mallard_db::{catalog, query};
use mallard_exchange::dry_run;
use mallard_protocol::{ACTIONS, ActionRequest};
use serde_json::json;
use std::sync::Arc;

/// The `list_actions` answer.
pub fn action_types() -> Vec<ActionType> {
    action_types_of(ACTIONS)
}

/// `(type, description)` pairs as Flight `ActionType`s.
pub fn action_types_of(table: &[(&str, &str)]) -> Vec<ActionType> {
    table
        .iter()
        .map(|(t, d)| ActionType {
            r#type: (*t).into(),
            description: (*d).into(),
        })
        .collect()
}

/// The right an action needs before it starts (SQL is judged per statement).
fn operation(request: &ActionRequest) -> Option<Operation> {
    match request {
        ActionRequest::Healthcheck
        | ActionRequest::ListTables
        | ActionRequest::ListExchangers
        | ActionRequest::Logout => Some(Operation::Inspect),
        ActionRequest::Sql(_) => None,
        ActionRequest::DropTable(_) => Some(Operation::DropTable),
        ActionRequest::PushTable(_) => Some(Operation::Push),
        ActionRequest::UploadExchanger(upload) if upload.options.shared => {
            Some(Operation::ShareExchangers)
        }
        ActionRequest::PublishExchanger(_) => Some(Operation::ShareExchangers),
        ActionRequest::UploadExchanger(_) | ActionRequest::RemoveExchanger(_) => {
            Some(Operation::ManageExchangers)
        }
    }
}

/// Runs one action and returns its JSON result.
pub async fn run(
    state: &Arc<ServerState>,
    principal: &Principal,
    bearer: Option<&str>,
    kind: &str,
    body: bytes::Bytes,
) -> Result<serde_json::Value> {
    let request = ActionRequest::parse(kind, body)?;
    if let Some(op) = operation(&request) {
        state.authz.check(principal, op)?;
    }
    match request {
        ActionRequest::Healthcheck => Ok(health(state).await),
        ActionRequest::Sql(sql) => {
            // A statement is a query like any other: it takes one of the caller's slots.
            let _slot = state.query_slots.acquire(&principal.user)?;
            let rows = query::execute(state.db.clone(), sql, state.authz.sql(principal)).await?;
            Ok(json!({ "rows_affected": rows }))
        }
        ActionRequest::ListTables => {
            let db = state.db.clone();
            let tables = blocking(move || catalog::list_tables(&db)).await?;
            Ok(serde_json::to_value(tables).expect("tables serialise"))
        }
        ActionRequest::DropTable(table) => {
            let db = state.db.clone();
            let dropped = table.clone();
            blocking(move || catalog::drop_table(&db, &dropped)).await?;
            Ok(json!({ "dropped": table.as_str() }))
        }
        ActionRequest::PushTable(request) => {
            let pushed = push::push(state, principal, request).await?;
            Ok(json!({
                "rows": pushed.rows,
                "rows_per_target": pushed.rows_per_target,
                "receipt": pushed.receipt,
            }))
        }
        ActionRequest::UploadExchanger(upload) => {
            let peers_token = match upload.options.to_peers {
                true => Some(crate::cluster::publish::check(state, principal)?),
                false => None,
            };
            let for_peers = peers_token.as_ref().map(|_| upload.clone());
            let state_here = state.clone();
            let uploader = principal.clone();
            let mut report = blocking(move || {
                let state = state_here;
                // The dry run opens the guest: the upload takes one of the uploader's
                // exchange slots first, like any exchange (so nothing is stored when
                // none is free).
                let _slot = state.exchanges.slots.acquire(&uploader.user)?;
                let version = state.exchanges.catalog.upload(&uploader, &upload)?;
                tracing::info!(exchanger = %version.describe(), size = version.report.size, compile_ms = version.report.compile_ms, user = ?uploader.user, "exchanger uploaded");
                let dry_run = dry_run::dry_run(
                    state.exchanges.catalog.engine(),
                    &version,
                    upload.options.dry_run_schema.as_ref(),
                    &upload.options.params,
                    state.exchanges.guest_memory.of(&uploader.user),
                )?;
                let mut report = serde_json::to_value(&version.report).expect("report serialises");
                report["exchanger"] = version.owner.qualify(&version.name).into();
                report["owner"] = version.owner.label().into();
                report["name"] = version.name.clone().into();
                report["dry_run"] = serde_json::to_value(dry_run).expect("dry run serialises");
                Ok::<_, Error>(report)
            })
            .await?;
            if let (Some(token), Some(upload)) = (peers_token, for_peers) {
                let peers =
                    crate::cluster::publish::upload_to_peers(state, &token, &upload).await?;
                report["peers"] = peers.into();
            }
            Ok(report)
        }
        ActionRequest::ListExchangers => Ok(serde_json::to_value(
            state.exchanges.catalog.list(principal),
        )
        .expect("listing serialises")),
        ActionRequest::RemoveExchanger(reference) => {
            let (catalog, caller) = (state.exchanges.catalog.clone(), principal.clone());
            let removed = blocking(move || catalog.remove(&caller, &reference)).await?;
            tracing::info!(removed = ?removed, user = ?principal.user, "exchanger versions removed");
            Ok(json!({ "removed": removed }))
        }
        ActionRequest::PublishExchanger(request) => {
            let peers_token = match request.to_peers {
                true => Some(crate::cluster::publish::check(state, principal)?),
                false => None,
            };
            // By its full sha256, so this node and its peers publish the same bytes
            // even if the caller uploads a newer version meanwhile.
            let pinned = state.exchanges.catalog.pin(principal, &request.exchanger)?;
            // Copies the component's files: off the async runtime.
            let (catalog, caller, source) = (
                state.exchanges.catalog.clone(),
                principal.clone(),
                pinned.clone(),
            );
            let version = blocking(move || catalog.publish(&caller, &source)).await?;
            tracing::info!(exchanger = %version.describe(), user = ?principal.user, "exchanger published");
            let mut report = serde_json::to_value(&version.report).expect("report serialises");
            report["exchanger"] = version.name.clone().into();
            if let Some(token) = peers_token {
                let peers =
                    crate::cluster::publish::publish_on_peers(state, &token, &pinned).await?;
                report["peers"] = peers.into();
            }
            Ok(report)
        }
        ActionRequest::Logout => {
            let revoked = bearer.is_some_and(|token| state.auth.revoke(token));
            Ok(json!({ "revoked": revoked }))
        }
    }
}

/// The healthcheck answer: versions, and what the server holds right now.
async fn health(state: &Arc<ServerState>) -> serde_json::Value {
    json!({
        "status": "ok",
        "server": "mallard",
        "version": env!("CARGO_PKG_VERSION"),
        "duckdb": duckdb_version(state).await.unwrap_or_default(),
        "wit": "mallard:exchanger@0.1.0",
        "live": {
            "queries": state.db.live_queries.get(),
            "ingests": state.db.live_ingests.get(),
            "exchanges": state.exchanges.slots.total(),
            "get_streams": state.query_slots.total(),
            "queued_output_bytes": state.query_output.in_use(),
            "put_streams": state.put_slots.total(),
            "transactions": state.flight_sql.open_transactions(),
            "prepared_statements": state.flight_sql.open_prepared(),
            "cancellable_queries": state.running_queries.len(),
            "sessions": state.auth.live_sessions(),
            "wasm_instances": state.exchanges.catalog.engine().live_instances.get(),
            "guest_memory_bytes": state.exchanges.guest_memory.in_use(),
            "threads": mallard_core::gauges::process_threads(),
        },
    })
}

async fn duckdb_version(state: &Arc<ServerState>) -> Result<String> {
    let db = state.db.clone();
    blocking(move || {
        Ok(db
            .connect()?
            .query_row("SELECT version()", [], |r| r.get::<_, String>(0))?)
    })
    .await
}
