//! Reading tables and SQL out of Flight descriptors and tickets.

use crate::db::identifier::TableName;
use crate::error::{Error, Result};
use arrow_flight::FlightDescriptor;
use arrow_flight::flight_descriptor::DescriptorType;

/// What a descriptor names.
pub enum Target {
    /// A table (path `[table]`, or a command that is a table name for `do_put`).
    Table(TableName),
    /// A SQL query (command).
    Sql(String),
}

/// The table a `do_put` descriptor names: command = table name, or path `[table]`.
pub fn put_table(descriptor: &FlightDescriptor) -> Result<TableName> {
    match DescriptorType::try_from(descriptor.r#type) {
        Ok(DescriptorType::Cmd) => TableName::from_bytes(&descriptor.cmd),
        Ok(DescriptorType::Path) => single_path(descriptor),
        _ => Err(Error::InvalidArgument(
            "descriptor type must be CMD or PATH".into(),
        )),
    }
}

fn single_path(descriptor: &FlightDescriptor) -> Result<TableName> {
    match descriptor.path.as_slice() {
        [table] => TableName::parse(table),
        other => Err(Error::InvalidArgument(format!(
            "descriptor path must be [table], got {} elements",
            other.len()
        ))),
    }
}

/// What a `get_flight_info`/`get_schema` descriptor names: path `[table]` or command SQL.
pub fn info_target(descriptor: &FlightDescriptor) -> Result<Target> {
    match DescriptorType::try_from(descriptor.r#type) {
        Ok(DescriptorType::Path) => Ok(Target::Table(single_path(descriptor)?)),
        Ok(DescriptorType::Cmd) => Ok(Target::Sql(
            utf8(&descriptor.cmd, "descriptor command")?.to_owned(),
        )),
        _ => Err(Error::InvalidArgument(
            "descriptor type must be CMD or PATH".into(),
        )),
    }
}

/// Bytes that must be UTF-8 text.
pub fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Error::InvalidArgument(format!("{what} is not valid UTF-8: {e}")))?;
    if text.trim().is_empty() {
        return Err(Error::InvalidArgument(format!("{what} is empty")));
    }
    Ok(text)
}
