//! Arrow data types to DuckDB column types, for creating a table from a stream's schema.

use arrow::datatypes::{DataType, Field, IntervalUnit, Schema, TimeUnit};
use mallard_core::{Error, Result};
use mallard_protocol::quote;

/// DuckDB's SQL type for an Arrow type, or InvalidArgument if DuckDB has none.
pub fn sql_type(data_type: &DataType) -> Result<String> {
    use DataType::*;
    Ok(match data_type {
        Null => "INTEGER".into(),
        Boolean => "BOOLEAN".into(),
        Int8 => "TINYINT".into(),
        Int16 => "SMALLINT".into(),
        Int32 => "INTEGER".into(),
        Int64 => "BIGINT".into(),
        UInt8 => "UTINYINT".into(),
        UInt16 => "USMALLINT".into(),
        UInt32 => "UINTEGER".into(),
        UInt64 => "UBIGINT".into(),
        Float16 | Float32 => "FLOAT".into(),
        Float64 => "DOUBLE".into(),
        Utf8 | LargeUtf8 | Utf8View => "VARCHAR".into(),
        Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => "BLOB".into(),
        Date32 | Date64 => "DATE".into(),
        Time32(_) | Time64(_) => "TIME".into(),
        Timestamp(_, Some(_)) => "TIMESTAMPTZ".into(),
        Timestamp(TimeUnit::Second, None) => "TIMESTAMP_S".into(),
        Timestamp(TimeUnit::Millisecond, None) => "TIMESTAMP_MS".into(),
        Timestamp(TimeUnit::Microsecond, None) => "TIMESTAMP".into(),
        Timestamp(TimeUnit::Nanosecond, None) => "TIMESTAMP_NS".into(),
        Interval(IntervalUnit::MonthDayNano) | Interval(_) | Duration(_) => "INTERVAL".into(),
        Decimal32(p, s) | Decimal64(p, s) => format!("DECIMAL({p}, {s})"),
        Decimal128(p, s) if *p <= 38 => format!("DECIMAL({p}, {s})"),
        List(f) | LargeList(f) | ListView(f) | LargeListView(f) => {
            format!("{}[]", sql_type(f.data_type())?)
        }
        FixedSizeList(f, n) => format!("{}[{n}]", sql_type(f.data_type())?),
        Struct(fields) => {
            let members: Result<Vec<String>> = fields
                .iter()
                .map(|f| Ok(format!("{} {}", quote(f.name()), sql_type(f.data_type())?)))
                .collect();
            format!("STRUCT({})", members?.join(", "))
        }
        Map(entries, _) => match entries.data_type() {
            Struct(kv) if kv.len() == 2 => {
                format!(
                    "MAP({}, {})",
                    sql_type(kv[0].data_type())?,
                    sql_type(kv[1].data_type())?
                )
            }
            other => return Err(unsupported(other)),
        },
        Dictionary(_, value) => sql_type(value)?,
        other => return Err(unsupported(other)),
    })
}

fn unsupported(data_type: &DataType) -> Error {
    Error::invalid_argument(format!("Arrow type {data_type} has no DuckDB column type"))
}

/// `CREATE TABLE IF NOT EXISTS <table> (<columns>)` for `schema`.
pub fn create_table_sql(quoted_table: &str, schema: &Schema) -> Result<String> {
    if schema.fields().is_empty() {
        return Err(Error::invalid_argument(
            "cannot create a table with no columns",
        ));
    }
    let columns: Result<Vec<String>> = schema.fields().iter().map(|f| column_sql(f)).collect();
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {quoted_table} ({})",
        columns?.join(", ")
    ))
}

fn column_sql(field: &Field) -> Result<String> {
    let ty =
        sql_type(field.data_type()).map_err(|e| e.context(format!("column {:?}", field.name())))?;
    Ok(format!("{} {ty}", quote(field.name())))
}
