//! Server configuration, independent of how it was given (flags, environment, tests).

use crate::auth::{DEFAULT_TOKEN_TTL, User};
use mallard_db::DbOptions;
use mallard_sandbox::Limits;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest gRPC message accepted or sent: a coalesced batch of wide rows fits.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;
/// How long a graceful shutdown waits for in-flight calls before cancelling them.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// TLS material for a server, PEM-encoded.
#[derive(Clone, Default)]
pub struct ServerTls {
    /// Certificate chain.
    pub cert_pem: Vec<u8>,
    /// Private key.
    pub key_pem: Vec<u8>,
    /// When set, clients must present a certificate signed by this CA (mTLS).
    pub client_ca_pem: Option<Vec<u8>>,
}

impl ServerTls {
    /// Reads the certificate chain, key and optional client CA from PEM files.
    pub fn read(cert: &Path, key: &Path, client_ca: Option<&Path>) -> std::io::Result<Self> {
        Ok(Self {
            cert_pem: read_pem(cert)?,
            key_pem: read_pem(key)?,
            client_ca_pem: client_ca.map(read_pem).transpose()?,
        })
    }
}

/// Reads a PEM file; the error names the file.
pub fn read_pem(path: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))
}

/// Everything one server needs.
#[derive(Clone)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The DuckDB database.
    pub db: DbOptions,
    /// Where uploaded exchangers are kept; `None` keeps them in memory only.
    pub data_dir: Option<PathBuf>,
    /// Sandbox limits.
    pub limits: Limits,
    /// What each user's exchangers may take.
    pub quotas: mallard_exchange::quotas::Quotas,
    /// Serve Prometheus metrics over HTTP on this address (`/metrics`).
    pub metrics_listen: Option<SocketAddr>,
    /// A bearer token that may read `/metrics` (admins' credentials always may).
    pub metrics_token: Option<String>,
    /// Whether `/metrics` names users' private exchangers (owner, name, version,
    /// digest); off: they are added up under `owner="private"`.
    pub metrics_private_labels: bool,
    /// Users; empty means the development default `admin`/`password123`.
    pub users: HashMap<String, User>,
    /// Bearer token lifetime.
    pub token_ttl: Duration,
    /// Credentials `push_table` presents to other servers, unless the action gives some.
    pub push_credentials: Option<(String, String)>,
    /// Largest gRPC message, in bytes.
    pub max_message_bytes: usize,
    /// Grace period for in-flight calls at shutdown.
    pub shutdown_grace: Duration,
    /// Serve the development credentials on a non-loopback address anyway.
    pub allow_default_credentials: bool,
    /// Most exchanges one user may run at once.
    pub max_exchanges_per_user: usize,
    /// Output an exchange may hold for a client that writes before it reads.
    pub exchange_output: mallard_exchange::output::OutputBudget,
    /// Serve TLS (`grpc+tls://`) instead of plain HTTP/2.
    pub tls: Option<ServerTls>,
    /// How `push_table` connects to `grpc+tls://` targets (CA, client identity).
    pub push_tls: Option<crate::transport::ClientTls>,
    /// Targets `push_table` may connect to; empty: the servers of this process.
    pub push_allow: Vec<mallard_protocol::PushTarget>,
    /// How long a client may leave a `do_get` unread, a `do_put` or exchange
    /// without input, or a push target may read nothing, before the stream is
    /// stopped and its thread and DuckDB connection freed.
    pub stall_timeout: Duration,
    /// Most `do_get` streams one user may have open at once.
    pub max_queries_per_user: usize,
    /// Most `do_put` streams one user may have open at once.
    pub max_puts_per_user: usize,
    /// Bytes of query output one user's `do_get` streams may hold queued at once.
    pub query_output_per_user_bytes: usize,
    /// Most concurrent HTTP/2 streams (calls) per client connection.
    pub max_streams_per_connection: u32,
    /// Most instances one stateless exchange stage runs on; 1 turns it off.
    pub exchange_instances: usize,
    /// Instances beyond each stage's first that one user may hold at once.
    pub max_extra_instances_per_user: usize,
    /// The key this node shares with its peers: its tokens are signed with it and
    /// theirs accepted (each node applying its own roles).
    pub cluster_key: Option<crate::cluster::ClusterKey>,
    /// The other nodes of the cluster (`x-mallard-nodes: all` asks each of them);
    /// with a non-empty `push_allow`, each must be in it.
    pub peers: Vec<mallard_protocol::PushTarget>,
}

pub use mallard_db::DEFAULT_QUERY_TIMEOUT;
/// Default concurrent exchanges per user: a few streams each, so one user cannot
/// take every core.
pub const DEFAULT_MAX_EXCHANGES_PER_USER: usize = 8;
/// Default output one exchange may queue for a client that is not reading yet:
/// pyarrow's write-everything-then-read pattern fits about 4M rows of the
/// benchmark's shape.
pub const DEFAULT_EXCHANGE_OUTPUT_BUFFER_MIB: usize = 256;
/// Default stall timeout: a client that reads or sends nothing for this long
/// loses the stream (see [`ServerConfig::stall_timeout`]).
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default open `do_get` streams per user: enough for parallel readers, few
/// enough that one user's unread streams (each up to 4 batches queued) stay small.
pub const DEFAULT_MAX_QUERIES_PER_USER: usize = 16;
/// Default query output one user's streams may hold queued (in MiB): a few
/// batches for each of a handful of streams; unread streams wait on it.
pub const DEFAULT_QUERY_OUTPUT_PER_USER_MIB: usize = 256;
/// Default open `do_put` streams per user.
pub const DEFAULT_MAX_PUTS_PER_USER: usize = 8;
/// Default concurrent calls per connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// Default instances per stateless stage: the machine's cores, at most 8.
pub fn default_exchange_instances() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}
/// Default instances beyond each stage's first one user may hold at once: two
/// streams' worth on an 8-core machine.
pub const DEFAULT_MAX_EXTRA_INSTANCES_PER_USER: usize = 14;
/// Default time a full exchange output queue waits for its client to read.
pub const DEFAULT_EXCHANGE_OUTPUT_STALL: Duration = Duration::from_secs(30);

impl ServerConfig {
    /// Defaults for a server on `listen` with an in-memory database.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            db: DbOptions::default(),
            data_dir: None,
            limits: Limits::default(),
            quotas: Default::default(),
            metrics_listen: None,
            metrics_token: None,
            metrics_private_labels: false,
            users: HashMap::new(),
            token_ttl: DEFAULT_TOKEN_TTL,
            push_credentials: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            allow_default_credentials: false,
            max_exchanges_per_user: DEFAULT_MAX_EXCHANGES_PER_USER,
            exchange_output: mallard_exchange::output::OutputBudget {
                bytes: DEFAULT_EXCHANGE_OUTPUT_BUFFER_MIB << 20,
                stall: DEFAULT_EXCHANGE_OUTPUT_STALL,
            },
            tls: None,
            push_tls: None,
            push_allow: Vec::new(),
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            max_queries_per_user: DEFAULT_MAX_QUERIES_PER_USER,
            max_puts_per_user: DEFAULT_MAX_PUTS_PER_USER,
            query_output_per_user_bytes: DEFAULT_QUERY_OUTPUT_PER_USER_MIB << 20,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            exchange_instances: default_exchange_instances(),
            max_extra_instances_per_user: DEFAULT_MAX_EXTRA_INSTANCES_PER_USER,
            cluster_key: None,
            peers: Vec::new(),
        }
    }
}
