//! The `FlightService` implementation: the seeds' protocol here, Flight SQL
//! requests handed to [`crate::flight::sql`].

use crate::auth::{Authenticated, Principal};
use crate::cluster;
use crate::flight::blocking::blocking;
use crate::flight::inbound::next_within;
use crate::flight::incoming::{self, Incoming};
use crate::flight::{
    actions, auth_layer, body_outcome, inbound, results, sql as flight_sql, two_phase,
};
use crate::state::ServerState;
use arrow::datatypes::SchemaRef;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, BasicAuth, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint,
    FlightInfo, HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc,
    SchemaResult, Ticket,
};
use arrow_ipc::writer::IpcWriteOptions;
use futures::StreamExt;
use futures::stream::BoxStream;
use mallard_access::authz::Operation;
use mallard_core::{Error, Result};
use mallard_db::ingest::Ingest;
use mallard_db::query;
use mallard_exchange::output::Output;
use mallard_exchange::{CHANNEL_MESSAGES, ExchangeRequest, pipeline, sql};
use mallard_protocol::TableName;
use mallard_protocol::descriptor::{self, Target};
use mallard_protocol::outgoing::Outgoing;
use prost::Message;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

/// One Mallard Flight server.
#[derive(Clone)]
pub struct MallardService {
    state: Arc<ServerState>,
}

type Stream<T> = BoxStream<'static, Result<T, Status>>;

impl MallardService {
    /// A service over shared server state.
    pub fn new(state: Arc<ServerState>) -> Self {
        Self { state }
    }

    /// The caller, as the authentication layer found it from the headers.
    fn authenticate<T>(&self, request: &Request<T>) -> Result<Authenticated, Status> {
        auth_layer::caller(request)
    }

    /// The schema of a table or of one SQL statement, from DuckDB's prepared
    /// statement: client SQL is never executed for a schema.
    async fn schema_of(&self, principal: &Principal, target: &Target) -> Result<SchemaRef> {
        let sql = match target {
            Target::Table(t) => format!("SELECT * FROM {}", t.quoted()),
            Target::Sql(sql) => sql.clone(),
        };
        let scope = sql::caller_scope(&self.state.exchanges, principal, Arc::default());
        query::schema(
            self.state.db.clone(),
            sql,
            self.state.authz.sql(principal),
            Some(scope),
        )
        .await
    }

    async fn flight_info(
        &self,
        principal: &Principal,
        descriptor: FlightDescriptor,
        target: Target,
    ) -> Result<FlightInfo> {
        let schema = self.schema_of(principal, &target).await?;
        let (ticket, rows) = match &target {
            Target::Table(t) => {
                let db = self.state.db.clone();
                let table = t.clone();
                let info = blocking(move || mallard_db::catalog::describe(&db, &table)).await?;
                (format!("SELECT * FROM {}", t.quoted()), info.rows as i64)
            }
            Target::Sql(sql) => (sql.clone(), -1),
        };
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
        Ok(FlightInfo::new()
            .try_with_schema(&schema)?
            .with_descriptor(descriptor)
            .with_endpoint(endpoint)
            .with_total_records(rows))
    }
}

/// Adds `authorization: Bearer <token>` when the call authenticated with Basic.
/// Outgoing messages as tonic's FlightData, each body joined (a path served by
/// tonic's generated server, not [`crate::flight::direct`]).
fn joined(messages: Stream<Outgoing>) -> Stream<FlightData> {
    messages
        .map(|message| message.map(Outgoing::into_flight_data))
        .boxed()
}

fn respond<T>(body: T, auth: &Authenticated) -> Response<T> {
    let mut response = Response::new(body);
    if let Some(token) = &auth.issued_token
        && let Ok(value) = format!("Bearer {token}").parse()
    {
        response.metadata_mut().insert("authorization", value);
    }
    response
}

