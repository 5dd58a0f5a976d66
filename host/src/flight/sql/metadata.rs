//! Flight SQL's catalog commands answered from DuckDB's own catalog functions
//! (`duckdb_databases()`, `information_schema`, `duckdb_tables()`,
//! `duckdb_views()`, `duckdb_constraints()`), with arrow-flight's builders
//! shaping the answers exactly as the specification's schemas say.
//!
//! The SQL here is the server's own and fixed; what clients send (names,
//! patterns) only filters rows in Rust, never reaches SQL text.

use arrow::array::{ArrayRef, Int32Builder, RecordBatch, StringBuilder, UInt8Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{
    GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder, SqlInfoData, SqlInfoDataBuilder,
    XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables, Nullable,
    Searchable, SqlInfo, SqlSupportedTransaction, XdbcDataType,
};
use mallard_core::{Error, Result};
use mallard_db::Database;
use mallard_db::statements::{self, ServerSql};
use mallard_protocol::quote;
use std::sync::{Arc, LazyLock};

/// The table types Mallard reports.
pub const TABLE_TYPES: [&str; 2] = ["TABLE", "VIEW"];

fn strings(db: &Database, sql: &str, columns: usize) -> Result<Vec<Vec<Option<String>>>> {
    let conn = db.connect()?;
    let mut statement = conn.prepare(sql)?;
    let rows = statement.query_map([], |row| {
        (0..columns)
            .map(|i| row.get::<_, Option<String>>(i))
            .collect::<Result<Vec<_>, _>>()
    })?;
    rows.collect::<Result<Vec<_>, _>>().map_err(Error::from)
}

fn text(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or_default()
}

/// `GetCatalogs`: the databases (DuckDB's catalogs) clients can name.
pub fn catalogs(db: &Database, command: CommandGetCatalogs) -> Result<RecordBatch> {
    let mut builder = command.into_builder();
    for row in strings(
        db,
        "SELECT database_name FROM duckdb_databases() WHERE NOT internal ORDER BY 1",
        1,
    )? {
        builder.append(text(&row[0]));
    }
    Ok(builder.build()?)
}

/// The schema of a `GetCatalogs` answer.
pub fn catalogs_schema() -> SchemaRef {
    GetCatalogsBuilder::new().schema()
}

const USER_SCHEMAS: &str = "SELECT catalog_name, schema_name FROM information_schema.schemata \
     WHERE catalog_name NOT IN ('system', 'temp') ORDER BY 1, 2";

/// `GetDbSchemas`, filtered by the command's catalog and pattern.
pub fn db_schemas(db: &Database, command: CommandGetDbSchemas) -> Result<RecordBatch> {
    let mut builder = command.into_builder();
    for row in strings(db, USER_SCHEMAS, 2)? {
        builder.append(text(&row[0]), text(&row[1]));
    }
    Ok(builder.build()?)
}

/// The schema of a `GetDbSchemas` answer.
pub fn db_schemas_schema() -> SchemaRef {
    GetDbSchemasBuilder::new(None::<String>, None::<String>).schema()
}

const USER_TABLES: &str = "\
    SELECT database_name, schema_name, table_name, 'TABLE' FROM duckdb_tables() \
        WHERE NOT internal AND NOT temporary \
    UNION ALL \
    SELECT database_name, schema_name, view_name, 'VIEW' FROM duckdb_views() \
        WHERE NOT internal AND NOT temporary \
    ORDER BY 1, 2, 3";

/// `GetTables`, filtered by the command, with each table's Arrow schema when asked.
pub fn tables(db: &Database, command: CommandGetTables) -> Result<RecordBatch> {
    let include_schema = command.include_schema;
    // The builder filters too; filtering first spares a schema lookup per table
    // the client did not ask for.
    let wanted = |catalog: &str, schema: &str, table: &str, kind: &str| {
        command.catalog.as_deref().is_none_or(|c| c == catalog)
            && command
                .db_schema_filter_pattern
                .as_deref()
                .is_none_or(|p| like(p, schema))
            && command
                .table_name_filter_pattern
                .as_deref()
                .is_none_or(|p| like(p, table))
            && (command.table_types.is_empty() || command.table_types.iter().any(|t| t == kind))
    };
    let rows: Vec<_> = strings(db, USER_TABLES, 4)?
        .into_iter()
        .filter(|r| wanted(text(&r[0]), text(&r[1]), text(&r[2]), text(&r[3])))
        .collect();
    let mut builder = command.into_builder();
    let raw = if include_schema {
        Some(db.connect_raw()?)
    } else {
        None
    };
    for row in rows {
        let (catalog, schema, table, kind) =
            (text(&row[0]), text(&row[1]), text(&row[2]), text(&row[3]));
        let arrow_schema = match &raw {
            Some(conn) => {
                let sql = format!(
                    "SELECT * FROM {}.{}.{}",
                    quote(catalog),
                    quote(schema),
                    quote(table)
                );
                // A view whose tables are gone cannot bind; list it without columns.
                statements::result_schema(conn, &sql, &ServerSql)
                    .unwrap_or_else(|_| Arc::new(Schema::empty()))
            }
            None => Arc::new(Schema::empty()),
        };
        builder.append(catalog, schema, table, kind, &arrow_schema)?;
    }
    Ok(builder.build()?)
}

/// SQL `LIKE` as Flight SQL's filter patterns use it: `%` any run of
/// characters, `_` any one character, `\x` the character x, everything else
/// itself. Linear backtracking (O(pattern × text)), so no pattern of `%`s can
/// make it explode.
pub fn like(pattern: &str, text: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Token {
        Any,
        One,
        Char(char),
    }
    let mut p = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        p.push(match c {
            '%' => Token::Any,
            '_' => Token::One,
            '\\' => Token::Char(chars.next().unwrap_or('\\')),
            c => Token::Char(c),
        });
    }
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(Token::One) => (pi, ti) = (pi + 1, ti + 1),
            Some(Token::Char(c)) if *c == t[ti] => (pi, ti) = (pi + 1, ti + 1),
            Some(Token::Any) => {
                star = Some((pi, ti));
                pi += 1;
            }
            _ => match star {
                Some((s, mark)) => {
                    star = Some((s, mark + 1));
                    (pi, ti) = (s + 1, mark + 1);
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|token| *token == Token::Any)
}

/// The schema of a `GetTables` answer.
pub fn tables_schema(include_schema: bool) -> SchemaRef {
    GetTablesBuilder::new(
        None::<String>,
        None::<String>,
        None::<String>,
        Vec::<String>::new(),
        include_schema,
    )
    .schema()
}

/// `GetTableTypes`.
pub fn table_types(command: CommandGetTableTypes) -> Result<RecordBatch> {
    let mut builder = command.into_builder();
    for kind in TABLE_TYPES {
        builder.append(kind);
    }
    Ok(builder.build()?)
}

/// The schema of a `GetTableTypes` answer.
pub fn table_types_schema() -> SchemaRef {
    CommandGetTableTypes {}.into_builder().schema()
}

/// What a table reference in a key command names (each part optional except the table).
pub struct TableRef<'a> {
    /// The catalog (database), if given.
    pub catalog: Option<&'a str>,
    /// The schema, if given.
    pub schema: Option<&'a str>,
    /// The table.
    pub table: &'a str,
}

