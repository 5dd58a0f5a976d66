//! The body of the `push_table` action.

use crate::table_name::TableName;
use crate::{Result, invalid};
use serde::Deserialize;

/// URL schemes `push_table` may connect to.
pub const TARGET_SCHEMES: &[&str] = &[
    "grpc://",
    "grpc+tcp://",
    "http://",
    "grpc+tls://",
    "https://",
];

/// A validated `push_table` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRequest {
    /// Source table on this server.
    pub table: TableName,
    /// Target server, e.g. `grpc://host:port` or `grpc+tls://host:port`.
    pub to: String,
    /// Table on the target (defaults to `table`).
    pub target_table: TableName,
    /// User and password on the target; `None` uses the server's push credentials.
    pub credentials: Option<(String, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPush {
    table: String,
    to: String,
    target_table: Option<String>,
    user: Option<String>,
    password: Option<String>,
}

impl PushRequest {
    /// Parses the JSON body
    /// `{"table", "to", "target_table"?, "user"?, "password"?}`.
    pub fn parse(body: &[u8]) -> Result<Self> {
        let json: JsonPush = serde_json::from_slice(body)
            .map_err(|e| invalid(format!("push_table body must be JSON: {e}")))?;
        let table = TableName::parse(&json.table)?;
        let target_table = match &json.target_table {
            Some(t) => TableName::parse(t)?,
            None => table.clone(),
        };
        if !TARGET_SCHEMES.iter().any(|s| json.to.starts_with(s)) {
            return Err(invalid(format!(
                "`to` must be grpc://host:port or grpc+tls://host:port, got {:?}",
                json.to
            )));
        }
        let credentials = match (json.user, json.password) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            _ => return Err(invalid("give both `user` and `password`, or neither")),
        };
        Ok(Self {
            table,
            to: json.to,
            target_table,
            credentials,
        })
    }
}
