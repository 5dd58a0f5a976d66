//! `push_table`: stream a table, or a query's result, from this server straight
//! into another server's `do_put`, optionally through an exchange on the way,
//! without the data passing through the requesting client.
//!
//! Only targets the operator allowed (`--push-allow`, by default the addresses
//! this process serves and the `--peer`s) are ever connected to, so the server's push credentials
//! cannot be sent to a listener of the caller's choosing, and push is no port
//! scanner. A target that stops reading is cut off after the stall timeout.

use crate::auth::Principal;
use crate::client;
use crate::flight::stall;
use crate::state::ServerState;
use crate::transport::MAX_FLIGHT_DATA_BYTES;
use arrow_flight::FlightClient;
use arrow_flight::FlightData;
use arrow_flight::FlightDescriptor;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use mallard_core::{Error, Result};
use mallard_db::query;
use mallard_db::statements::ServerSql;
use mallard_exchange::output::Output;
use mallard_exchange::pipeline::{self, Input};
use mallard_protocol::push::PushSource;
use mallard_protocol::{PushRequest, PushTarget, Receipt};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex};

/// The addresses Mallard servers of this process listen on, with whether they serve TLS.
static SERVED: LazyLock<Mutex<HashSet<(SocketAddr, bool)>>> =
    LazyLock::new(|| Mutex::new(HashSet::new()));

/// Records that this process serves `addr` (until [`unserve`]).
pub fn serve(addr: SocketAddr, tls: bool) {
    SERVED.lock().expect("served lock").insert((addr, tls));
}

/// Forgets a stopped server's address.
pub fn unserve(addr: SocketAddr, tls: bool) {
    SERVED.lock().expect("served lock").remove(&(addr, tls));
}

/// The push targets this process serves; a wildcard listener counts as loopback.
pub fn served_targets() -> Vec<PushTarget> {
    let served = SERVED.lock().expect("served lock");
    let mut targets = Vec::new();
    for &(addr, tls) in served.iter() {
        let hosts = if addr.ip().is_unspecified() {
            vec!["127.0.0.1".to_owned(), "::1".to_owned()]
        } else {
            vec![addr.ip().to_string()]
        };
        for host in hosts {
            targets.push(PushTarget {
                tls,
                host,
                port: addr.port(),
            });
        }
    }
    targets
}

/// PermissionDenied unless the operator allowed `to` (before any connection).
pub fn check_target(state: &ServerState, target: &PushTarget) -> Result<()> {
    let allowed = if state.config.push_allow.is_empty() {
        let mut own = served_targets();
        own.extend(state.config.peers.iter().cloned());
        own
    } else {
        state.config.push_allow.clone()
    };
    if allowed.contains(target) {
        Ok(())
    } else {
        Err(Error::permission_denied(format!(
            "push target {target} is not allowed on this server; the operator allows \
             targets with --push-allow (by default only the servers of this process)"
        )))
    }
}

/// What a push did: the rows the targets acknowledged, and the exchange's receipt.
#[derive(Debug)]
pub struct Pushed {
    /// Rows the targets acknowledged, all together.
    pub rows: u64,
    /// Rows each target acknowledged, in the order of the request's `to`.
    pub rows_per_target: Vec<u64>,
    /// The receipt of the exchange the rows went through, if any.
    pub receipt: Option<Receipt>,
}

/// How a push authenticates to a target.
pub enum PushAs {
    /// A user and password on the target (the request's, or the server's push credentials).
    Password(String, String),
    /// A cluster token for the caller: the peer applies its own role for the caller.
    Caller(String),
}

impl PushAs {
    /// The request's credentials if it gave some; else, for a peer, the caller
    /// (never more rights than the caller has there); else the server's push
    /// credentials.
    pub fn choose(
        state: &ServerState,
        principal: &Principal,
        target: &PushTarget,
        given: &Option<(String, String)>,
    ) -> Self {
        if let Some((user, password)) = given {
            return Self::Password(user.clone(), password.clone());
        }
        if state.config.peers.contains(target)
            && let Some(token) = state.auth.token_for_peers(principal)
        {
            return Self::Caller(token);
        }
        let (user, password) = state.config.push_credentials.clone().unwrap_or_else(|| {
            (
                crate::auth::DEFAULT_USER.into(),
                crate::auth::DEFAULT_PASSWORD.into(),
            )
        });
        Self::Password(user, password)
    }

    /// An authenticated client of `target`.
    pub async fn connect(&self, state: &ServerState, target: &PushTarget) -> Result<FlightClient> {
        let tls = state.config.push_tls.as_ref();
        match self {
            Self::Password(user, password) => client::connect_to(target, user, password, tls).await,
            Self::Caller(token) => client::connect_with_token(target, token, tls).await,
        }
    }
}

/// The rows a push reads here: a table, or the caller's query with the caller's
/// rights (and `exchange(…)` if it calls it, its receipt into `receipts`).
async fn open_source(
    state: &Arc<ServerState>,
    principal: &Principal,
    source: PushSource,
    receipts: &Arc<Mutex<Vec<Receipt>>>,
) -> Result<query::QueryStream> {
    match source {
        PushSource::Table(table) => {
            // Check the source first so a missing table is NotFound here, not a remote error.
            let db = state.db.clone();
            let source_table = table.clone();
            crate::flight::blocking::blocking(move || {
                mallard_db::catalog::require(&db, &source_table)
            })
            .await?;
            query::run(
                state.db.clone(),
                format!("SELECT * FROM {}", table.quoted()),
                Arc::new(ServerSql),
            )
            .await
        }
        PushSource::Query(sql) => {
            let scope =
                mallard_exchange::sql::caller_scope(&state.exchanges, principal, receipts.clone());
            query::run_with_budget(
                state.db.clone(),
                sql.into(),
                state.authz.sql(principal),
                None,
                Some(scope),
            )
            .await
        }
    }
}