impl MallardService {
    /// `DoGet` as [`Outgoing`] messages, the result's buffers kept in pieces
    /// (see [`crate::flight::direct_get`], which serves it).
    pub async fn do_get_outgoing(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<results::DataStream>, Status> {
        let auth = self.authenticate(&request)?;
        if let Some(command) = flight_sql::command(&request.get_ref().ticket) {
            let stream = flight_sql::do_get(&self.state, &auth.principal, command?).await?;
            return Ok(respond(stream, &auth));
        }
        let sql = descriptor::ticket_sql(&request.get_ref().ticket)
            .map_err(Error::from)?
            .to_owned();
        tracing::debug!(user = ?auth.principal.user, "do_get");
        let policy = self.state.authz.sql(&auth.principal);
        let stream =
            results::query_data(&self.state, &auth.principal, sql.into(), policy, None).await?;
        Ok(respond(stream.boxed(), &auth))
    }

    /// `DoPut` of what a client streams in, however it was decoded (see
    /// [`crate::flight::direct`], which serves it).
    pub async fn do_put_incoming(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<Stream<PutResult>>, Status> {
        let auth = self.authenticate(&request)?;
        let idle = self.state.config.stall_timeout;
        let outcome = body_outcome::of(&request);
        let mut incoming = request.into_inner();
        let (first, descriptor) =
            inbound::first_with_descriptor(&mut incoming, idle, "do_put").await?;
        if let Some(command) = flight_sql::command(&descriptor.cmd) {
            let put = flight_sql::Put {
                first,
                incoming: &mut incoming,
                outcome: &outcome,
            };
            let result = flight_sql::do_put(&self.state, &auth.principal, command?, put).await?;
            return Ok(respond(
                futures::stream::once(async { Ok(result) }).boxed(),
                &auth,
            ));
        }
        self.state.authz.check(&auth.principal, Operation::Put)?;
        let slot = self.state.put_slots.acquire(&auth.principal.user)?;
        let table = descriptor::put_table(descriptor.r#type, &descriptor.cmd, &descriptor.path)
            .map_err(Error::from)?;
        let two_phase = two_phase::Control::asks_two_phase(&first);
        // Only bytes move here: the ingest thread decodes (bounded, validated).
        let header = inbound::schema_message(first, &mut incoming, idle, "do_put").await?;
        let (schema, _) = mallard_exchange::validated_schema_message(header)?;
        if two_phase {
            let ingest = Ingest::start_two_phase(self.state.db.clone(), table, schema);
            let answer = two_phase::serve(auth.principal.clone(), ingest, incoming, idle, slot);
            return Ok(respond(answer, &auth));
        }
        let _slot = slot;
        let mut ingest = Ingest::start(self.state.db.clone(), table.clone(), schema);
        while let Some(message) = next_within(&mut incoming, idle, "do_put").await? {
            if !message.data_header.is_empty() {
                ingest
                    .append_message(message.data_header, message.data_body)
                    .await?;
            }
        }
        body_outcome::ensure_complete(&outcome, "do_put")?;
        let rows = ingest.commit().await?;
        tracing::debug!(user = ?auth.principal.user, table = ?table.as_str(), rows, "do_put committed");
        let result = PutResult {
            app_metadata: serde_json::json!({ "rows": rows }).to_string().into(),
        };
        Ok(respond(
            futures::stream::once(async { Ok(result) }).boxed(),
            &auth,
        ))
    }

    /// `DoExchange` of what a client streams in, however it was decoded.
    pub async fn do_exchange_incoming(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<Stream<Outgoing>>, Status> {
        let auth = self.authenticate(&request)?;
        self.state
            .authz
            .check(&auth.principal, Operation::Exchange)?;
        let idle = self.state.config.stall_timeout;
        let mut incoming = request.into_inner();
        let (first, descriptor) =
            inbound::first_with_descriptor(&mut incoming, idle, "do_exchange").await?;
        let request = ExchangeRequest::parse(&descriptor.cmd).map_err(Error::from)?;
        let schema_header =
            inbound::schema_message(first, &mut incoming, idle, "do_exchange").await?;
        let (in_tx, messages) = mpsc::channel(CHANNEL_MESSAGES);
        let input = pipeline::Input {
            schema_header,
            messages,
        };
        let exchange =
            pipeline::start(&self.state.exchanges, &auth.principal, &request, input).await?;
        tokio::spawn(async move {
            loop {
                let next = next_within(&mut incoming, idle, "do_exchange").await;
                let item = match next {
                    Ok(Some(message)) => Ok(message),
                    Ok(None) => break,
                    Err(status) => Err(Error::from(status).context("reading the exchange input")),
                };
                let failed = item.is_err();
                if in_tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        let output = exchange.output.map(|item| match item? {
            Output::Data(data) => Ok(data),
            Output::Done(receipt) => Err(results::receipt_trailer(&[receipt], false)),
        });
        let schema_message = Outgoing::from(exchange.schema_message);
        let stream = futures::stream::once(async { Ok(schema_message) }).chain(output);
        Ok(respond(stream.boxed(), &auth))
    }
}

#[tonic::async_trait]
impl FlightService for MallardService {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoExchangeStream = Stream<FlightData>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let peer = request.remote_addr().map(|a| a.ip());
        let auth = if request.metadata().contains_key("authorization") {
            self.state
                .auth
                .authenticate(request.metadata(), peer)
                .await?
        } else {
            // Flight's payload convention: a BasicAuth protobuf in the first message.
            let mut stream = request.into_inner();
            let first = stream
                .message()
                .await?
                .ok_or_else(|| Status::unauthenticated("handshake without credentials"))?;
            let basic = BasicAuth::decode(first.payload.as_ref())
                .map_err(|_| Status::unauthenticated("handshake payload is not BasicAuth"))?;
            let principal = self
                .state
                .auth
                .check_password(&basic.username, &basic.password, peer)
                .await?;
            let token = self.state.auth.issue_token(principal.clone());
            Authenticated {
                principal,
                issued_token: Some(token),
                presented_token: None,
            }
        };
        // A handshake with a bearer token confirms it and hands the same one back:
        // only a password earns a new token.
        let token = match (&auth.issued_token, &auth.presented_token) {
            (Some(t), _) | (None, Some(t)) => t.clone(),
            (None, None) => return Err(Status::unauthenticated("handshake without credentials")),
        };
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.into_bytes().into(),
        };
        Ok(respond(
            futures::stream::once(async { Ok(reply) }).boxed(),
            &auth,
        ))
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let auth = self.authenticate(&request)?;
        self.state
            .authz
            .check(&auth.principal, Operation::Inspect)?;
        let db = self.state.db.clone();
        let tables = blocking(move || mallard_db::catalog::list_tables(&db)).await?;
        let mut infos = Vec::with_capacity(tables.len());
        for table in tables {
            let descriptor = FlightDescriptor::new_path(vec![table.name.clone()]);
            let target = Target::Table(TableName::from_catalog(table.name));
            infos.push(
                self.flight_info(&auth.principal, descriptor, target)
                    .await
                    .map_err(Status::from),
            );
        }
        Ok(respond(futures::stream::iter(infos).boxed(), &auth))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let auth = self.authenticate(&request)?;
        let every_node = cluster::fan_out::wants_every_node(request.metadata())?;
        let descriptor = request.into_inner();
        let (info, ask_peers) = if let Some(command) = flight_sql::command(&descriptor.cmd) {
            let command = command?;
            let ask_peers = match every_node {
                true => {
                    flight_sql::peers_descriptor(
                        &self.state,
                        &auth.principal,
                        &command,
                        &descriptor,
                    )
                    .await?
                }
                false => None,
            };
            let info =
                flight_sql::flight_info(&self.state, &auth.principal, descriptor, command).await?;
            (info, ask_peers)
        } else {
            let target =
                descriptor::info_target(descriptor.r#type, &descriptor.cmd, &descriptor.path)
                    .map_err(Error::from)?;
            let ask_peers = every_node.then(|| descriptor.clone());
            let info = self
                .flight_info(&auth.principal, descriptor, target)
                .await?;
            (info, ask_peers)
        };
        let info = match ask_peers {
            Some(asked) => {
                cluster::fan_out::gather(&self.state, &auth.principal, asked, info).await?
            }
            None => info,
        };
        Ok(respond(info, &auth))
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        let auth = self.authenticate(&request)?;
        let descriptor = request.into_inner();
        let info = match flight_sql::command(&descriptor.cmd) {
            Some(command) => {
                flight_sql::flight_info(&self.state, &auth.principal, descriptor.clone(), command?)
                    .await?
            }
            None => {
                let target =
                    descriptor::info_target(descriptor.r#type, &descriptor.cmd, &descriptor.path)
                        .map_err(Error::from)?;
                self.flight_info(&auth.principal, descriptor.clone(), target)
                    .await?
            }
        };
        Ok(respond(
            PollInfo::new().with_info(info).with_descriptor(descriptor),
            &auth,
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let auth = self.authenticate(&request)?;
        let d = request.get_ref();
        let schema = match flight_sql::command(&d.cmd) {
            Some(command) => flight_sql::schema(&self.state, &auth.principal, &command?).await?,
            None => {
                let target =
                    descriptor::info_target(d.r#type, &d.cmd, &d.path).map_err(Error::from)?;
                self.schema_of(&auth.principal, &target).await?
            }
        };
        let result: SchemaResult = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e: arrow::error::ArrowError| Status::from(Error::from(e)))?;
        Ok(respond(result, &auth))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let response = self.do_get_outgoing(request).await?;
        Ok(response.map(joined))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let (metadata, extensions, streaming) = request.into_parts();
        let request = Request::from_parts(metadata, extensions, incoming::from_tonic(streaming));
        self.do_put_incoming(request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let (metadata, extensions, streaming) = request.into_parts();
        let request = Request::from_parts(metadata, extensions, incoming::from_tonic(streaming));
        let response = self.do_exchange_incoming(request).await?;
        Ok(response.map(joined))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let auth = self.authenticate(&request)?;
        let action = request.into_inner();
        if flight_sql::is_action(&action.r#type) {
            let results =
                flight_sql::do_action(&self.state, &auth.principal, &action.r#type, action.body)
                    .await?;
            return Ok(respond(
                futures::stream::iter(results.into_iter().map(Ok)).boxed(),
                &auth,
            ));
        }
        let value = actions::run(
            &self.state,
            &auth.principal,
            auth.presented_token.as_deref(),
            &action.r#type,
            action.body,
        )
        .await
        .map_err(|e| {
            tracing::debug!(action = ?action.r#type, error = ?e.to_string(), "action failed");
            Status::from(e)
        })?;
        let result = arrow_flight::Result {
            body: value.to_string().into(),
        };
        Ok(respond(
            futures::stream::once(async { Ok(result) }).boxed(),
            &auth,
        ))
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let auth = self.authenticate(&request)?;
        let actions = actions::action_types()
            .into_iter()
            .chain(flight_sql::action_types())
            .map(Ok);
        Ok(respond(futures::stream::iter(actions).boxed(), &auth))
    }
}
