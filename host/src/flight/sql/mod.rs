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

pub mod metadata;
pub mod registry;
pub mod running;

use crate::auth::Principal;
use crate::authz::Operation;
use crate::db::ingest::{Ingest, Mode};
use crate::db::params::Params;
use crate::db::query::{self, Query};
use crate::db::session::{InTransaction, On, SessionConnection};
use crate::db::statements::{self, Shape, StatementKind, StatementPolicy};
use crate::error::{Error, Result};
use crate::exchange::sql::caller_scope;
use crate::flight::body_outcome::{BodyOutcome, ensure_complete};
use crate::flight::inbound;
use crate::flight::results::{self, DataStream};
use crate::state::ServerState;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    ActionBeginTransactionRequest, ActionBeginTransactionResult, ActionCancelQueryRequest,
    ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    ActionEndTransactionRequest, Any, Command, CommandStatementIngest,
    DoPutPreparedStatementResult, DoPutUpdateResult, EndTransaction, ProstMessageExt,
    TableExistsOption, TableNotExistOption, TicketStatementQuery,
};
use arrow_flight::{
    ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightData,
    FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, PutResult, SchemaAsIpc, Ticket,
};
use arrow_ipc::writer::IpcWriteOptions;
use bytes::Bytes;
use mallard_protocol::TableName;
use prost::Message;
use registry::{Limits, Registry};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::Streaming;

/// The `Any` type prefix of every Flight SQL message.
pub use mallard_protocol::flight_sql::TYPE_PREFIX;

/// Prepared statements: per user, in all, and how long one may sit unused.
pub const PREPARED_LIMITS: Limits = Limits {
    per_user: 64,
    total: 4_096,
    idle: Duration::from_secs(3_600),
};

/// Open transactions: each holds a DuckDB connection (and its locks), so few,
/// and rolled back after five idle minutes.
pub const TRANSACTION_LIMITS: Limits = Limits {
    per_user: 4,
    total: 64,
    idle: Duration::from_secs(300),
};

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

/// What Flight SQL keeps between a client's calls.
pub struct FlightSqlState {
    prepared: Registry<PreparedStatement>,
    transactions: Registry<SessionConnection>,
    info: SqlInfoData,
}

impl FlightSqlState {
    /// Empty tables; `statement_timeout` is what `GetSqlInfo` reports.
    pub fn new(statement_timeout: Duration) -> Result<Self> {
        let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
        Ok(Self {
            prepared: Registry::new("prepared statements", PREPARED_LIMITS),
            transactions: Registry::new("transactions", TRANSACTION_LIMITS),
            info: metadata::sql_info(ms(statement_timeout), ms(TRANSACTION_LIMITS.idle))?,
        })
    }

    /// Open transactions (all users).
    pub fn open_transactions(&self) -> usize {
        self.transactions.len()
    }

    /// Open prepared statements (all users).
    pub fn open_prepared(&self) -> usize {
        self.prepared.len()
    }
}

/// How often idle prepared statements and transactions are looked for.
pub const EXPIRY_SWEEP: Duration = Duration::from_secs(30);

/// Drops idle prepared statements and rolls back idle transactions every
/// [`EXPIRY_SWEEP`] while the server's state lives.
pub fn expire_idle_in_background(state: &Arc<ServerState>) {
    let state = Arc::downgrade(state);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(EXPIRY_SWEEP).await;
            let Some(live) = state.upgrade() else { return };
            let now = std::time::Instant::now();
            let prepared = live.flight_sql.prepared.expire(now);
            let transactions = live.flight_sql.transactions.expire(now);
            drop(live);
            if !prepared.is_empty() || !transactions.is_empty() {
                tracing::debug!(
                    prepared = prepared.len(),
                    transactions = transactions.len(),
                    "expired idle Flight SQL handles"
                );
            }
            // Dropping a transaction's connection rolls it back: off the runtime.
            let _ = tokio::task::spawn_blocking(move || drop(transactions)).await;
        }
    });
}

/// A prepared statement: its SQL (prepared again by DuckDB at each run, so it
/// is judged against the catalog as it is then), its shape, and bound rows.
struct PreparedStatement {
    sql: String,
    kind: StatementKind,
    transaction: Option<Bytes>,
    dataset_schema: SchemaRef,
    params: Mutex<Vec<RecordBatch>>,
}