/// A running exchange's output as Flight messages (schema first), and its
/// receipt once the output ended.
pub struct ExchangeOutput {
    /// The schema message.
    pub schema_message: FlightData,
    /// The batches' messages, ending with the exchange's own success or error.
    pub data: BoxStream<'static, Result<FlightData, tonic::Status>>,
    /// The receipt, sent when the output ended cleanly.
    pub receipt: tokio::sync::oneshot::Receiver<Receipt>,
}

/// Runs the push's exchange over `source`.
pub async fn exchange_output(
    state: &Arc<ServerState>,
    principal: &Principal,
    exchange: &mallard_protocol::exchange::ExchangeRequest,
    source: query::QueryStream,
) -> Result<ExchangeOutput> {
    let input = Input::from_batches(source.schema.clone(), source.into_stream()).await?;
    let running = pipeline::start(&state.exchanges, principal, exchange, input).await?;
    let (receipt_tx, receipt) = tokio::sync::oneshot::channel();
    let mut receipt_tx = Some(receipt_tx);
    let data = running.output.filter_map(move |item| {
        let item = match item {
            Ok(Output::Data(data)) => Some(Ok(data.into_flight_data())),
            Ok(Output::Done(receipt)) => {
                if let Some(tx) = receipt_tx.take() {
                    let _ = tx.send(receipt);
                }
                None
            }
            Err(status) => Some(Err(status)),
        };
        async move { item }
    });
    Ok(ExchangeOutput {
        schema_message: running.schema_message,
        data: data.boxed(),
        receipt,
    })
}

/// Runs a push for `principal`.
pub async fn push(
    state: &Arc<ServerState>,
    principal: &Principal,
    request: PushRequest,
) -> Result<Pushed> {
    for target in &request.to {
        check_target(state, target)?;
    }
    let receipts = Arc::new(Mutex::new(Vec::new()));
    let source = open_source(state, principal, request.source.clone(), &receipts).await?;
    let pushed = match &request.partition {
        None => push_one(state, principal, &request, source).await?,
        Some(partition) => {
            crate::flight::push_partitioned::push(state, principal, &request, partition, source)
                .await?
        }
    };
    let receipt = match pushed.receipt {
        Some(receipt) => Some(receipt),
        None => receipts.lock().unwrap_or_else(|p| p.into_inner()).pop(),
    };
    Ok(Pushed { receipt, ..pushed })
}

/// A push to one target: one `do_put`, committed when the target acknowledges it.
async fn push_one(
    state: &Arc<ServerState>,
    principal: &Principal,
    request: &PushRequest,
    source: query::QueryStream,
) -> Result<Pushed> {
    let to = &request.to[0];
    let failed_push = format!("push_table to {to}");
    let descriptor = FlightDescriptor::new_cmd(request.target_table.as_str().to_owned());
    let (flight_data, receipt): (BoxStream<'static, Result<FlightData, tonic::Status>>, _) =
        match &request.exchange {
            None => {
                let schema = source.schema.clone();
                let batches = source
                    .into_stream()
                    .map_err(|e: Error| FlightError::Tonic(Box::new(e.into())));
                let data = FlightDataEncoderBuilder::new()
                    .with_schema(schema)
                    .with_max_flight_data_size(MAX_FLIGHT_DATA_BYTES)
                    .with_flight_descriptor(Some(descriptor))
                    .build(batches)
                    .map_err(|e| tonic::Status::from(Error::from(e)));
                (data.boxed(), None)
            }
            Some(exchange) => {
                let output = exchange_output(state, principal, exchange, source).await?;
                let mut schema_message = output.schema_message;
                schema_message.flight_descriptor = Some(descriptor);
                let data = futures::stream::once(async { Ok(schema_message) }).chain(output.data);
                (data.boxed(), Some(output.receipt))
            }
        };
    let (flight_data, stalled) = stall::guard(flight_data, state.config.stall_timeout, "push");
    let flight_data = flight_data.map_err(|s| FlightError::Tonic(Box::new(s)));
    let mut remote = PushAs::choose(state, principal, to, &request.credentials)
        .connect(state, to)
        .await
        .map_err(|e| e.context(&failed_push))?;
    let send = async {
        let mut results = remote
            .do_put(flight_data)
            .await
            .map_err(|e| Error::from(e).context(&failed_push))?;
        let mut rows = None;
        while let Some(result) = results.next().await {
            let result = result.map_err(|e| Error::from(e).context(&failed_push))?;
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&result.app_metadata) {
                rows = v.get("rows").and_then(|r| r.as_u64());
            }
        }
        rows.ok_or_else(|| Error::unavailable(format!("{to} did not acknowledge the put")))
    };
    let rows = tokio::select! {
        outcome = send => outcome?,
        () = stalled.stalled() => return Err(Error::deadline_exceeded(format!(
            "{failed_push}: the target read nothing for {:?}; the push was stopped",
            state.config.stall_timeout
        ))),
    };
    Ok(Pushed {
        rows,
        rows_per_target: vec![rows],
        receipt: receipt_of(receipt).await?,
    })
}

/// The receipt of a push's exchange, once its output ended (`None` without one).
pub async fn receipt_of(
    exchange: Option<tokio::sync::oneshot::Receiver<Receipt>>,
) -> Result<Option<Receipt>> {
    match exchange {
        Some(rx) => rx
            .await
            .map(Some)
            .map_err(|_| Error::internal("the push's exchange ended without its receipt")),
        None => Ok(None),
    }
}
