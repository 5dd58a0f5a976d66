//! Table names from clients: validated, then always quoted, never spliced raw.

use crate::{Result, invalid};

/// Longest table name accepted, in bytes.
pub const MAX_TABLE_NAME_BYTES: usize = 255;

/// A validated table name. Any text without control characters is allowed, and is
/// always emitted as a quoted identifier, so `x; DROP TABLE y` is just an odd name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName(String);

impl TableName {
    /// Validates a client-supplied name.
    pub fn parse(raw: &str) -> Result<Self> {
        if raw.is_empty() {
            return Err(invalid("table name is empty"));
        }
        if raw.len() > MAX_TABLE_NAME_BYTES {
            return Err(invalid(format!(
                "table name is longer than {MAX_TABLE_NAME_BYTES} bytes"
            )));
        }
        if raw.chars().any(char::is_control) {
            return Err(invalid("table name contains control characters"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// A name DuckDB's own catalog holds (a table created through SQL may have
    /// any name, control characters included); it is only ever quoted.
    pub fn from_catalog(name: String) -> Self {
        Self(name)
    }

    /// Validates a UTF-8 byte string.
    pub fn from_bytes(raw: &[u8]) -> Result<Self> {
        let text =
            std::str::from_utf8(raw).map_err(|_| invalid("table name is not valid UTF-8"))?;
        Self::parse(text)
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a double-quoted SQL identifier.
    pub fn quoted(&self) -> String {
        quote(&self.0)
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Quotes any identifier for DuckDB (`"` doubled inside).
pub fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Quotes a string literal for DuckDB (`'` doubled inside).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
