//! Starting and stopping a server: bind, build state, serve with tuned transport,
//! shut down gracefully within a bounded time.

use crate::auth::Authenticator;
use crate::config::ServerConfig;
use crate::flight::MallardService;
use crate::flight::auth_layer::AuthenticateLayer;
use crate::flight::direct::DirectFlight;
use crate::flight::rpc_metrics::RpcMetricsLayer;
use crate::state::ServerState;
use crate::transport;
use arrow_flight::flight_service_server::FlightServiceServer;
use mallard_access::authz::Authorizer;
use mallard_access::slots::{MemoryPools, UserSlots};
use mallard_core::{Error, Result};
use mallard_db::Database;
use mallard_exchange::Exchanges;
use mallard_exchange::catalog::Catalog;
use mallard_exchange::context::Parallelism;
use mallard_sandbox::engine::SandboxEngine;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

/// A server running in the background.
pub struct RunningServer {
    /// The address it listens on (with the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when `--metrics-listen` was given.
    pub metrics_addr: Option<SocketAddr>,
    metrics_task: Option<JoinHandle<()>>,
    state: Arc<ServerState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<()>>,
}

impl RunningServer {
    /// `grpc://addr`, for clients.
    pub fn url(&self) -> String {
        let scheme = if self.state.config.tls.is_some() {
            "grpc+tls"
        } else {
            "grpc"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The server's shared state (tests peek at it).
    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    /// Stops accepting calls, lets in-flight calls finish within the grace period,
    /// then closes the database cleanly.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let grace = self.state.config.shutdown_grace;
        match tokio::time::timeout(grace, &mut self.task).await {
            Ok(joined) => joined.map_err(|e| Error::internal(format!("server task: {e}")))??,
            Err(_) => {
                tracing::warn!(addr = %self.addr, ?grace, "in-flight calls did not finish in time; cancelling them");
                self.task.abort();
            }
        }
        crate::flight::push::unserve(self.addr, self.state.config.tls.is_some());
        if let Some(task) = self.metrics_task.take() {
            task.abort();
        }
        let db = self.state.db.clone();
        tokio::task::spawn_blocking(move || db.checkpoint())
            .await
            .map_err(|e| Error::internal(format!("checkpoint thread: {e}")))??;
        tracing::info!(addr = %self.addr, "server stopped");
        Ok(())
    }
}

/// Builds the server's state: database, authenticator, sandbox and catalogue.
pub fn build_state(config: ServerConfig) -> Result<Arc<ServerState>> {
    let db = Arc::new(Database::open(config.db.clone())?);
    mallard_exchange::sql::register(&db)?;
    mallard_exchange::scalar::register(&db)?;
    if !config.push_allow.is_empty()
        && let Some(peer) = config.peers.iter().find(|p| !config.push_allow.contains(p))
    {
        return Err(Error::invalid_argument(format!(
            "peer {peer} is not in --push-allow: one list says where this node may connect"
        )));
    }
    if !config.peers.is_empty() && config.cluster_key.is_none() {
        return Err(Error::invalid_argument(
            "--peer needs --cluster-key-file (the peers accept each other's tokens with it)",
        ));
    }
    let auth = Authenticator::new(config.users.clone(), config.token_ttl)
        .with_cluster_key(config.cluster_key.clone());
    let engine = Arc::new(SandboxEngine::new(config.limits.clone())?);
    let catalog = Arc::new(Catalog::open(
        engine,
        config.quotas.clone(),
        config.data_dir.as_deref(),
    )?);
    let slots = |what, flag, max| UserSlots::new(what, flag, max);
    let authz = Authorizer {
        files_allowed: !config.db.allowed_dirs.is_empty(),
    };
    let exchanges = Arc::new(Exchanges {
        db: db.clone(),
        catalog,
        guest_memory: MemoryPools::new(config.quotas.guest_memory_per_user),
        slots: slots(
            "exchanges",
            "--max-exchanges-per-user",
            config.max_exchanges_per_user,
        ),
        authz,
        output: config.exchange_output,
        parallelism: Parallelism {
            per_stage: config.exchange_instances,
            extra: slots(
                "extra exchange instances",
                "--max-extra-instances-per-user",
                config.max_extra_instances_per_user,
            ),
        },
    });
    Ok(Arc::new(ServerState {
        db,
        exchanges,
        auth,
        metrics: Arc::new(crate::metrics::ServerMetrics::default()),
        authz,
        query_slots: slots(
            "do_get streams",
            "--max-queries-per-user",
            config.max_queries_per_user,
        ),
        put_slots: slots(
            "do_put streams",
            "--max-puts-per-user",
            config.max_puts_per_user,
        ),
        query_output: mallard_access::slots::OutputBudgets::new(config.query_output_per_user_bytes),
        flight_sql: crate::flight::sql::FlightSqlState::new(config.db.query_timeout)?,
        running_queries: Arc::default(),
        config,
    }))
}

/// Binds `config.listen` and serves in the background.
pub async fn start(config: ServerConfig) -> Result<RunningServer> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::unavailable(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::internal(e.to_string()))?;
    let state = tokio::task::spawn_blocking(move || build_state(config))
        .await
        .map_err(|e| Error::internal(format!("startup thread: {e}")))??;
    crate::flight::sql::expire_idle_in_background(&state);
    if state.auth.uses_default_credentials() {
        if addr.ip().is_loopback() {
            tracing::warn!(%addr, "using the development credentials admin/password123");
        } else if state.config.allow_default_credentials {
            tracing::error!(%addr, "DEVELOPMENT CREDENTIALS admin/password123 ON A NON-LOOPBACK ADDRESS: configure users");
        } else {
            return Err(Error::permission_denied(format!(
                "refusing to serve {addr} with the development credentials admin/password123; \
                 configure --users, or pass --allow-default-credentials"
            )));
        }
    }
    let max_message = state.config.max_message_bytes;
    let mallard = Arc::new(MallardService::new(state.clone()));
    let service = DirectFlight::new(
        FlightServiceServer::from_arc(mallard.clone())
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message),
        mallard,
        max_message,
    );
    let (tx, rx) = oneshot::channel::<()>();
    // The builder's `tcp_nodelay` applies only to listeners tonic binds itself:
    // set it on every accepted connection, or each streamed response waits out
    // Nagle against the client's delayed ACK (~40 ms per call, measured).
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted {
            let _ = stream.set_nodelay(true);
        }
        accepted
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &state.config.tls {
        let mut config = tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem),
        );
        if let Some(ca) = &tls.client_ca_pem {
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        builder = builder
            .tls_config(config)
            .map_err(|e| Error::invalid_argument(format!("TLS settings: {e}")))?;
    }
    let max_streams = state.config.max_streams_per_connection;
    let layer_state = state.clone();
    let rpc_metrics = state.metrics.clone();
    let (metrics_addr, metrics_task) = match state.config.metrics_listen {
        Some(at) => {
            let (bound, task) = crate::metrics::serve(at, &state).await?;
            (Some(bound), Some(task))
        }
        None => (None, None),
    };
    crate::flight::push::serve(addr, state.config.tls.is_some());
    let task = tokio::spawn(async move {
        builder
            .initial_stream_window_size(transport::STREAM_WINDOW_BYTES)
            .initial_connection_window_size(transport::CONNECTION_WINDOW_BYTES)
            .max_frame_size(transport::MAX_FRAME_BYTES)
            .max_concurrent_streams(Some(max_streams))
            // Find clients that vanished without closing (a dead peer, a cut
            // network) so their calls end and free what they hold.
            .http2_keepalive_interval(Some(transport::KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(transport::KEEPALIVE_TIMEOUT))
            .layer(RpcMetricsLayer::new(rpc_metrics))
            .layer(AuthenticateLayer::new(layer_state))
            .layer(crate::flight::body_outcome::WatchBodyLayer)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            })
            .await
            .map_err(|e| Error::internal(format!("server: {e}")))
    });
    tracing::info!(%addr, "mallard listening");
    Ok(RunningServer {
        addr,
        metrics_addr,
        metrics_task,
        state,
        shutdown: Some(tx),
        task,
    })
}