impl TableRef<'_> {
    fn matches(&self, catalog: &str, schema: &str, table: &str) -> bool {
        self.catalog.is_none_or(|c| c == catalog)
            && self.schema.is_none_or(|s| s == schema)
            && self.table == table
    }
}

fn nullable(name: &str, ty: DataType) -> Field {
    Field::new(name, ty, true)
}

/// The schema of a `GetPrimaryKeys` answer.
pub fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        nullable("catalog_name", DataType::Utf8),
        nullable("db_schema_name", DataType::Utf8),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        nullable("key_name", DataType::Utf8),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// DuckDB's constraints of one type, with their columns as a list of text.
fn constraints(db: &Database, kind: &str) -> Result<Vec<Vec<Option<String>>>> {
    let sql = format!(
        "SELECT database_name, schema_name, table_name, constraint_name, \
             array_to_string(constraint_column_names, chr(31)), referenced_table, \
             array_to_string(referenced_column_names, chr(31)) \
         FROM duckdb_constraints() WHERE constraint_type = '{kind}' ORDER BY 1, 2, 3, 4"
    );
    strings(db, &sql, 7)
}

fn columns(list: &Option<String>) -> Vec<String> {
    match list.as_deref() {
        None | Some("") => Vec::new(),
        Some(l) => l.split('\u{1f}').map(str::to_owned).collect(),
    }
}

