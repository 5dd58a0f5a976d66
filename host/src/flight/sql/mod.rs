//! Flight SQL on the seeds' listener.
//!
//! A request is Flight SQL when its descriptor command, ticket or action body
//! is a protobuf `Any` whose type is one of `arrow.flight.protocol.sql.*`
//! (arrow-flight's typed [`Command`]); everything else stays the seeds'
//! protocol, so both kinds of client talk to the same port.
//!
//! arrow-flight's `FlightSqlService` trait is not used as the service: its
//! blanket `FlightService` impl would own every call of the listener (the
//! seeds' SQL tickets and JSON actions included). The typed commands, the
//! metadata builders and the protobuf messages are arrow-flight's; the
//! dispatch is here, and every command goes through the same authorization,
//! slots, budgets, timeouts and metrics as the seeds' calls.
//!
//! - this module: the dispatch of commands and actions;
//! - [`placement`]: where a caller's statements run;
//! - [`tickets`]: statement tickets; [`prepared`]: prepared statements;
//! - [`transactions`]: begin and end; [`ingest`]: bulk ingest;
//! - [`metadata`]: the catalog commands; [`handles`], [`registry`], [`running`]:
//!   what lives between calls.

pub mod handles;
mod ingest;
pub mod metadata;
mod placement;
mod prepared;
pub mod registry;
pub mod running;
mod tickets;
mod transactions;

use crate::auth::Principal;
use crate::flight::body_outcome::{BodyOutcome, ensure_complete};
use crate::flight::inbound;
use crate::flight::results::{self, DataStream};
use crate::state::ServerState;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::sql::metadata::SqlInfoDataBuilder;
use arrow_flight::sql::{
    ActionBeginTransactionRequest, ActionBeginTransactionResult, ActionCancelQueryRequest,
    ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionEndTransactionRequest, Any, Command,
    CommandStatementQuery, DoPutPreparedStatementResult, DoPutUpdateResult, ProstMessageExt,
};
use arrow_flight::{
    ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightData,
    FlightDescriptor, FlightEndpoint, FlightInfo, PutResult, Ticket,
};
use bytes::Bytes;
use mallard_access::authz::Operation;
use mallard_core::{Error, Result};
use mallard_db::params::Params;
use mallard_db::query::{self, Query};
use mallard_db::statements::StatementKind;
use placement::{placement, statement_shape};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tickets::{StatementTicket, changed_batch};

pub use handles::{
    EXPIRY_SWEEP, FlightSqlState, PREPARED_LIMITS, TRANSACTION_LIMITS, expire_idle_in_background,
};

/// The `Any` type prefix of every Flight SQL message.
pub use mallard_protocol::flight_sql::TYPE_PREFIX;

/// Parameter rows bound to one prepared statement, and their IPC bytes.
pub const MAX_PARAM_ROWS: usize = 65_536;
/// See [`MAX_PARAM_ROWS`].
pub const MAX_PARAM_BYTES: usize = 16 * 1024 * 1024;

/// Flight SQL's action names (the spec's), as `list_actions` reports them.
pub const ACTIONS: [(&str, &str); 6] = [
    (
        "CreatePreparedStatement",
        "Flight SQL: prepare one statement (ActionCreatePreparedStatementRequest)",
    ),
    (
        "ClosePreparedStatement",
        "Flight SQL: forget a prepared statement",
    ),
    (
        "BeginTransaction",
        "Flight SQL: open a transaction (read-only below admin)",
    ),
    ("EndTransaction", "Flight SQL: commit or roll back"),
    (
        "CancelFlightInfo",
        "Flight SQL: interrupt a running statement of yours",
    ),
    (
        "CancelQuery",
        "Flight SQL (deprecated form of CancelFlightInfo)",
    ),
];

/// The Flight SQL command in `bytes`, if they hold one.
pub fn command(bytes: &[u8]) -> Option<Result<Command>> {
    mallard_protocol::flight_sql::decode_command(bytes).map(|r| r.map_err(Error::from))
}

