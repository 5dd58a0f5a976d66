//! `mallard-demo`: the walkthrough of the seeds' demo against two Mallard servers
//! (started here when none answer), the flights data generator, the benchmark,
//! and the exchanger lifecycle (upload, exchangers, remove, exchange, sql).

mod bench;
mod cluster_bench;
mod data;
mod figures;
mod guest;
mod lifecycle;
mod load;
mod ops;
mod python;
mod servers;
mod tls;
mod walkthrough;

use anyhow::Result;
use clap::{Parser, Subcommand};
use lifecycle::UploadTo;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "mallard-demo",
    version,
    about = "Mallard walkthrough, data generator and benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Server 1 address (`--server` for the lifecycle commands).
    #[arg(
        long,
        visible_alias = "server",
        global = true,
        env = "MALLARD_SERVER",
        default_value = "127.0.0.1:8815"
    )]
    server1: String,
    /// Server 2 address.
    #[arg(long, global = true, default_value = "127.0.0.1:8816")]
    server2: String,
    /// User name.
    #[arg(long, global = true, env = "MALLARD_USER", default_value = "admin")]
    user: String,
    /// Password.
    #[arg(
        long,
        global = true,
        env = "MALLARD_PASSWORD",
        default_value = "password123",
        hide_default_value = true
    )]
    password: String,
    /// Fail instead of starting servers when none answer.
    #[arg(long, global = true)]
    no_start: bool,
    /// Speak grpc+tls:// (servers the demo starts get a freshly minted certificate).
    #[arg(long, global = true)]
    tls: bool,
    /// Trust this CA certificate (PEM) for TLS servers started elsewhere; implies --tls.
    #[arg(long, global = true)]
    tls_ca: Option<PathBuf>,
    /// Rows of data/flights.parquet when the demo creates it.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Rows for the walkthrough's closing benchmark.
    #[arg(long, default_value_t = 1_000_000)]
    bench_rows: u64,
    /// Upload this component (.wasm) instead of building add_processed.
    #[arg(long)]
    exchanger: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Upload an exchanger component into your namespace (or, as admin, --shared).
    Upload {
        /// The component (`.wasm`).
        path: PathBuf,
        /// Into the shared namespace, visible to everyone (admin).
        #[arg(long)]
        shared: bool,
        /// Upload the same bytes to every peer of the server's cluster too.
        #[arg(long)]
        to_peers: bool,
        /// Dry-run the exchanger on this Parquet file's schema (default: flights).
        #[arg(long)]
        dry_run_schema: Option<PathBuf>,
        /// Dry-run parameter KEY=VALUE (repeatable).
        #[arg(long = "param", value_parser = lifecycle::parse_param)]
        params: Vec<(String, String)>,
    },
    /// Copy a user's exchanger version into the shared namespace (admin).
    Publish {
        /// `OWNER/NAME[@VERSION|@sha256:HEX]`.
        reference: String,
        /// Publish the same version on every peer of the server's cluster too
        /// (upload it with `upload --to-peers` first).
        #[arg(long)]
        to_peers: bool,
    },
    /// List your own and the shared exchangers.
    Exchangers,
    /// Remove an exchanger (every version) or one version (NAME@VERSION, NAME@sha256:HEX).
    Remove {
        /// `[OWNER/]NAME[@VERSION|@sha256:HEX]`.
        reference: String,
    },
    /// Stream a Parquet file through an exchanger into another Parquet file.
    Exchange {
        /// `[OWNER/]NAME[@VERSION|@sha256:HEX]`.
        reference: String,
        /// Input Parquet file.
        #[arg(long)]
        input: PathBuf,
        /// Output Parquet file (written whole or not at all).
        #[arg(long)]
        output: PathBuf,
        /// Exchanger parameter KEY=VALUE (repeatable).
        #[arg(long = "param", value_parser = lifecycle::parse_param)]
        params: Vec<(String, String)>,
        /// Most instances a stateless exchanger may run on (default: the
        /// server's --exchange-instances).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=mallard_protocol::exchange::MAX_INSTANCES as i64))]
        instances: Option<u32>,
        /// Let output batches leave in any order (a stateless exchanger on
        /// several instances); the output file's rows are then in that order.
        #[arg(long)]
        any_order: bool,
    },
    /// Run SQL and print the result.
    Sql {
        /// The statement.
        sql: String,
        /// Rows to print (all are counted).
        #[arg(long, default_value_t = 40)]
        max_rows: usize,
    },
    /// Write data/flights.parquet (or --out) with N deterministic flights rows.
    GenData {
        /// Rows to generate.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Output file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Time PUT, GET, TRANSFER, PUSH and EXCHANGE (wasm and native).
    Bench {
        /// Rows per operation.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Exchange with the sandbox on, off, or both.
        #[arg(long, value_enum, default_value_t = bench::SandboxMode::Both)]
        sandbox: bench::SandboxMode,
        /// Timed runs per operation after one warm-up; the median is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Print one JSON line last on stdout.
        #[arg(long)]
        json: bool,
        /// Only these operations (comma-separated: put,put_file,get,transfer,push,exchange,
        /// exchange_python,exchange_js,sql_exchange,push_exchange,parallel_1,parallel_n,
        /// parallel_sql_1,parallel_sql_n,scalar_wasm,scalar_native,scalar_sql,
        /// adbc_get,adbc_ingest).
        #[arg(long, value_delimiter = ',')]
        ops: Vec<String>,
        /// Skip Flight SQL through the ADBC driver (which needs python3 and pip).
        #[arg(long)]
        no_adbc: bool,
        /// Skip EXCHANGE through the Python and JavaScript `add_processed`
        /// (which need python3, pip, node and npm).
        #[arg(long)]
        no_polyglot: bool,
        /// Skip measuring DuckDB's in-process ceilings (which need python3 and pip).
        #[arg(long)]
        no_ceiling: bool,
        /// MAC rounds per value in the parallel_* ops' `pseudonymize` (1 to 1024):
        /// more work per row, the same rows.
        #[arg(long, default_value_t = 1)]
        parallel_rounds: u32,
    },
    /// Three nodes on loopback: a partitioned push, then one table read from all
    /// three through one FlightInfo (Rust, pyarrow, ADBC) beside one node's GET.
    ClusterBench {
        /// Rows of the table spread over the nodes.
        #[arg(long, default_value_t = 3_000_000)]
        rows: u64,
        /// Timed runs per operation after one warm-up; the median is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Skip pyarrow and the ADBC driver (which need python3 and pip).
        #[arg(long)]
        no_python: bool,
        /// Print one JSON line last on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Concurrent clients doing get, put, exchange and push for a fixed time.
    Load {
        /// Concurrent clients.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Also run hostile exchangers (endless loop, memory bomb) all along.
        #[arg(long)]
        hostile: bool,
        /// With --hostile: one more user (role user) opens this many do_get
        /// streams of a large result and never reads them.
        #[arg(long, default_value_t = 0)]
        unread_streams: usize,
        /// Print one JSON line last on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run one Mallard server in this process (used to start the demo's servers).
    #[command(hide = true)]
    Serve {
        /// Address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Concurrent exchanges, do_get and do_put streams per user (the load tool
        /// runs 32 clients as one user).
        #[arg(long, default_value_t = mallard::config::DEFAULT_MAX_EXCHANGES_PER_USER)]
        max_exchanges_per_user: usize,
        /// Serve TLS with this certificate chain (PEM).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// CA (PEM) push_table trusts for grpc+tls:// targets.
        #[arg(long)]
        push_ca: Option<PathBuf>,
        /// A target push_table may connect to (repeatable).
        #[arg(long)]
        push_allow: Vec<String>,
        /// Another user, `name:password:role`, besides admin/password123 (repeatable).
        #[arg(long)]
        add_user: Vec<String>,
        /// DuckDB's memory limit (e.g. `1GB`); inherited by the servers the demo starts.
        #[arg(long, env = "MALLARD_DUCKDB_MEMORY_LIMIT")]
        duckdb_memory_limit: Option<String>,
        /// A DuckDB file for durable tables (in memory without).
        #[arg(long)]
        db: Option<PathBuf>,
        /// Where exchangers are stored.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The key this node shares with its peers.
        #[arg(long)]
        cluster_key_file: Option<PathBuf>,
        /// Another node of the cluster (repeatable).
        #[arg(long)]
        peer: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let lifecycle = matches!(
        cli.command,
        Some(
            Command::Upload { .. }
                | Command::Publish { .. }
                | Command::Exchangers
                | Command::Remove { .. }
                | Command::Exchange { .. }
                | Command::Sql { .. }
        )
    );
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The lifecycle commands print the server's code and message, no chain.
        Err(e) if lifecycle => {
            eprintln!("error: {}", lifecycle::describe_error(&e));
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("Error: {e:?}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One lifecycle command's client: `--server`, `--user`, `--password`.
async fn lifecycle_client(cli: &Cli) -> Result<arrow_flight::FlightClient> {
    let url = if cli.server1.contains("://") {
        cli.server1.clone()
    } else {
        let scheme = if cli.tls || cli.tls_ca.is_some() {
            "grpc+tls"
        } else {
            "grpc"
        };
        format!("{scheme}://{}", cli.server1)
    };
    servers::connect(&url, &cli.user, &cli.password).await
}

/// Runs one lifecycle command on `client`.
async fn run_lifecycle(client: &mut arrow_flight::FlightClient, command: &Command) -> Result<()> {
    match command {
        Command::Upload {
            path,
            shared,
            to_peers,
            dry_run_schema,
            params,
        } => lifecycle::upload(
            client,
            path,
            UploadTo {
                shared: *shared,
                to_peers: *to_peers,
            },
            dry_run_schema.as_deref(),
            params.clone(),
        )
        .await
        .map(drop),
        Command::Publish {
            reference,
            to_peers,
        } => lifecycle::publish(client, reference, *to_peers).await,
        Command::Exchangers => lifecycle::list(client).await.map(drop),
        Command::Remove { reference } => lifecycle::remove(client, reference).await,
        Command::Exchange {
            reference,
            input,
            output,
            params,
            instances,
            any_order,
        } => {
            let stage = lifecycle::Stage {
                reference,
                params: params.clone(),
                instances: *instances,
                any_order: *any_order,
            };
            lifecycle::exchange(client, &stage, input, output)
                .await
                .map(drop)
        }
        Command::Sql { sql, max_rows } => lifecycle::sql(client, sql, *max_rows).await.map(drop),
        _ => anyhow::bail!("not an exchanger lifecycle command"),
    }
}

async fn run(cli: Cli) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(ca) = &cli.tls_ca {
        servers::use_tls(tls::DemoTls::trusting(ca)?);
    } else if cli.tls {
        servers::use_tls(tls::DemoTls::minted()?);
    }
    match cli.command {
        Some(
            ref command @ (Command::Upload { .. }
            | Command::Publish { .. }
            | Command::Exchangers
            | Command::Remove { .. }
            | Command::Exchange { .. }
            | Command::Sql { .. }),
        ) => {
            let mut client = lifecycle_client(&cli).await?;
            let outcome = run_lifecycle(&mut client, command).await;
            // One token per invocation: give it back rather than leave it to expire.
            let _ = ops::action(&mut client, "logout", "").await;
            outcome
        }
        None => {
            walkthrough::run(walkthrough::WalkthroughOptions {
                server1: cli.server1,
                server2: cli.server2,
                user: cli.user,
                password: cli.password,
                rows: cli.rows,
                bench_rows: cli.bench_rows,
                exchanger: cli.exchanger,
                no_start: cli.no_start,
            })
            .await
        }
        Some(Command::GenData { rows, out }) => {
            let path = out.unwrap_or_else(|| guest::workspace().join("data/flights.parquet"));
            let bar = indicatif::ProgressBar::new(rows);
            data::write_parquet(&path, rows, &bar)?;
            bar.finish_and_clear();
            println!("wrote {rows} rows to {}", path.display());
            Ok(())
        }
        Some(Command::ClusterBench {
            rows,
            repeat,
            no_python,
            json,
        }) => {
            let options = cluster_bench::Options {
                rows,
                repeat: repeat.max(1),
                python: !no_python,
                credentials: (cli.user.clone(), cli.password.clone()),
            };
            let results = cluster_bench::run(&options).await?;
            cluster_bench::print_table(&results);
            if json {
                println!("{}", serde_json::to_string(&results)?);
            }
            Ok(())
        }
        Some(Command::Bench {
            rows,
            sandbox,
            repeat,
            json,
            ops,
            no_adbc,
            no_polyglot,
            no_ceiling,
            parallel_rounds,
        }) => {
            let (s1, s2) = servers::ensure_pair(&cli.server1, &cli.server2, !cli.no_start).await?;
            let mut c1 = servers::connect(&s1.url, &cli.user, &cli.password).await?;
            let mut c2 = servers::connect(&s2.url, &cli.user, &cli.password).await?;
            let options = bench::BenchOptions {
                rows,
                sandbox,
                repeat: repeat.max(1),
                json,
                ops,
                adbc: (!no_adbc).then(|| (cli.user.clone(), cli.password.clone())),
                polyglot: !no_polyglot,
                ceiling: !no_ceiling,
                credentials: (cli.user.clone(), cli.password.clone()),
                parallel_rounds,
            };
            let results = bench::run(&s1, &mut c1, &s2, &mut c2, &options).await?;
            bench::print_table(&results);
            if json {
                println!("{}", serde_json::to_string(&results)?);
            }
            Ok(())
        }
        Some(Command::Load {
            clients,
            seconds,
            hostile,
            unread_streams,
            json,
        }) => {
            if unread_streams > 0 {
                servers::add_users(vec![load::UNREAD_USER_SPEC.to_owned()]);
            }
            let (s1, s2) = servers::ensure_pair(&cli.server1, &cli.server2, !cli.no_start).await?;
            let options = load::LoadOptions {
                clients,
                duration: std::time::Duration::from_secs(seconds),
                hostile,
                unread_streams,
                user: cli.user.clone(),
                password: cli.password.clone(),
            };
            let report = load::run(&s1, &s2, &options).await?;
            if json {
                println!("{report}");
            }
            anyhow::ensure!(
                report["errors"] == 0
                    && report["stuck"] == 0
                    && report.get("baseline_errors").is_none_or(|e| e == 0),
                "the load saw errors or stuck calls"
            );
            anyhow::ensure!(
                report["leaked"].as_array().is_some_and(Vec::is_empty),
                "server 1 still holds resources after the load: {}",
                report["leaked"]
            );
            Ok(())
        }
        Some(Command::Serve {
            listen,
            max_exchanges_per_user,
            tls_cert,
            tls_key,
            push_ca,
            push_allow,
            add_user,
            duckdb_memory_limit,
            db,
            data_dir,
            cluster_key_file,
            peer,
        }) => {
            let mut config = mallard::ServerConfig::new(listen);
            if let Some(path) = cluster_key_file {
                config.cluster_key =
                    Some(mallard::cluster::ClusterKey::new(&std::fs::read(&path)?)?);
            }
            for url in &peer {
                config.peers.push(mallard_protocol::PushTarget::parse(url)?);
            }
            config.db.memory_limit = duckdb_memory_limit;
            config.db.path = db;
            config.data_dir = data_dir;
            config.max_exchanges_per_user = max_exchanges_per_user;
            config.max_queries_per_user = max_exchanges_per_user;
            config.max_puts_per_user = max_exchanges_per_user;
            for target in &push_allow {
                config
                    .push_allow
                    .push(mallard_protocol::PushTarget::parse(target)?);
            }
            if !add_user.is_empty() {
                config.users.insert(
                    mallard::auth::DEFAULT_USER.into(),
                    mallard::auth::User::new(
                        mallard::auth::DEFAULT_PASSWORD,
                        mallard::auth::Role::Admin,
                    ),
                );
                for spec in &add_user {
                    let mut parts = spec.splitn(3, ':');
                    let (Some(name), Some(password), Some(role)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        anyhow::bail!("--add-user takes name:password:role");
                    };
                    let role = match role {
                        "admin" => mallard::auth::Role::Admin,
                        "user" => mallard::auth::Role::User,
                        "reader" => mallard::auth::Role::Reader,
                        other => anyhow::bail!("unknown role {other:?}"),
                    };
                    config
                        .users
                        .insert(name.to_owned(), mallard::auth::User::new(password, role));
                }
            }
            if let (Some(cert), Some(key)) = (tls_cert, tls_key) {
                config.tls = Some(mallard::config::ServerTls::read(&cert, &key, None)?);
            }
            if let Some(ca) = push_ca {
                config.push_tls = Some(mallard::transport::ClientTls::trusting_file(&ca)?);
            }
            let server = mallard::start(config).await?;
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            server.stop().await?;
            Ok(())
        }
    }
}
