//! `do_action` handlers and the `list_actions` catalogue.

use crate::auth::{Principal, Right};
use crate::db::identifier::TableName;
use crate::db::{catalog, query};
use crate::error::{Error, Result};
use crate::flight::descriptor::utf8;
use crate::flight::push::{self, PushRequest};
use crate::state::ServerState;
use arrow_flight::ActionType;
use serde_json::json;
use std::sync::Arc;

/// Every action: type and description.
pub const ACTIONS: &[(&str, &str)] = &[
    (
        "healthcheck",
        "Liveness and versions. Body: empty. Result: {\"status\":\"ok\", ...}",
    ),
    (
        "sql",
        "Run a DDL/DML statement (admin). Body: UTF-8 SQL. Result: {\"rows_affected\": N}",
    ),
    (
        "list_tables",
        "Tables with row counts and columns. Body: empty. Result: [{\"name\",\"rows\",\"schema\"}]",
    ),
    (
        "drop_table",
        "Drop a table (admin). Body: table name. Result: {\"dropped\": NAME}",
    ),
    (
        "push_table",
        "Stream a table to another server's do_put. Body: {\"table\",\"to\":\"grpc://host:port\",\"target_table\"[,\"user\",\"password\"]}. Result: {\"rows\": N}",
    ),
    (
        "upload_exchanger",
        "Upload a WebAssembly exchanger component (admin). Body: component bytes. Result: {\"name\",\"version\",\"sha256\",\"size\",\"compile_ms\"}",
    ),
    (
        "list_exchangers",
        "Uploaded and built-in exchangers. Body: empty. Result: [{\"name\",\"version\",\"sha256\",\"size\",\"builtin\",\"uploaded\"}]",
    ),
    (
        "remove_exchanger",
        "Remove an uploaded exchanger (admin). Body: name. Result: {\"removed\": NAME}",
    ),
    (
        "logout",
        "Revoke the bearer token used for this call. Body: empty. Result: {\"revoked\": true}",
    ),
];

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

/// Runs one action and returns its JSON result.
pub async fn run(
    state: &Arc<ServerState>,
    principal: &Principal,
    bearer: Option<&str>,
    kind: &str,
    body: bytes::Bytes,
) -> Result<serde_json::Value> {
    match kind {
        "healthcheck" => Ok(json!({
            "status": "ok",
            "server": "mallard",
            "version": env!("CARGO_PKG_VERSION"),
            "duckdb": duckdb_version(state).await.unwrap_or_default(),
            "wit": "mallard:exchanger@0.1.0",
        })),
        "sql" => {
            principal.require(Right::ManageTables)?;
            let sql = utf8(&body, "SQL")?.to_owned();
            let rows = query::execute(state.db.clone(), sql).await?;
            Ok(json!({ "rows_affected": rows }))
        }
        "list_tables" => {
            let db = state.db.clone();
            let tables = blocking(move || catalog::list_tables(&db)).await?;
            Ok(serde_json::to_value(tables).expect("tables serialise"))
        }
        "drop_table" => {
            principal.require(Right::ManageTables)?;
            let table = TableName::from_bytes(body.trim_ascii())?;
            let db = state.db.clone();
            let dropped = table.clone();
            blocking(move || catalog::drop_table(&db, &dropped)).await?;
            Ok(json!({ "dropped": table.as_str() }))
        }
        "push_table" => {
            let request: PushRequest = serde_json::from_slice(&body).map_err(|e| {
                Error::InvalidArgument(format!("push_table body must be JSON: {e}"))
            })?;
            let rows = push::push(state, request).await?;
            Ok(json!({ "rows": rows }))
        }
        "upload_exchanger" => {
            principal.require(Right::ManageExchangers)?;
            let registry = state.registry.clone();
            let report = blocking(move || registry.upload(&body)).await?;
            tracing::info!(name = %report.name, version = %report.version, sha256 = %report.sha256, size = report.size, compile_ms = report.compile_ms, user = %principal.user, "exchanger uploaded");
            Ok(serde_json::to_value(report).expect("report serialises"))
        }
        "list_exchangers" => {
            Ok(serde_json::to_value(state.registry.list()).expect("listing serialises"))
        }
        "remove_exchanger" => {
            principal.require(Right::ManageExchangers)?;
            let name = utf8(&body, "exchanger name")?.trim().to_owned();
            state.registry.remove(&name)?;
            Ok(json!({ "removed": name }))
        }
        "logout" => {
            if let Some(token) = bearer {
                state.auth.revoke(token);
            }
            Ok(json!({ "revoked": bearer.is_some() }))
        }
        other => Err(Error::NotFound(format!(
            "unknown action {other:?}; list_actions shows the {} actions",
            ACTIONS.len()
        ))),
    }
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
