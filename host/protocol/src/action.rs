//! `do_action` requests: the catalogue of actions and parsing their bodies.

use crate::descriptor::utf8;
use crate::push::PushRequest;
use crate::table_name::TableName;
use crate::{ProtocolError, Result};
use bytes::Bytes;

/// Every action: type and description (the `list_actions` answer).
pub const ACTIONS: &[(&str, &str)] = &[
    (
        "healthcheck",
        "Liveness, versions and live resources. Body: empty. Result: {\"status\":\"ok\", ...}",
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

/// A parsed `do_action` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionRequest {
    /// Liveness and versions.
    Healthcheck,
    /// A DDL/DML statement.
    Sql(String),
    /// The tables.
    ListTables,
    /// Drop a table.
    DropTable(TableName),
    /// Stream a table to another server.
    PushTable(PushRequest),
    /// A component to validate, compile and store (validated by the sandbox).
    UploadExchanger(Bytes),
    /// The exchangers.
    ListExchangers,
    /// Remove an uploaded exchanger.
    RemoveExchanger(String),
    /// Revoke the caller's token.
    Logout,
}

impl ActionRequest {
    /// Parses an action of type `kind` with `body`.
    pub fn parse(kind: &str, body: Bytes) -> Result<Self> {
        Ok(match kind {
            "healthcheck" => Self::Healthcheck,
            "sql" => Self::Sql(utf8(&body, "SQL")?.to_owned()),
            "list_tables" => Self::ListTables,
            "drop_table" => Self::DropTable(TableName::from_bytes(body.trim_ascii())?),
            "push_table" => Self::PushTable(PushRequest::parse(&body)?),
            "upload_exchanger" => Self::UploadExchanger(body),
            "list_exchangers" => Self::ListExchangers,
            "remove_exchanger" => {
                Self::RemoveExchanger(utf8(&body, "exchanger name")?.trim().to_owned())
            }
            "logout" => Self::Logout,
            other => {
                return Err(ProtocolError::UnknownAction(format!(
                    "unknown action {other:?}; list_actions shows the {} actions",
                    ACTIONS.len()
                )));
            }
        })
    }
}
