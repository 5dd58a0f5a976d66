//! `mallard`: run DuckDB-backed Arrow Flight servers with sandboxed exchangers.
//!
//! `mallard serve` starts the seeds' two servers on 127.0.0.1:8815 and :8816;
//! `mallard serve --listen HOST:PORT [--db FILE] [--data-dir DIR]` runs one (repeat
//! `--listen` for more). Ctrl-C or SIGTERM shuts down gracefully.

use anyhow::{Context, bail};
use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};
use mallard::auth::{Role, User};
use mallard::exchange::quotas;
use mallard::sandbox::Limits;
use mallard::{ServerConfig, server};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "mallard",
    version,
    about = "DuckDB Arrow Flight servers with sandboxed WebAssembly exchangers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one or more servers until Ctrl-C / SIGTERM.
    Serve(Box<ServeArgs>),
    /// Read a password from stdin and print its argon2id hash for a users file.
    HashPassword,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to serve on; repeat for several servers (each with its own database).
    #[arg(long, env = "MALLARD_LISTEN", value_delimiter = ',', default_values = ["127.0.0.1:8815", "127.0.0.1:8816"])]
    listen: Vec<SocketAddr>,
    /// DuckDB database file for durable tables (one --listen only); default in memory.
    #[arg(long, env = "MALLARD_DB")]
    db: Option<PathBuf>,
    /// Directory for uploaded exchangers (kept across restarts); default in memory.
    #[arg(long, env = "MALLARD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Users as `name:password:role` (role `user` or `admin`), comma-separated.
    /// Default: the development credentials admin:password123.
    #[arg(
        long,
        env = "MALLARD_USERS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    users: Vec<String>,
    /// Users file (TOML `[[user]]` tables with name, password_hash, role); combined
    /// with --users.
    #[arg(long, env = "MALLARD_USERS_FILE")]
    users_file: Option<PathBuf>,
    /// Bearer token lifetime in seconds.
    #[arg(long, env = "MALLARD_TOKEN_TTL_SECS", default_value_t = 3600)]
    token_ttl_secs: u64,
    /// Credentials `push_table` uses on target servers, `user:password`.
    #[arg(long, env = "MALLARD_PUSH_CREDENTIALS", hide_env_values = true)]
    push_credentials: Option<String>,
    /// Linear memory per exchanger instance, MiB.
    #[arg(long, env = "MALLARD_EXCHANGER_MEMORY_MB", default_value_t = (Limits::default().max_memory_bytes >> 20) as u64)]
    exchanger_memory_mb: u64,
    /// CPU deadline per exchanger call (one batch), milliseconds.
    #[arg(long, env = "MALLARD_EXCHANGER_TIMEOUT_MS", default_value_t = Limits::default().call_timeout.as_millis() as u64)]
    exchanger_timeout_ms: u64,
    /// Wasm stack per exchanger call, KiB.
    #[arg(long, env = "MALLARD_EXCHANGER_STACK_KB", default_value_t = (Limits::default().max_stack_bytes >> 10) as u64)]
    exchanger_stack_kb: u64,
    /// Largest exchanger upload, MiB.
    #[arg(long, env = "MALLARD_MAX_UPLOAD_MB", default_value_t = (Limits::default().max_component_bytes >> 20) as u64)]
    max_upload_mb: u64,
    /// Total MiB of uploaded components the server keeps, all namespaces.
    #[arg(long, env = "MALLARD_MAX_STORED_MB", default_value_t = (quotas::DEFAULT_STORED_BYTES_TOTAL >> 20) as u64)]
    max_stored_mb: u64,
    /// Exchangers (names) one user may keep.
    #[arg(long, env = "MALLARD_MAX_EXCHANGERS_PER_USER", default_value_t = quotas::DEFAULT_MAX_EXCHANGERS_PER_USER)]
    max_exchangers_per_user: usize,
    /// Versions kept of one exchanger.
    #[arg(long, env = "MALLARD_MAX_VERSIONS_PER_EXCHANGER", default_value_t = quotas::DEFAULT_MAX_VERSIONS_PER_EXCHANGER)]
    max_versions_per_exchanger: usize,
    /// MiB of components one user may keep.
    #[arg(long, env = "MALLARD_EXCHANGER_STORAGE_PER_USER_MIB", default_value_t = quotas::DEFAULT_STORED_BYTES_PER_USER >> 20)]
    exchanger_storage_per_user_mib: usize,
    /// MiB of guest memory all of one user's live exchanger instances may hold.
    #[arg(long, env = "MALLARD_GUEST_MEMORY_PER_USER_MIB", default_value_t = quotas::DEFAULT_GUEST_MEMORY_PER_USER >> 20)]
    guest_memory_per_user_mib: usize,
    /// Seconds one upload may spend compiling.
    #[arg(long, env = "MALLARD_MAX_COMPILE_SECS", default_value_t = quotas::DEFAULT_MAX_COMPILE_TIME.as_secs())]
    max_compile_secs: u64,
    /// Seconds one upload may wait for its turn at the compiler (uploads compile
    /// one at a time, users served in turn).
    #[arg(long, env = "MALLARD_MAX_COMPILE_WAIT_SECS", default_value_t = mallard::exchange::compile_queue::DEFAULT_MAX_COMPILE_WAIT.as_secs())]
    max_compile_wait_secs: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default); with
    /// several --listen, the Nth server uses the port N-1 above this one.
    #[arg(long, env = "MALLARD_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// A file holding a bearer token that may read /metrics (for Prometheus's
    /// `authorization.credentials_file`); admins' credentials always may.
    #[arg(long, env = "MALLARD_METRICS_TOKEN_FILE")]
    metrics_token_file: Option<PathBuf>,
    /// Name users' private exchangers in /metrics (by default they are added up
    /// under owner="private").
    #[arg(long, env = "MALLARD_METRICS_PRIVATE_LABELS")]
    metrics_private_labels: bool,
    /// DuckDB memory limit (e.g. `4GB`).
    #[arg(long, env = "MALLARD_DUCKDB_MEMORY_LIMIT")]
    duckdb_memory_limit: Option<String>,
    /// DuckDB worker threads.
    #[arg(long, env = "MALLARD_DUCKDB_THREADS")]
    duckdb_threads: Option<u32>,
    /// Directory SQL may read and write files in (repeatable); default none.
    #[arg(long, env = "MALLARD_ALLOW_DIR", value_delimiter = ',')]
    allow_dir: Vec<PathBuf>,
    /// Serve the development credentials on a non-loopback address anyway.
    #[arg(long, env = "MALLARD_ALLOW_DEFAULT_CREDENTIALS")]
    allow_default_credentials: bool,
    /// Seconds a query may run before it is interrupted.
    #[arg(long, env = "MALLARD_QUERY_TIMEOUT_SECS", default_value_t = mallard::config::DEFAULT_QUERY_TIMEOUT.as_secs())]
    query_timeout_secs: u64,
    /// Most exchanges one user may run at once.
    #[arg(long, env = "MALLARD_MAX_EXCHANGES_PER_USER", default_value_t = mallard::config::DEFAULT_MAX_EXCHANGES_PER_USER)]
    max_exchanges_per_user: usize,
    /// MiB of output one exchange may hold while its client writes before reading.
    #[arg(long, env = "MALLARD_EXCHANGE_OUTPUT_BUFFER_MIB", default_value_t = mallard::config::DEFAULT_EXCHANGE_OUTPUT_BUFFER_MIB)]
    exchange_output_buffer_mib: usize,
    /// Seconds a full exchange output buffer waits for the client to read before failing.
    #[arg(long, env = "MALLARD_EXCHANGE_OUTPUT_STALL_SECS", default_value_t = mallard::config::DEFAULT_EXCHANGE_OUTPUT_STALL.as_secs())]
    exchange_output_stall_secs: u64,
    /// TLS certificate chain (PEM); with --tls-key, serve grpc+tls://.
    #[arg(long, env = "MALLARD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "MALLARD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) whose client certificates are required (mTLS).
    #[arg(long, env = "MALLARD_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// CA (PEM) that push_table trusts for grpc+tls:// targets.
    #[arg(long, env = "MALLARD_PUSH_CA")]
    push_ca: Option<PathBuf>,
    /// Seconds in-flight calls get to finish at shutdown.
    #[arg(long, env = "MALLARD_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    shutdown_grace_secs: u64,
    /// A target `push_table` may connect to, as grpc://host:port or
    /// grpc+tls://host:port (repeatable). Default: only this process's own servers.
    #[arg(long, env = "MALLARD_PUSH_ALLOW", value_delimiter = ',')]
    push_allow: Vec<String>,
    /// Seconds a client may leave a do_get unread, or a do_put or exchange without
    /// input, or a push target may read nothing, before the stream is stopped.
    #[arg(long, env = "MALLARD_STALL_TIMEOUT_SECS", default_value_t = mallard::config::DEFAULT_STALL_TIMEOUT.as_secs())]
    stall_timeout_secs: u64,
    /// Most do_get streams one user may have open at once.
    #[arg(long, env = "MALLARD_MAX_QUERIES_PER_USER", default_value_t = mallard::config::DEFAULT_MAX_QUERIES_PER_USER)]
    max_queries_per_user: usize,
    /// MiB of query output one user's do_get streams may hold queued at once.
    #[arg(long, env = "MALLARD_QUERY_OUTPUT_PER_USER_MIB", default_value_t = mallard::config::DEFAULT_QUERY_OUTPUT_PER_USER_MIB)]
    query_output_per_user_mib: usize,
    /// Most do_put streams one user may have open at once.
    #[arg(long, env = "MALLARD_MAX_PUTS_PER_USER", default_value_t = mallard::config::DEFAULT_MAX_PUTS_PER_USER)]
    max_puts_per_user: usize,
    /// Most concurrent calls on one client connection.
    #[arg(long, env = "MALLARD_MAX_STREAMS_PER_CONNECTION", default_value_t = mallard::config::DEFAULT_MAX_STREAMS_PER_CONNECTION)]
    max_streams_per_connection: u32,
    /// Most instances (threads) one stateless exchange stage runs on; 1 turns
    /// parallel stages off. Default: the machine's cores, at most 8.
    #[arg(long, env = "MALLARD_EXCHANGE_INSTANCES", default_value_t = mallard::config::default_exchange_instances(),
          value_parser = clap::value_parser!(u32).range(1..=mallard_protocol::exchange::MAX_INSTANCES as i64).map(|n| n as usize))]
    exchange_instances: usize,
    /// Instances beyond each stage's first that one user may hold at once; when
    /// they are taken, stages run on fewer instances.
    #[arg(long, env = "MALLARD_MAX_EXTRA_INSTANCES_PER_USER", default_value_t = mallard::config::DEFAULT_MAX_EXTRA_INSTANCES_PER_USER)]
    max_extra_instances_per_user: usize,
    /// A file holding the key this node shares with its peers (at least 32
    /// bytes): its tokens are signed with it, and its peers' tokens accepted.
    #[arg(long, env = "MALLARD_CLUSTER_KEY_FILE")]
    cluster_key_file: Option<PathBuf>,
    /// Another node of the cluster, as grpc://host:port or grpc+tls://host:port
    /// (repeatable); a get_flight_info with `x-mallard-nodes: all` asks each.
    #[arg(long, env = "MALLARD_PEER", value_delimiter = ',')]
    peer: Vec<String>,
}