/// What a statement ticket carries: the SQL (judged again when it runs, with
/// the caller's rights, so a forged ticket gains nothing), its transaction, and
/// an id to cancel it by; or, for a statement that changes something (run when
/// its `GetFlightInfo` came, so a client that never fetches still gets its
/// DDL done before the call returns), the rows it changed.
#[derive(Serialize, Deserialize, Default)]
struct StatementTicket {
    #[serde(default)]
    sql: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    transaction: Option<String>,
    #[serde(default)]
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    changed: Option<u64>,
}

impl StatementTicket {
    /// The ticket's handle bytes, read back; InvalidArgument if they are not one.
    fn decode(handle: &[u8]) -> Result<Self> {
        serde_json::from_slice(handle)
            .map_err(|e| Error::InvalidArgument(format!("malformed statement ticket: {e}")))
    }

    fn ticket(&self) -> Vec<u8> {
        TicketStatementQuery {
            statement_handle: serde_json::to_vec(self).expect("ticket serialises").into(),
        }
        .as_any()
        .encode_to_vec()
    }
}

/// The one-row answer of a statement that changed something: DuckDB's `Count`.
fn changed_batch(rows: u64) -> Result<RecordBatch> {
    let count = i64::try_from(rows).unwrap_or(i64::MAX);
    Ok(RecordBatch::try_from_iter([(
        "Count",
        Arc::new(arrow::array::Int64Array::from(vec![count])) as arrow::array::ArrayRef,
    )])?)
}

/// The Flight SQL command in `bytes`, if they hold one.
pub fn command(bytes: &[u8]) -> Option<Result<Command>> {
    mallard_protocol::flight_sql::decode_command(bytes).map(|r| r.map_err(Error::from))
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
    Error::Unimplemented(format!("Mallard's Flight SQL does not support {what}"))
}

fn ipc_schema(schema: &SchemaRef) -> Result<Bytes> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into()?;
    Ok(bytes)
}

/// Where a request of `transaction` runs and the policy it runs under.
fn placement(
    state: &ServerState,
    principal: &Principal,
    transaction: Option<&Bytes>,
) -> Result<(On, Arc<dyn StatementPolicy>)> {
    let policy = state.authz.sql(principal);
    match transaction {
        None => Ok((On::Fresh, policy)),
        Some(id) => {
            let session = state.flight_sql.transactions.get(&principal.user, id)?;
            Ok((On::Session(session), Arc::new(InTransaction(policy))))
        }
    }
}

fn hex(bytes: &Bytes) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The shape of one statement, judged for `principal`, without running it.
async fn statement_shape(
    state: &Arc<ServerState>,
    principal: &Principal,
    sql: String,
    transaction: Option<&Bytes>,
) -> Result<Shape> {
    on_callers_connection(state, principal, transaction, move |conn, policy| {
        statements::statement_shape(conn, &sql, policy)
    })
    .await
}

