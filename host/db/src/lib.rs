//! The DuckDB side of Mallard: one database per server, a fresh connection per
//! request, locked down by default.
//!
//! DuckDB calls block, so everything in here runs on blocking threads; results
//! reach the async world through bounded channels (see [`query`] and [`ingest`]).

pub mod arrow_result;
pub mod catalog;
pub mod duckdb_arrow;
pub mod ingest;
pub mod params;
pub mod query;
pub mod raw;
pub mod scalar_function;
pub mod scopes;
pub mod session;
pub mod statements;
pub mod table_function;
pub mod tokens;
pub mod types;

use duckdb::Connection;
use mallard_core::gauges::Gauge;
use mallard_core::{Error, Result};
use raw::{RawConnection, RawDatabase};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How to open the database and what SQL may reach.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// A DuckDB file for durable tables; `None` keeps everything in memory.
    pub path: Option<PathBuf>,
    /// Directories SQL may read from and write to. Empty: no file access at all.
    pub allowed_dirs: Vec<PathBuf>,
    /// DuckDB's `memory_limit` (e.g. `4GB`); `None` keeps DuckDB's default (80% of RAM).
    pub memory_limit: Option<String>,
    /// DuckDB worker threads; `None` keeps DuckDB's default (one per core).
    pub threads: Option<u32>,
    /// Longest a query may run before it is interrupted (DeadlineExceeded).
    pub query_timeout: Duration,
}

/// Default query timeout: long enough for big exports, short enough to free a
/// server from a runaway query.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(600);

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            path: None,
            allowed_dirs: Vec::new(),
            memory_limit: None,
            threads: None,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
        }
    }
}

/// One DuckDB database shared by all requests of a server.
pub struct Database {
    /// Queries whose DuckDB connection is open (result still streaming).
    pub live_queries: Gauge,
    /// Ingests whose DuckDB connection is open.
    pub live_ingests: Gauge,
    /// Who each request's connection serves (for table functions' binds).
    pub scopes: Arc<scopes::ConnectionScopes>,
    root: Mutex<Connection>,
    options: DbOptions,
    raw: RawDatabase,
    /// DuckDB's spill directory: private to this server (0700, random name),
    /// removed when the database closes.
    _temp: tempfile::TempDir,
}

/// PermissionDenied-worthy configuration: an allowed directory must not contain
/// the database's files or its temp directory (SQL could then rewrite them).
fn check_allowed_dirs(options: &DbOptions, temp: &std::path::Path) -> Result<()> {
    let own: Vec<PathBuf> = options
        .path
        .iter()
        .filter_map(|p| std::path::absolute(p).ok())
        .chain(std::iter::once(temp.to_path_buf()))
        .collect();
    for dir in &options.allowed_dirs {
        let dir = std::path::absolute(dir).map_err(|e| {
            Error::invalid_argument(format!("allowed directory {}: {e}", dir.display()))
        })?;
        if let Some(inside) = own.iter().find(|p| p.starts_with(&dir)) {
            return Err(Error::invalid_argument(format!(
                "allowed directory {} contains the server's own file {}; allow a directory \
                 that holds neither the database nor its temp files",
                dir.display(),
                inside.display()
            )));
        }
    }
    Ok(())
}

/// The statements that lock a freshly opened database down: the directories SQL
/// may still reach (none when `allowed_dirs` is empty), then no other external
/// access and no configuration changes.
fn lockdown_sql(allowed_dirs: &[PathBuf]) -> String {
    let mut sql = String::new();
    if !allowed_dirs.is_empty() {
        let dirs: Vec<String> = allowed_dirs
            .iter()
            .map(|d| format!("'{}'", d.display().to_string().replace('\'', "''")))
            .collect();
        sql.push_str(&format!(
            "SET allowed_directories = [{}]; ",
            dirs.join(", ")
        ));
    }
    sql.push_str("SET enable_external_access = false; SET lock_configuration = true;");
    sql
}

impl Database {
    /// Opens (or creates) the database with file and network access, extension
    /// installs and configuration changes disabled unless `options` allow them.
    pub fn open(options: DbOptions) -> Result<Self> {
        let temp = tempfile::Builder::new()
            .prefix("mallard-duckdb-")
            .tempdir()
            .map_err(|e| Error::internal(format!("cannot create DuckDB's temp directory: {e}")))?;
        check_allowed_dirs(&options, temp.path())?;
        let mut settings: Vec<(&str, String)> = vec![
            ("autoload_known_extensions", "false".into()),
            ("autoinstall_known_extensions", "false".into()),
            ("temp_directory", temp.path().display().to_string()),
        ];
        if let Some(limit) = &options.memory_limit {
            settings.push(("memory_limit", limit.clone()));
        }
        if let Some(threads) = options.threads {
            settings.push(("threads", threads.to_string()));
        }
        let raw = RawDatabase::open(options.path.as_deref(), &settings)?;
        // SAFETY: `raw` is a valid open database and outlives `conn` (field order
        // in `Database` drops connections first; raw close is reference-counted).
        let conn = unsafe { Connection::open_from_raw(raw.handle()) }
            .map_err(|e| Error::internal(format!("cannot open DuckDB: {e}")))?;
        // DuckDB takes allowed directories only once it is running, and external
        // access goes off after opening, so a --db file can still be opened;
        // lock_configuration keeps clients from turning anything back on.
        conn.execute_batch(&lockdown_sql(&options.allowed_dirs))
            .map_err(|e| Error::internal(format!("cannot lock DuckDB down: {e}")))?;
        Ok(Self {
            live_queries: Gauge::default(),
            live_ingests: Gauge::default(),
            scopes: Arc::default(),
            root: Mutex::new(conn),
            options,
            raw,
            _temp: temp,
        })
    }

    /// A raw connection (for DuckDB's Arrow stream scan).
    pub fn connect_raw(&self) -> Result<RawConnection> {
        self.raw.connect()
    }

    /// A new connection to the database, for one request.
    pub fn connect(&self) -> Result<Connection> {
        let root = self
            .root
            .lock()
            .map_err(|_| Error::internal("database lock poisoned"))?;
        root.try_clone()
            .map_err(|e| Error::internal(format!("cannot open a connection: {e}")))
    }

    /// The options the database was opened with.
    pub fn options(&self) -> &DbOptions {
        &self.options
    }

    /// Checkpoints a file-backed database so its WAL is folded in before exit.
    pub fn checkpoint(&self) -> Result<()> {
        if self.options.path.is_some() {
            self.connect()?.execute_batch("CHECKPOINT")?;
        }
        Ok(())
    }
}
