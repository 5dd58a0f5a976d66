//! `do_action` handlers and the `list_actions` catalogue.

use crate::auth::Principal;
use crate::authz::Operation;
use crate::db::{catalog, query};
use crate::error::{Error, Result};
use crate::flight::push;
use crate::state::ServerState;
use arrow_flight::ActionType;
use mallard_protocol::{ACTIONS, ActionRequest};
use serde_json::json;
use std::sync::Arc;

/// The `list_actions` answer.
pub fn action_types() -> Vec<ActionType> {
    ACTIONS
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
            let rows = push::push(state, request).await?;
            Ok(json!({ "rows": rows }))
        }
        ActionRequest::UploadExchanger(component) => {
            let registry = state.registry.clone();
            let report = blocking(move || registry.upload(&component)).await?;
            tracing::info!(name = ?report.name, version = ?report.version, sha256 = %report.sha256, size = report.size, compile_ms = report.compile_ms, user = ?principal.user, "exchanger uploaded");
            Ok(serde_json::to_value(report).expect("report serialises"))
        }
        ActionRequest::ListExchangers => {
            Ok(serde_json::to_value(state.registry.list()).expect("listing serialises"))
        }
        ActionRequest::RemoveExchanger(name) => {
            state.registry.remove(&name)?;
            Ok(json!({ "removed": name }))
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
            "exchanges": state.exchange_slots.total(),
            "get_streams": state.query_slots.total(),
            "queued_output_bytes": state.query_output.in_use(),
            "put_streams": state.put_slots.total(),
            "sessions": state.auth.live_sessions(),
            "wasm_instances": state.registry.engine().live_instances.get(),
            "threads": crate::gauges::process_threads(),
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

/// Runs blocking work off the async runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("worker thread failed: {e}")))?
}