/// What to ask the cluster's other nodes for `command`'s parts: the same
/// statement for a read outside a transaction, the SQL of a prepared query
/// (the peers do not hold the prepared statement); `None` for metadata, which
/// is this node's. A write, a transaction's query, or a prepared statement with
/// bound parameters asked of every node is InvalidArgument, before anything runs.
pub async fn peers_descriptor(
    state: &Arc<ServerState>,
    principal: &Principal,
    command: &Command,
    descriptor: &FlightDescriptor,
) -> Result<Option<FlightDescriptor>> {
    let every_node = crate::cluster::NODES_HEADER;
    match command {
        Command::CommandStatementQuery(query) => {
            if query.transaction_id.is_some() {
                return Err(Error::invalid_argument(format!(
                    "{every_node}: all reads outside transactions (a transaction lives on one node)"
                )));
            }
            let shape = statement_shape(state, principal, query.query.clone(), None).await?;
            if shape.kind != StatementKind::Read {
                return Err(Error::invalid_argument(format!(
                    "{every_node}: all runs queries only; run a change on each node yourself"
                )));
            }
            Ok(Some(descriptor.clone()))
        }
        Command::CommandPreparedStatementQuery(p) => {
            let prepared = prepared::get(state, principal, &p.prepared_statement_handle)?;
            let statement = CommandStatementQuery {
                query: prepared.sql_for_peers()?,
                transaction_id: None,
            };
            Ok(Some(FlightDescriptor::new_cmd(
                statement.as_any().encode_to_vec(),
            )))
        }
        _ => Ok(None),
    }
}

/// Whether an action of this type is Flight SQL's.
pub fn is_action(kind: &str) -> bool {
    ACTIONS.iter().any(|(name, _)| *name == kind)
        || matches!(
            kind,
            "CreatePreparedSubstraitPlan" | "BeginSavepoint" | "EndSavepoint"
        )
}

/// Flight SQL's actions for `list_actions`.
pub fn action_types() -> Vec<ActionType> {
    crate::flight::actions::action_types_of(&ACTIONS)
}

fn unsupported(what: &str) -> Error {
    Error::unimplemented(format!("Mallard's Flight SQL does not support {what}"))
}

fn hex(bytes: &Bytes) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn metadata_only(state: &ServerState, principal: &Principal) -> Result<()> {
    state.authz.check(principal, Operation::Inspect)
}

/// The schema a command's data has (`get_schema`, and `get_flight_info`'s).
pub async fn schema(
    state: &Arc<ServerState>,
    principal: &Principal,
    command: &Command,
) -> Result<SchemaRef> {
    Ok(match command {
        Command::CommandStatementQuery(q) => {
            let shape =
                statement_shape(state, principal, q.query.clone(), q.transaction_id.as_ref())
                    .await?;
            if shape.kind == StatementKind::Read {
                shape.result
            } else {
                changed_batch(0)?.schema()
            }
        }
        Command::CommandPreparedStatementQuery(p) => {
            let prepared = prepared::get(state, principal, &p.prepared_statement_handle)?;
            prepared::result_schema(state, principal, &prepared).await?
        }
        Command::CommandGetCatalogs(_) => metadata::catalogs_schema(),
        Command::CommandGetDbSchemas(_) => metadata::db_schemas_schema(),
        Command::CommandGetTables(t) => metadata::tables_schema(t.include_schema),
        Command::CommandGetTableTypes(_) => metadata::table_types_schema(),
        Command::CommandGetSqlInfo(_) => Arc::new(SqlInfoDataBuilder::schema().clone()),
        Command::CommandGetXdbcTypeInfo(_) => metadata::XDBC_TYPES.schema(),
        Command::CommandGetPrimaryKeys(_) => metadata::primary_keys_schema(),
        Command::CommandGetImportedKeys(_)
        | Command::CommandGetExportedKeys(_)
        | Command::CommandGetCrossReference(_) => metadata::foreign_keys_schema(),
        Command::CommandStatementSubstraitPlan(_) => return Err(unsupported("Substrait plans")),
        other => {
            return Err(Error::invalid_argument(format!(
                "{} has no result to describe",
                other.type_url()
            )));
        }
    })
}

