//! Reading tables and SQL out of Flight tickets and descriptors.
//!
//! Functions take the descriptor's raw fields (`type`, `cmd`, `path`) so this crate
//! needs no Flight types; the server passes them straight from the request.

use crate::table_name::TableName;
use crate::{Result, invalid};

/// `FlightDescriptor.DescriptorType.PATH` on the wire.
pub const PATH: i32 = 1;
/// `FlightDescriptor.DescriptorType.CMD` on the wire.
pub const CMD: i32 = 2;

/// What a descriptor names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A table (path `[table]`).
    Table(TableName),
    /// A SQL query (command).
    Sql(String),
}

/// The table a `do_put` descriptor names: command = table name, or path `[table]`.
pub fn put_table(kind: i32, cmd: &[u8], path: &[String]) -> Result<TableName> {
    match kind {
        CMD => TableName::from_bytes(cmd),
        PATH => single_path(path),
        _ => Err(invalid("descriptor type must be CMD or PATH")),
    }
}

/// What a `get_flight_info`/`get_schema` descriptor names: path `[table]` or command SQL.
pub fn info_target(kind: i32, cmd: &[u8], path: &[String]) -> Result<Target> {
    match kind {
        PATH => Ok(Target::Table(single_path(path)?)),
        CMD => Ok(Target::Sql(utf8(cmd, "descriptor command")?.to_owned())),
        _ => Err(invalid("descriptor type must be CMD or PATH")),
    }
}

/// The SQL of a `do_get` ticket.
pub fn ticket_sql(ticket: &[u8]) -> Result<&str> {
    utf8(ticket, "ticket")
}

fn single_path(path: &[String]) -> Result<TableName> {
    match path {
        [table] => TableName::parse(table),
        other => Err(invalid(format!(
            "descriptor path must be [table], got {} elements",
            other.len()
        ))),
    }
}

/// Bytes that must be non-blank UTF-8 text.
pub fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| invalid(format!("{what} is not valid UTF-8: {e}")))?;
    if text.trim().is_empty() {
        return Err(invalid(format!("{what} is empty")));
    }
    Ok(text)
}