/// `GetPrimaryKeys` of `table`.
pub fn primary_keys(db: &Database, table: TableRef<'_>) -> Result<RecordBatch> {
    let (mut cat, mut sch, mut tab, mut col, mut key) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut seq = Int32Builder::new();
    for row in constraints(db, "PRIMARY KEY")? {
        if !table.matches(text(&row[0]), text(&row[1]), text(&row[2])) {
            continue;
        }
        for (i, column) in columns(&row[4]).iter().enumerate() {
            cat.append_value(text(&row[0]));
            sch.append_value(text(&row[1]));
            tab.append_value(text(&row[2]));
            col.append_value(column);
            key.append_option(row[3].as_deref());
            seq.append_value(i as i32 + 1);
        }
    }
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(cat.finish()),
        Arc::new(sch.finish()),
        Arc::new(tab.finish()),
        Arc::new(col.finish()),
        Arc::new(key.finish()),
        Arc::new(seq.finish()),
    ];
    Ok(RecordBatch::try_new(primary_keys_schema(), arrays)?)
}

/// The schema of `GetImportedKeys`, `GetExportedKeys` and `GetCrossReference` answers.
pub fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        nullable("pk_catalog_name", DataType::Utf8),
        nullable("pk_db_schema_name", DataType::Utf8),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        nullable("fk_catalog_name", DataType::Utf8),
        nullable("fk_db_schema_name", DataType::Utf8),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        nullable("fk_key_name", DataType::Utf8),
        nullable("pk_key_name", DataType::Utf8),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// Foreign keys whose referencing side matches `fk` and referenced side `pk`
/// (either may be open). DuckDB's foreign keys restrict (rule 1, "RESTRICT").
pub fn foreign_keys(
    db: &Database,
    pk: Option<TableRef<'_>>,
    fk: Option<TableRef<'_>>,
) -> Result<RecordBatch> {
    let mut text_columns: Vec<StringBuilder> = (0..8).map(|_| StringBuilder::new()).collect();
    let mut names: Vec<StringBuilder> = (0..2).map(|_| StringBuilder::new()).collect();
    let mut seq = Int32Builder::new();
    let mut rules: Vec<UInt8Builder> = (0..2).map(|_| UInt8Builder::new()).collect();
    for row in constraints(db, "FOREIGN KEY")? {
        let (catalog, schema, table) = (text(&row[0]), text(&row[1]), text(&row[2]));
        let referenced = text(&row[5]);
        // DuckDB's foreign keys reference a table of the same schema.
        if fk
            .as_ref()
            .is_some_and(|f| !f.matches(catalog, schema, table))
            || pk
                .as_ref()
                .is_some_and(|p| !p.matches(catalog, schema, referenced))
        {
            continue;
        }
        let from = columns(&row[4]);
        let to = columns(&row[6]);
        for (i, (f, p)) in from.iter().zip(to.iter()).enumerate() {
            let values = [catalog, schema, referenced, p, catalog, schema, table, f];
            for (builder, value) in text_columns.iter_mut().zip(values) {
                builder.append_value(value);
            }
            seq.append_value(i as i32 + 1);
            names[0].append_option(row[3].as_deref());
            names[1].append_null();
            rules[0].append_value(1);
            rules[1].append_value(1);
        }
    }
    let mut arrays: Vec<ArrayRef> = text_columns
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    arrays.push(Arc::new(seq.finish()));
    arrays.extend(names.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    arrays.extend(rules.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    Ok(RecordBatch::try_new(foreign_keys_schema(), arrays)?)
}

/// What the server tells `GetSqlInfo`: only what holds for Mallard.
pub fn sql_info(statement_timeout_ms: i32, transaction_timeout_ms: i32) -> Result<SqlInfoData> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Mallard");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, arrow::ARROW_VERSION);
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::Transaction as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, true);
    b.append(
        SqlInfo::FlightSqlServerStatementTimeout,
        statement_timeout_ms,
    );
    b.append(
        SqlInfo::FlightSqlServerTransactionTimeout,
        transaction_timeout_ms,
    );
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, true);
    b.append(SqlInfo::SqlDdlTable, true);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlTransactionsSupported, true);
    Ok(b.build()?)
}