/// `GetFlightInfo` (and `PollFlightInfo`) of a Flight SQL command.
pub async fn flight_info(
    state: &Arc<ServerState>,
    principal: &Principal,
    descriptor: FlightDescriptor,
    command: Command,
) -> Result<FlightInfo> {
    if !matches!(
        command,
        Command::CommandStatementQuery(_) | Command::CommandPreparedStatementQuery(_)
    ) {
        metadata_only(state, principal)?;
    }
    let (schema, ticket) = match command {
        Command::CommandStatementQuery(q) => {
            let transaction = q.transaction_id.as_ref();
            let shape = statement_shape(state, principal, q.query.clone(), transaction).await?;
            if shape.kind == StatementKind::Read {
                let ticket = StatementTicket {
                    sql: q.query,
                    transaction: transaction.map(hex),
                    id: format!("{:032x}", rand::random::<u128>()),
                    changed: None,
                };
                (shape.result, ticket.ticket())
            } else {
                let _slot = state.query_slots.acquire(&principal.user)?;
                let (on, policy) = placement(state, principal, transaction)?;
                let rows =
                    query::execute_each(state.db.clone(), q.query, Vec::new(), on, policy).await?;
                let ticket = StatementTicket {
                    changed: Some(rows),
                    ..StatementTicket::default()
                };
                (changed_batch(rows)?.schema(), ticket.ticket())
            }
        }
        Command::CommandPreparedStatementQuery(p) => {
            let prepared = prepared::get(state, principal, &p.prepared_statement_handle)?;
            if prepared.is_query() {
                let schema = prepared::result_schema(state, principal, &prepared).await?;
                let ticket = Command::CommandPreparedStatementQuery(p).into_any();
                (schema, ticket.encode_to_vec())
            } else {
                let rows = prepared::run_update(state, principal, &prepared).await?;
                let ticket = StatementTicket {
                    changed: Some(rows),
                    ..StatementTicket::default()
                };
                (changed_batch(rows)?.schema(), ticket.ticket())
            }
        }
        other => {
            let schema = schema(state, principal, &other).await?;
            (schema, other.into_any().encode_to_vec())
        }
    };
    Ok(FlightInfo::new()
        .try_with_schema(&schema)?
        .with_descriptor(descriptor)
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_total_records(-1))
}

/// `DoGet` of a Flight SQL ticket.
pub async fn do_get(
    state: &Arc<ServerState>,
    principal: &Principal,
    command: Command,
) -> Result<DataStream> {
    let db = state.db.clone();
    let batch = match command {
        Command::TicketStatementQuery(t) => {
            let ticket = StatementTicket::decode(&t.statement_handle)?;
            if let Some(rows) = ticket.changed {
                return Ok(results::batch_data(changed_batch(rows)?));
            }
            let transaction = ticket.transaction.map(Bytes::from);
            let (on, policy) = placement(state, principal, transaction.as_ref())?;
            let query = Query {
                sql: ticket.sql,
                params: Params::none(),
                on,
            };
            return results::query_data(state, principal, query, policy, Some(ticket.id)).await;
        }
        Command::CommandPreparedStatementQuery(p) => {
            let prepared = prepared::get(state, principal, &p.prepared_statement_handle)?;
            let (query, policy) = prepared::query(state, principal, &prepared)?;
            return results::query_data(state, principal, query, policy, None).await;
        }
        other => {
            metadata_only(state, principal)?;
            metadata_batch(state, other, db).await?
        }
    };
    Ok(results::batch_data(batch))
}

