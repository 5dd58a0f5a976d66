//! `do_action` requests: the catalogue of actions and parsing their bodies.

use crate::descriptor::utf8;
use crate::exchanger_ref::ExchangerRef;
use crate::publish::PublishRequest;
use crate::push::PushRequest;
use crate::table_name::TableName;
use crate::upload::UploadRequest;
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
        "Upload a WebAssembly exchanger component into your namespace (user; --shared: admin). Body: [JSON options line {\"shared\",\"dry_run_schema\",\"params\"} + newline] then component bytes. Result: the upload report {\"exchanger\",\"version\",\"sha256\",\"imports\",\"exports\",\"dry_run\",...}",
    ),
    (
        "list_exchangers",
        "Your own and shared exchangers with their versions and metrics. Body: empty. Result: [{\"exchanger\",\"owner\",\"name\",\"versions\":[...]}]",
    ),
    (
        "remove_exchanger",
        "Remove your exchanger's versions (shared ones: admin); refused while a version runs. Body: [OWNER/]NAME[@VERSION|@sha256:HEX]. Result: {\"removed\": [...]}",
    ),
    (
        "publish_exchanger",
        "Copy a user's exchanger version into the shared namespace (admin). Body: OWNER/NAME[@PIN], or {\"exchanger\": \"OWNER/NAME[@PIN]\", \"to_peers\": true} to publish the same version on every peer too. Result: the shared version's report (with `peers`)",
    ),
    (
        "logout",
        "Revoke the bearer token used for this call. Body: empty. Result: {\"revoked\": true}",
    ),
];

/// A parsed `do_action` request.
#[derive(Debug, Clone, PartialEq)]
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
    UploadExchanger(UploadRequest),
    /// The exchangers.
    ListExchangers,
    /// Remove versions of an uploaded exchanger (all of them unless pinned).
    RemoveExchanger(ExchangerRef),
    /// Copy a user's exchanger version into the shared namespace (and the peers').
    PublishExchanger(PublishRequest),
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
            "upload_exchanger" => Self::UploadExchanger(UploadRequest::parse(body)?),
            "list_exchangers" => Self::ListExchangers,
            "remove_exchanger" => {
                Self::RemoveExchanger(ExchangerRef::parse(utf8(&body, "exchanger reference")?)?)
            }
            "publish_exchanger" => Self::PublishExchanger(PublishRequest::parse(&body)?),
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