fn parse_users(specs: &[String]) -> anyhow::Result<HashMap<String, User>> {
    let mut users = HashMap::new();
    for spec in specs.iter().filter(|s| !s.is_empty()) {
        let mut parts = spec.splitn(3, ':');
        let (Some(name), Some(password)) = (parts.next(), parts.next()) else {
            bail!("user spec must be name:password[:role]");
        };
        let role = match parts.next().unwrap_or("user") {
            "admin" => Role::Admin,
            "user" => Role::User,
            "reader" => Role::Reader,
            other => bail!("unknown role {other:?} for user {name:?} (use reader, user or admin)"),
        };
        users.insert(name.to_owned(), User::new(password, role));
    }
    Ok(users)
}

/// Server URLs given to a repeatable flag, parsed (empty values skipped).
fn targets(urls: &[String]) -> anyhow::Result<Vec<mallard_protocol::PushTarget>> {
    urls.iter()
        .filter(|t| !t.is_empty())
        .map(|t| mallard_protocol::PushTarget::parse(t).map_err(anyhow::Error::from))
        .collect()
}

fn configs(args: &ServeArgs) -> anyhow::Result<Vec<ServerConfig>> {
    if args.db.is_some() && args.listen.len() != 1 {
        bail!("--db needs exactly one --listen (each server has its own database)");
    }
    if args.data_dir.is_some() && args.listen.len() != 1 {
        bail!("--data-dir needs exactly one --listen");
    }
    let mut users = parse_users(&args.users)?;
    if let Some(path) = &args.users_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        users.extend(
            mallard::auth::parse_users_file(&text)
                .with_context(|| format!("in {}", path.display()))?,
        );
    }
    let push_credentials = match &args.push_credentials {
        Some(c) => {
            let (u, p) = c
                .split_once(':')
                .context("--push-credentials must be user:password")?;
            Some((u.to_owned(), p.to_owned()))
        }
        None => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(mallard::config::ServerTls::read(
            cert,
            key,
            args.tls_client_ca.as_deref(),
        )?),
        _ => None,
    };
    let push_tls = args
        .push_ca
        .as_deref()
        .map(mallard::transport::ClientTls::trusting_file)
        .transpose()?;
    let push_allow = targets(&args.push_allow).context("--push-allow")?;
    let peers = targets(&args.peer).context("--peer")?;
    let cluster_key = args
        .cluster_key_file
        .as_ref()
        .map(|path| -> anyhow::Result<mallard::cluster::ClusterKey> {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading --cluster-key-file {}", path.display()))?;
            mallard::cluster::ClusterKey::new(&bytes)
                .with_context(|| format!("--cluster-key-file {}", path.display()))
        })
        .transpose()?;
    let limits = Limits {
        max_memory_bytes: (args.exchanger_memory_mb as usize) << 20,
        call_timeout: Duration::from_millis(args.exchanger_timeout_ms),
        max_stack_bytes: (args.exchanger_stack_kb as usize) << 10,
        max_component_bytes: (args.max_upload_mb as usize) << 20,
        ..Limits::default()
    };
    let metrics_token = args
        .metrics_token_file
        .as_ref()
        .map(|path| -> anyhow::Result<String> {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("reading --metrics-token-file {}", path.display()))?;
            let token = token.trim().to_owned();
            anyhow::ensure!(
                token.len() >= 16,
                "--metrics-token-file {} holds a token of {} characters; use at least 16",
                path.display(),
                token.len()
            );
            Ok(token)
        })
        .transpose()?;
    let quotas = quotas::Quotas {
        max_exchangers_per_user: args.max_exchangers_per_user,
        max_versions_per_exchanger: args.max_versions_per_exchanger,
        stored_bytes_per_user: args.exchanger_storage_per_user_mib << 20,
        stored_bytes_total: (args.max_stored_mb as usize) << 20,
        guest_memory_per_user: args.guest_memory_per_user_mib << 20,
        max_compile_time: Duration::from_secs(args.max_compile_secs),
        max_compile_wait: Duration::from_secs(args.max_compile_wait_secs),
    };
    Ok(args
        .listen
        .iter()
        .enumerate()
        .map(|(index, &listen)| {
            let mut config = ServerConfig::new(listen);
            config.quotas = quotas.clone();
            config.metrics_listen = args.metrics_listen.map(|mut at| {
                if at.port() != 0 {
                    at.set_port(at.port() + index as u16);
                }
                at
            });
            config.metrics_token = metrics_token.clone();
            config.metrics_private_labels = args.metrics_private_labels;
            config.db.path = args.db.clone();
            config.db.memory_limit = args.duckdb_memory_limit.clone();
            config.db.threads = args.duckdb_threads;
            config.db.allowed_dirs = args.allow_dir.clone();
            config.data_dir = args.data_dir.clone();
            config.limits = limits.clone();
            config.users = users.clone();
            config.token_ttl = Duration::from_secs(args.token_ttl_secs);
            config.push_credentials = push_credentials.clone();
            config.shutdown_grace = Duration::from_secs(args.shutdown_grace_secs);
            config.allow_default_credentials = args.allow_default_credentials;
            config.db.query_timeout = Duration::from_secs(args.query_timeout_secs);
            config.max_exchanges_per_user = args.max_exchanges_per_user;
            config.exchange_output = mallard::exchange::output::OutputBudget {
                bytes: args.exchange_output_buffer_mib << 20,
                stall: Duration::from_secs(args.exchange_output_stall_secs),
            };
            config.tls = tls.clone();
            config.push_tls = push_tls.clone();
            config.push_allow = push_allow.clone();
            config.stall_timeout = Duration::from_secs(args.stall_timeout_secs);
            config.max_queries_per_user = args.max_queries_per_user;
            config.max_puts_per_user = args.max_puts_per_user;
            config.query_output_per_user_bytes = args.query_output_per_user_mib << 20;
            config.max_streams_per_connection = args.max_streams_per_connection;
            config.exchange_instances = args.exchange_instances;
            config.max_extra_instances_per_user = args.max_extra_instances_per_user;
            config.cluster_key = cluster_key.clone();
            config.peers = peers.clone();
            config
        })
        .collect())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::HashPassword => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                bail!("empty password; pipe it in: echo -n 'secret' | mallard hash-password");
            }
            println!("{}", mallard::auth::hash_password(password));
        }
        Command::Serve(args) => {
            let mut running = Vec::new();
            for config in configs(&args)? {
                let addr = config.listen;
                running.push(
                    server::start(config)
                        .await
                        .with_context(|| format!("starting {addr}"))?,
                );
            }
            shutdown_signal().await;
            tracing::info!("shutting down");
            for server in running {
                server.stop().await?;
            }
        }
    }
    Ok(())
}