async fn metadata_batch(
    state: &Arc<ServerState>,
    command: Command,
    db: Arc<mallard_db::Database>,
) -> Result<RecordBatch> {
    use metadata::TableRef;
    match command {
        Command::CommandGetSqlInfo(c) => Ok(c.into_builder(&state.flight_sql.info).build()?),
        Command::CommandGetXdbcTypeInfo(c) => Ok(c.into_builder(&metadata::XDBC_TYPES).build()?),
        Command::CommandGetTableTypes(c) => metadata::table_types(c),
        other => {
            crate::flight::blocking::blocking(move || match other {
                Command::CommandGetCatalogs(c) => metadata::catalogs(&db, c),
                Command::CommandGetDbSchemas(c) => metadata::db_schemas(&db, c),
                Command::CommandGetTables(c) => metadata::tables(&db, c),
                Command::CommandGetPrimaryKeys(c) => metadata::primary_keys(
                    &db,
                    TableRef {
                        catalog: c.catalog.as_deref(),
                        schema: c.db_schema.as_deref(),
                        table: &c.table,
                    },
                ),
                Command::CommandGetImportedKeys(c) => metadata::foreign_keys(
                    &db,
                    None,
                    Some(TableRef {
                        catalog: c.catalog.as_deref(),
                        schema: c.db_schema.as_deref(),
                        table: &c.table,
                    }),
                ),
                Command::CommandGetExportedKeys(c) => metadata::foreign_keys(
                    &db,
                    Some(TableRef {
                        catalog: c.catalog.as_deref(),
                        schema: c.db_schema.as_deref(),
                        table: &c.table,
                    }),
                    None,
                ),
                Command::CommandGetCrossReference(c) => metadata::foreign_keys(
                    &db,
                    Some(TableRef {
                        catalog: c.pk_catalog.as_deref(),
                        schema: c.pk_db_schema.as_deref(),
                        table: &c.pk_table,
                    }),
                    Some(TableRef {
                        catalog: c.fk_catalog.as_deref(),
                        schema: c.fk_db_schema.as_deref(),
                        table: &c.fk_table,
                    }),
                ),
                other => Err(Error::invalid_argument(format!(
                    "{} is not a Flight SQL ticket",
                    other.type_url()
                ))),
            })
            .await
        }
    }
}

/// A `DoPut` call's input: the message that carried the command, the rest of
/// the stream, and whether the stream ends cleanly.
pub struct Put<'a> {
    /// The first message (with the descriptor).
    pub first: FlightData,
    /// The messages after it.
    pub incoming: &'a mut crate::flight::incoming::Incoming,
    /// Whether the client reset the stream instead of finishing it.
    pub outcome: &'a BodyOutcome,
}

impl Put<'_> {
    /// All of a small input (parameters), bounded, refused if cancelled.
    async fn parameters(self, idle: Duration) -> Result<Vec<RecordBatch>> {
        let batches = inbound::bounded_batches(
            self.first,
            self.incoming,
            idle,
            MAX_PARAM_ROWS,
            MAX_PARAM_BYTES,
            "prepared statement parameters",
        )
        .await?;
        ensure_complete(self.outcome, "parameter")?;
        Ok(batches)
    }
}

/// `DoPut` of a Flight SQL command.
pub async fn do_put(
    state: &Arc<ServerState>,
    principal: &Principal,
    command: Command,
    put: Put<'_>,
) -> Result<PutResult> {
    let idle = state.config.stall_timeout;
    let app_metadata = match command {
        Command::CommandStatementUpdate(u) => {
            let _slot = state.query_slots.acquire(&principal.user)?;
            let (on, policy) = placement(state, principal, u.transaction_id.as_ref())?;
            let rows =
                query::execute_each(state.db.clone(), u.query, Vec::new(), on, policy).await?;
            update_result(rows)
        }
        Command::CommandStatementIngest(command) => {
            update_result(ingest::bulk_ingest(state, principal, command, put).await?)
        }
        Command::CommandPreparedStatementQuery(p) => {
            let prepared = prepared::get(state, principal, &p.prepared_statement_handle)?;
            prepared.bind(put.parameters(idle).await?);
            DoPutPreparedStatementResult {
                prepared_statement_handle: Some(p.prepared_statement_handle),
            }
            .encode_to_vec()
        }
        Command::CommandPreparedStatementUpdate(p) => {
            let prepared = prepared::get(state, principal, &p.prepared_statement_handle)?;
            let batches = put.parameters(idle).await?;
            if !batches.is_empty() {
                prepared.bind(batches);
            }
            update_result(prepared::run_update(state, principal, &prepared).await?)
        }
        Command::CommandStatementSubstraitPlan(_) => return Err(unsupported("Substrait plans")),
        other => {
            return Err(Error::invalid_argument(format!(
                "{} cannot be sent with do_put",
                other.type_url()
            )));
        }
    };
    Ok(PutResult {
        app_metadata: app_metadata.into(),
    })
}

