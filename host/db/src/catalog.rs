//! What tables exist, how many rows and which columns they have.

use crate::Database;
use mallard_core::{Error, Result};
use mallard_protocol::{TableName, quote_literal};
use serde::Serialize;

/// One table as `list_tables` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct TableInfo {
    /// The table's name.
    pub name: String,
    /// Exact row count.
    pub rows: u64,
    /// Columns as `name TYPE`, in order.
    pub schema: Vec<ColumnInfo>,
}

/// One column: name and DuckDB type.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// DuckDB type name.
    #[serde(rename = "type")]
    pub data_type: String,
}

/// Every table in the main schema.
pub fn list_tables(db: &Database) -> Result<Vec<TableInfo>> {
    let conn = db.connect()?;
    let mut stmt = conn.prepare(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' AND NOT temporary ORDER BY table_name",
    )?;
    let names: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    names
        .iter()
        .map(|n| describe(db, &TableName::from_catalog(n.clone())))
        .collect()
}

/// One table, or NotFound.
pub fn describe(db: &Database, table: &TableName) -> Result<TableInfo> {
    let conn = db.connect()?;
    let mut stmt = conn.prepare(&format!(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = 'main' AND table_name = {} ORDER BY column_index",
        quote_literal(table.as_str())
    ))?;
    let schema: Vec<ColumnInfo> = stmt
        .query_map([], |r| {
            Ok(ColumnInfo {
                name: r.get(0)?,
                data_type: r.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    if schema.is_empty() {
        return Err(Error::not_found(format!("table {table:?} does not exist")));
    }
    let rows: i64 = conn.query_row(
        &format!("SELECT count(*) FROM {}", table.quoted()),
        [],
        |r| r.get(0),
    )?;
    Ok(TableInfo {
        name: table.as_str().to_owned(),
        rows: rows as u64,
        schema,
    })
}

/// NotFound unless `table` exists (no row count, so it is cheap for views too).
pub fn require(db: &Database, table: &TableName) -> Result<()> {
    let conn = db.connect()?;
    let found: i64 = conn.query_row(
        &format!(
            "SELECT count(*) FROM duckdb_columns() WHERE schema_name = 'main' AND table_name = {}",
            quote_literal(table.as_str())
        ),
        [],
        |r| r.get(0),
    )?;
    if found == 0 {
        return Err(Error::not_found(format!("table {table:?} does not exist")));
    }
    Ok(())
}

/// Drops a table; NotFound if it does not exist.
pub fn drop_table(db: &Database, table: &TableName) -> Result<()> {
    let conn = db.connect()?;
    conn.execute_batch(&format!("DROP TABLE {}", table.quoted()))?;
    Ok(())
}