fn type_info(name: &str, data_type: XdbcDataType, unsigned: Option<bool>) -> XdbcTypeInfo {
    let quoted = matches!(
        data_type,
        XdbcDataType::XdbcVarchar
            | XdbcDataType::XdbcDate
            | XdbcDataType::XdbcTimestamp
            | XdbcDataType::XdbcTime
    );
    XdbcTypeInfo {
        type_name: name.into(),
        data_type,
        column_size: None,
        literal_prefix: quoted.then(|| "'".into()),
        literal_suffix: quoted.then(|| "'".into()),
        create_params: (data_type == XdbcDataType::XdbcDecimal)
            .then(|| vec!["precision".into(), "scale".into()]),
        nullable: Nullable::NullabilityNullable,
        case_sensitive: data_type == XdbcDataType::XdbcVarchar,
        searchable: Searchable::Full,
        unsigned_attribute: unsigned,
        fixed_prec_scale: false,
        auto_increment: None,
        local_type_name: Some(name.into()),
        minimum_scale: None,
        maximum_scale: None,
        sql_data_type: data_type,
        datetime_subcode: None,
        num_prec_radix: None,
        interval_precision: None,
    }
}

/// DuckDB's column types as `GetXdbcTypeInfo` reports them.
pub static XDBC_TYPES: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    use XdbcDataType as X;
    let mut b = XdbcTypeInfoDataBuilder::new();
    for (name, ty, unsigned) in [
        ("BOOLEAN", X::XdbcBit, None),
        ("TINYINT", X::XdbcTinyint, Some(false)),
        ("SMALLINT", X::XdbcSmallint, Some(false)),
        ("INTEGER", X::XdbcInteger, Some(false)),
        ("BIGINT", X::XdbcBigint, Some(false)),
        ("UTINYINT", X::XdbcTinyint, Some(true)),
        ("USMALLINT", X::XdbcSmallint, Some(true)),
        ("UINTEGER", X::XdbcInteger, Some(true)),
        ("UBIGINT", X::XdbcBigint, Some(true)),
        ("FLOAT", X::XdbcReal, Some(false)),
        ("DOUBLE", X::XdbcDouble, Some(false)),
        ("DECIMAL", X::XdbcDecimal, Some(false)),
        ("VARCHAR", X::XdbcVarchar, None),
        ("BLOB", X::XdbcVarbinary, None),
        ("DATE", X::XdbcDate, None),
        ("TIME", X::XdbcTime, None),
        ("TIMESTAMP", X::XdbcTimestamp, None),
    ] {
        b.append(type_info(name, ty, unsigned));
    }
    b.build().expect("static type table builds")
});

#[cfg(test)]
mod tests {
    use super::like;

    #[test]
    fn like_patterns_match_as_sql_does() {
        assert!(like("%", ""));
        assert!(like("fl%", "flights"));
        assert!(like("f_ights", "flights"));
        assert!(!like("f_ights", "fights"));
        assert!(like("%ght%", "flights"));
        assert!(!like("flights", "flights2"));
        assert!(like("%%_", "x"));
        assert!(!like("_", ""));
        assert!(like("a\\_b", "a_b"));
        assert!(!like("a\\_b", "axb"));
        // A hostile pattern stays cheap.
        let pattern = "%a".repeat(200) + "b";
        assert!(!like(&pattern, &"a".repeat(5_000)));
    }
}