fn update_result(rows: u64) -> Vec<u8> {
    DoPutUpdateResult {
        record_count: i64::try_from(rows).unwrap_or(i64::MAX),
    }
    .encode_to_vec()
}

/// `DoAction` of a Flight SQL action: the results to send.
pub async fn do_action(
    state: &Arc<ServerState>,
    principal: &Principal,
    kind: &str,
    body: Bytes,
) -> Result<Vec<arrow_flight::Result>> {
    let any = || {
        Any::decode(body.as_ref()).map_err(|e| {
            Error::invalid_argument(format!("{kind}: body is not a protobuf Any: {e}"))
        })
    };
    fn unpack<M: ProstMessageExt>(any: Any, kind: &str) -> Result<M> {
        any.unpack::<M>()
            .ok()
            .flatten()
            .ok_or_else(|| Error::invalid_argument(format!("{kind}: unexpected body type")))
    }
    let reply = |message: Vec<u8>| {
        vec![arrow_flight::Result {
            body: message.into(),
        }]
    };
    match kind {
        "CreatePreparedStatement" => {
            let request: ActionCreatePreparedStatementRequest = unpack(any()?, kind)?;
            let result = prepared::create(state, principal, request).await?;
            Ok(reply(result.as_any().encode_to_vec()))
        }
        "ClosePreparedStatement" => {
            let request: ActionClosePreparedStatementRequest = unpack(any()?, kind)?;
            prepared::close(state, principal, &request.prepared_statement_handle)?;
            Ok(Vec::new())
        }
        "BeginTransaction" => {
            let _request: ActionBeginTransactionRequest = unpack(any()?, kind)?;
            let id = transactions::begin(state, principal).await?;
            let result = ActionBeginTransactionResult {
                transaction_id: id.into_bytes().into(),
            };
            Ok(reply(result.as_any().encode_to_vec()))
        }
        "EndTransaction" => {
            let request: ActionEndTransactionRequest = unpack(any()?, kind)?;
            transactions::end(state, principal, request).await?;
            Ok(Vec::new())
        }
        "CancelFlightInfo" => {
            let request = CancelFlightInfoRequest::decode(body.as_ref()).map_err(|e| {
                Error::invalid_argument(format!("CancelFlightInfo: malformed request: {e}"))
            })?;
            let status = cancel(state, principal, request.info.as_ref());
            let result = CancelFlightInfoResult {
                status: status as i32,
            };
            Ok(reply(result.encode_to_vec()))
        }
        "CancelQuery" => {
            let request: ActionCancelQueryRequest = unpack(any()?, kind)?;
            let info = FlightInfo::decode(request.info.as_ref()).map_err(|e| {
                Error::invalid_argument(format!("CancelQuery: malformed FlightInfo: {e}"))
            })?;
            let status = cancel(state, principal, Some(&info));
            let result = ActionCancelQueryResult {
                result: status as i32,
            };
            Ok(reply(result.as_any().encode_to_vec()))
        }
        "CreatePreparedSubstraitPlan" => Err(unsupported("Substrait plans")),
        "BeginSavepoint" | "EndSavepoint" => Err(unsupported("savepoints")),
        other => Err(Error::invalid_argument(format!(
            "{other:?} is not a Flight SQL action"
        ))),
    }
}

/// Interrupts the statements `info`'s tickets name, if they are the caller's and run.
fn cancel(state: &ServerState, principal: &Principal, info: Option<&FlightInfo>) -> CancelStatus {
    let mut status = CancelStatus::NotCancellable;
    for id in tickets::statement_ids(info) {
        if state.running_queries.cancel(&principal.user, &id) == CancelStatus::Cancelled {
            status = CancelStatus::Cancelled;
        }
    }
    status
}