/// Runs `f` on a blocking thread, on the connection `transaction` places the
/// caller's statements on, with the caller's SQL policy and its `exchange()` scope.
async fn on_callers_connection<T: Send + 'static>(
    state: &Arc<ServerState>,
    principal: &Principal,
    transaction: Option<&Bytes>,
    f: impl FnOnce(&crate::db::raw::RawConnection, &dyn StatementPolicy) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (on, policy) = placement(state, principal, transaction)?;
    let db = state.db.clone();
    let scope = caller_scope(state, principal, Arc::default());
    crate::flight::actions::blocking(move || {
        let own;
        let guard;
        let conn = match &on {
            On::Fresh => {
                own = db.connect_raw()?;
                &own
            }
            On::Session(session) => {
                guard = session.lock()?;
                &*guard
            }
        };
        let _scope = db
            .scopes
            .enter(conn.id(), scope(conn.interrupt_handle().watch()));
        f(conn, &*policy)
    })
    .await
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
            let prepared = state
                .flight_sql
                .prepared
                .get(&principal.user, &p.prepared_statement_handle)?;
            if prepared.kind == StatementKind::Read {
                prepared_result_schema(state, principal, &prepared).await?
            } else {
                changed_batch(0)?.schema()
            }
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
            return Err(Error::InvalidArgument(format!(
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
            let prepared = state
                .flight_sql
                .prepared
                .get(&principal.user, &p.prepared_statement_handle)?;
            if prepared.kind == StatementKind::Read {
                let schema = prepared_result_schema(state, principal, &prepared).await?;
                let ticket = Command::CommandPreparedStatementQuery(p).into_any();
                (schema, ticket.encode_to_vec())
            } else {
                let rows = run_prepared_update(state, principal, &prepared).await?;
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
            let prepared = state
                .flight_sql
                .prepared
                .get(&principal.user, &p.prepared_statement_handle)?;
            let (on, policy) = placement(state, principal, prepared.transaction.as_ref())?;
            let rows = bound_rows(&prepared)?;
            let params = match rows.len() {
                0 => Params::none(),
                1 => rows.into_iter().next().expect("one row"),
                n => {
                    return Err(Error::InvalidArgument(format!(
                        "a prepared query runs with one row of parameters; {n} are bound \
                         (bind one row, or use an update for many)"
                    )));
                }
            };
            let query = Query {
                sql: prepared.sql.clone(),
                params,
                on,
            };
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
    db: Arc<crate::db::Database>,
) -> Result<RecordBatch> {
    use metadata::TableRef;
    match command {
        Command::CommandGetSqlInfo(c) => Ok(c.into_builder(&state.flight_sql.info).build()?),
        Command::CommandGetXdbcTypeInfo(c) => Ok(c.into_builder(&metadata::XDBC_TYPES).build()?),
        Command::CommandGetTableTypes(c) => metadata::table_types(c),
        other => {
            crate::flight::actions::blocking(move || match other {
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
                other => Err(Error::InvalidArgument(format!(
                    "{} is not a Flight SQL ticket",
                    other.type_url()
                ))),
            })
            .await
        }
    }
}

/// The parameter rows bound to `prepared`, one [`Params`] each.
fn bound_rows(prepared: &PreparedStatement) -> Result<Vec<Params>> {
    let batches = prepared.params.lock().unwrap_or_else(|p| p.into_inner());
    let mut rows = Vec::new();
    for batch in batches.iter() {
        for row in 0..batch.num_rows() {
            rows.push(Params::from_row(batch, row)?);
        }
    }
    Ok(rows)
}

/// A `DoPut` call's input: the message that carried the command, the rest of
/// the stream, and whether the stream ends cleanly.
pub struct Put<'a> {
    /// The first message (with the descriptor).
    pub first: FlightData,
    /// The messages after it.
    pub incoming: &'a mut Streaming<FlightData>,
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
        Command::CommandStatementIngest(ingest) => {
            update_result(bulk_ingest(state, principal, ingest, put).await?)
        }
        Command::CommandPreparedStatementQuery(p) => {
            let prepared = state
                .flight_sql
                .prepared
                .get(&principal.user, &p.prepared_statement_handle)?;
            let batches = put.parameters(idle).await?;
            *prepared.params.lock().unwrap_or_else(|p| p.into_inner()) = batches;
            DoPutPreparedStatementResult {
                prepared_statement_handle: Some(p.prepared_statement_handle),
            }
            .encode_to_vec()
        }
        Command::CommandPreparedStatementUpdate(p) => {
            let prepared = state
                .flight_sql
                .prepared
                .get(&principal.user, &p.prepared_statement_handle)?;
            let batches = put.parameters(idle).await?;
            if !batches.is_empty() {
                *prepared.params.lock().unwrap_or_else(|p| p.into_inner()) = batches;
            }
            update_result(run_prepared_update(state, principal, &prepared).await?)
        }
        Command::CommandStatementSubstraitPlan(_) => return Err(unsupported("Substrait plans")),
        other => {
            return Err(Error::InvalidArgument(format!(
                "{} cannot be sent with do_put",
                other.type_url()
            )));
        }
    };
    Ok(PutResult {
        app_metadata: app_metadata.into(),
    })
}

/// Runs a prepared statement once per bound parameter row (once without
/// parameters when none are bound); the changed rows of all runs.
async fn run_prepared_update(
    state: &Arc<ServerState>,
    principal: &Principal,
    prepared: &PreparedStatement,
) -> Result<u64> {
    let rows = bound_rows(prepared)?;
    let _slot = state.query_slots.acquire(&principal.user)?;
    let (on, policy) = placement(state, principal, prepared.transaction.as_ref())?;
    query::execute_each(state.db.clone(), prepared.sql.clone(), rows, on, policy).await
}

fn update_result(rows: u64) -> Vec<u8> {
    DoPutUpdateResult {
        record_count: i64::try_from(rows).unwrap_or(i64::MAX),
    }
    .encode_to_vec()
}

/// The ingest mode a `CommandStatementIngest` asks for, and the right it needs
/// beyond putting (replacing destroys the old table: that is dropping it).
fn ingest_mode(command: &CommandStatementIngest) -> Result<(Mode, Option<Operation>)> {
    let options = command.table_definition_options.unwrap_or_default();
    let missing = TableNotExistOption::try_from(options.if_not_exist)
        .map_err(|_| Error::InvalidArgument("unknown if_not_exist option".into()))?;
    let exists = TableExistsOption::try_from(options.if_exists)
        .map_err(|_| Error::InvalidArgument("unknown if_exists option".into()))?;
    use TableExistsOption as E;
    use TableNotExistOption as N;
    Ok(match (missing, exists) {
        (N::Create | N::Unspecified, E::Fail | E::Unspecified) => (Mode::Create, None),
        (N::Create | N::Unspecified, E::Append) => (Mode::CreateOrAppend, None),
        (N::Fail, E::Append | E::Unspecified) => (Mode::Append, None),
        (N::Create | N::Unspecified, E::Replace) => (Mode::Replace, Some(Operation::DropTable)),
        (N::Fail, E::Replace) => {
            return Err(unsupported(
                "replacing a table only if it exists (if_not_exist = FAIL with if_exists = REPLACE)",
            ));
        }
        (N::Fail, E::Fail) => {
            return Err(Error::InvalidArgument(
                "if_not_exist = FAIL with if_exists = FAIL can never ingest".into(),
            ));
        }
    })
}

async fn bulk_ingest(
    state: &Arc<ServerState>,
    principal: &Principal,
    command: CommandStatementIngest,
    put: Put<'_>,
) -> Result<u64> {
    let Put {
        first,
        incoming,
        outcome: body,
    } = put;
    state.authz.check(principal, Operation::Put)?;
    let (mode, extra) = ingest_mode(&command)?;
    if let Some(op) = extra {
        state.authz.check(principal, op)?;
    }
    if command.temporary {
        return Err(unsupported(
            "temporary tables (they would vanish with the request's connection)",
        ));
    }
    if let Some(schema) = command.schema.as_deref().filter(|s| *s != "main") {
        return Err(unsupported(&format!(
            "ingest into schema {schema:?} (tables live in schema \"main\")"
        )));
    }
    if command.transaction_id.is_some() && state.authz.sql(principal).read_only() {
        return Err(Error::FailedPrecondition(
            "below admin a transaction is read-only, so bulk ingest runs outside \
             transactions: ingest with autocommit on (each ingest is all-or-nothing on its own)"
                .into(),
        ));
    }
    let table = TableName::parse(&command.table).map_err(Error::from)?;
    let _slot = state.put_slots.acquire(&principal.user)?;
    let idle = state.config.stall_timeout;
    let schema_header = inbound::schema_message(first, incoming, idle, "ingest").await?;
    let (schema, _) = crate::exchange::validated_schema_message(schema_header)?;
    let transaction = command.transaction_id.as_ref();
    let (on, _) = placement(state, principal, transaction)?;
    let mut ingest = Ingest::start_with(state.db.clone(), table, schema, mode, on);
    let outcome = async {
        while let Some(message) = inbound::next_within(incoming, idle, "ingest").await? {
            if !message.data_header.is_empty() {
                ingest
                    .append_message(message.data_header, message.data_body)
                    .await?;
            }
        }
        ensure_complete(body, "ingest")?;
        ingest.commit().await
    }
    .await;
    tracing::debug!(user = ?principal.user, table = ?command.table, ?mode, ok = outcome.is_ok(), "Flight SQL ingest ended");
    match (outcome, transaction) {
        (Err(e), Some(id)) => {
            // The failed ingest rolled its transaction back; the handle goes too,
            // so the client's commit fails instead of committing a part.
            let _ = state.flight_sql.transactions.remove(&principal.user, id);
            Err(e.context("ingest failed and its transaction was rolled back"))
        }
        (outcome, _) => outcome,
    }
}

/// `DoAction` of a Flight SQL action: the results to send.
pub async fn do_action(
    state: &Arc<ServerState>,
    principal: &Principal,
    kind: &str,
    body: Bytes,
) -> Result<Vec<arrow_flight::Result>> {
    let any = || {
        Any::decode(body.as_ref())
            .map_err(|e| Error::InvalidArgument(format!("{kind}: body is not a protobuf Any: {e}")))
    };
    fn unpack<M: ProstMessageExt>(any: Any, kind: &str) -> Result<M> {
        any.unpack::<M>()
            .ok()
            .flatten()
            .ok_or_else(|| Error::InvalidArgument(format!("{kind}: unexpected body type")))
    }
    let reply = |message: Vec<u8>| {
        vec![arrow_flight::Result {
            body: message.into(),
        }]
    };
    match kind {
        "CreatePreparedStatement" => {
            let request: ActionCreatePreparedStatementRequest = unpack(any()?, kind)?;
            let shape = statement_shape(
                state,
                principal,
                request.query.clone(),
                request.transaction_id.as_ref(),
            )
            .await?;
            let dataset_schema = if shape.kind == StatementKind::Read {
                shape.result
            } else {
                changed_batch(0)?.schema()
            };
            let result = ActionCreatePreparedStatementResult {
                prepared_statement_handle: Bytes::new(),
                dataset_schema: ipc_schema(&dataset_schema)?,
                parameter_schema: ipc_schema(&shape.params)?,
            };
            let handle = state.flight_sql.prepared.insert(
                &principal.user,
                PreparedStatement {
                    sql: request.query,
                    kind: shape.kind,
                    transaction: request.transaction_id,
                    dataset_schema,
                    params: Mutex::new(Vec::new()),
                },
            )?;
            let result = ActionCreatePreparedStatementResult {
                prepared_statement_handle: handle.into_bytes().into(),
                ..result
            };
            Ok(reply(result.as_any().encode_to_vec()))
        }
        "ClosePreparedStatement" => {
            let request: ActionClosePreparedStatementRequest = unpack(any()?, kind)?;
            state
                .flight_sql
                .prepared
                .remove(&principal.user, &request.prepared_statement_handle)?;
            Ok(Vec::new())
        }
        "BeginTransaction" => {
            let _request: ActionBeginTransactionRequest = unpack(any()?, kind)?;
            state.authz.check(principal, Operation::Inspect)?;
            let read_only = state.authz.sql(principal).read_only();
            let db = state.db.clone();
            let session = crate::flight::actions::blocking(move || {
                let conn = db.connect_raw()?;
                conn.execute(if read_only {
                    "BEGIN TRANSACTION READ ONLY"
                } else {
                    "BEGIN TRANSACTION"
                })?;
                conn.interrupt_handle().disarm();
                Ok(SessionConnection::new(conn))
            })
            .await?;
            let id = state
                .flight_sql
                .transactions
                .insert(&principal.user, session)?;
            let result = ActionBeginTransactionResult {
                transaction_id: id.into_bytes().into(),
            };
            Ok(reply(result.as_any().encode_to_vec()))
        }
        "EndTransaction" => {
            let request: ActionEndTransactionRequest = unpack(any()?, kind)?;
            let end = EndTransaction::try_from(request.action)
                .map_err(|_| Error::InvalidArgument("unknown EndTransaction action".into()))?;
            let sql = match end {
                EndTransaction::Commit => "COMMIT",
                EndTransaction::Rollback => "ROLLBACK",
                EndTransaction::Unspecified => {
                    return Err(Error::InvalidArgument(
                        "EndTransaction needs COMMIT or ROLLBACK".into(),
                    ));
                }
            };
            let transactions = &state.flight_sql.transactions;
            let session = transactions.get(&principal.user, &request.transaction_id)?;
            let ended = crate::flight::actions::blocking(move || {
                let conn = session.lock()?;
                conn.execute(sql).map(|_| ())
            })
            .await;
            if !matches!(&ended, Err(Error::FailedPrecondition(_))) {
                // Committed, rolled back, or failed to commit (DuckDB rolls back): gone.
                let _ = transactions.remove(&principal.user, &request.transaction_id);
            }
            ended.map_err(|e| match e {
                Error::InvalidArgument(m) if sql == "COMMIT" => {
                    Error::Aborted(format!("the transaction could not commit: {m}"))
                }
                other => other,
            })?;
            Ok(Vec::new())
        }
        "CancelFlightInfo" => {
            let request = CancelFlightInfoRequest::decode(body.as_ref()).map_err(|e| {
                Error::InvalidArgument(format!("CancelFlightInfo: malformed request: {e}"))
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
                Error::InvalidArgument(format!("CancelQuery: malformed FlightInfo: {e}"))
            })?;
            let status = cancel(state, principal, Some(&info));
            let result = ActionCancelQueryResult {
                result: status as i32,
            };
            Ok(reply(result.as_any().encode_to_vec()))
        }
        "CreatePreparedSubstraitPlan" => Err(unsupported("Substrait plans")),
        "BeginSavepoint" | "EndSavepoint" => Err(unsupported("savepoints")),
        other => Err(Error::InvalidArgument(format!(
            "{other:?} is not a Flight SQL action"
        ))),
    }
}

/// The [`Shape`] of one statement, judged by `policy`, on the connection `on` names.
/// The schema a prepared query's stream will have: with one row of parameters
/// bound, the schema DuckDB gives the statement bound with them (it may type
/// the result only then); without, the one it gave when prepared.
async fn prepared_result_schema(
    state: &Arc<ServerState>,
    principal: &Principal,
    prepared: &PreparedStatement,
) -> Result<SchemaRef> {
    let mut rows = bound_rows(prepared)?;
    if rows.len() != 1 {
        return Ok(prepared.dataset_schema.clone());
    }
    let params = rows.pop().expect("one row");
    let sql = prepared.sql.clone();
    let transaction = prepared.transaction.as_ref();
    on_callers_connection(state, principal, transaction, move |conn, policy| {
        statements::bound_result_schema(conn, &sql, policy, &params)
    })
    .await
}

/// Interrupts the statement `info`'s ticket names, if it is the caller's and runs.
fn cancel(state: &ServerState, principal: &Principal, info: Option<&FlightInfo>) -> CancelStatus {
    let ids = info
        .into_iter()
        .flat_map(|i| i.endpoint.iter())
        .filter_map(|e| e.ticket.as_ref())
        .filter_map(|t| match command(&t.ticket) {
            Some(Ok(Command::TicketStatementQuery(q))) => {
                serde_json::from_slice::<StatementTicket>(&q.statement_handle).ok()
            }
            _ => None,
        })
        .map(|t| t.id);
    let mut status = CancelStatus::NotCancellable;
    for id in ids {
        if state.running_queries.cancel(&principal.user, &id) == CancelStatus::Cancelled {
            status = CancelStatus::Cancelled;
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(ticket: &StatementTicket) -> StatementTicket {
        match command(&ticket.ticket()) {
            Some(Ok(Command::TicketStatementQuery(t))) => {
                StatementTicket::decode(&t.statement_handle).unwrap()
            }
            _ => panic!("a statement ticket decodes as TicketStatementQuery"),
        }
    }

    #[test]
    fn statement_tickets_round_trip_through_the_command_decoder() {
        let query = StatementTicket {
            sql: "SELECT 1".into(),
            transaction: Some("ab12".into()),
            id: "0f".repeat(16),
            changed: None,
        };
        let back = round_trip(&query);
        assert_eq!(
            (back.sql, back.transaction, back.id, back.changed),
            (query.sql, query.transaction, query.id, None)
        );
        let changed = round_trip(&StatementTicket {
            changed: Some(7),
            ..StatementTicket::default()
        });
        assert_eq!((changed.sql.as_str(), changed.changed), ("", Some(7)));
    }

    #[test]
    fn a_malformed_ticket_is_invalid_argument_and_a_forged_one_only_carries_sql() {
        let err = StatementTicket::decode(b"{not json").err().unwrap();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        // A hand-made ticket is just SQL: it is judged with the caller's rights when it runs.
        let forged = StatementTicket::decode(br#"{"sql": "DROP TABLE t", "admin": true}"#).unwrap();
        assert_eq!(forged.sql, "DROP TABLE t");
        assert!(forged.transaction.is_none() && forged.changed.is_none());
    }
}
