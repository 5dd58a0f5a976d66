//! The SQL entry: `exchange(EXCHANGE, QUERY [, params := map{…}])`, a table
//! function that runs `QUERY` and streams its result through the exchange
//! `EXCHANGE` (the same text as a `do_exchange` descriptor: a name such as
//! `add_processed`, a JSON stage, or a JSON list of stages), yielding the last
//! stage's output as a table:
//!
//! ```sql
//! SELECT origin, count(*)
//! FROM exchange('classify_delays', 'SELECT * FROM flights', params := map{'mode': 'route'})
//! GROUP BY 1
//! ```
//!
//! It acts for the caller of the connection it runs on (its [`SqlCaller`], which
//! the request registers): the inner query runs with the caller's SQL rights, on
//! its own connection, judged like any query of theirs; the exchange takes the
//! caller's exchange slot, resolves names for the caller, and charges guest
//! memory to the caller, exactly as `do_exchange`. A connection without a caller
//! (the server's own SQL) cannot call it, and an inner query cannot call it
//! again (nesting would hold connections and threads without bound; a pipeline
//! does the same in one exchange).
//!
//! Binding opens the stages once to learn the output schema (DuckDB binds a
//! statement before running it, and Mallard binds it once more to judge it);
//! nothing runs until DuckDB starts the scan. When the outer query is
//! interrupted (timeout, client gone) the exchange is cancelled at once.

use super::output::Output;
use super::pipeline::{self, Input};
use crate::Exchanges;
use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use futures::StreamExt;
use futures::stream::BoxStream;
use mallard_access::Principal;
use mallard_access::authz::Operation;
use mallard_core::{Error, Result};
use mallard_db::query::{self, ScopeFactory};
use mallard_db::raw::RawConnection;
use mallard_db::scopes::Scope;
use mallard_db::statements;
use mallard_db::table_function::{self, BoundSource, Call, TableSource};
use mallard_exchanger::ipc::{MessageDecoder, MessageEncoder};
use mallard_protocol::{ExchangeRequest, Receipt, Sandbox};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, Weak};
use tokio::runtime::Handle;
use tokio::sync::watch;

/// The function's name in SQL.
pub const FUNCTION: &str = "exchange";

/// Who a connection's SQL runs for, as the `exchange` function needs it.
#[derive(Clone)]
pub struct SqlCaller {
    exchanges: Weak<Exchanges>,
    principal: Principal,
    runtime: Handle,
    /// Turns true when the query this connection runs is interrupted.
    interrupted: watch::Receiver<bool>,
    /// Receipts of the exchanges the query ran, for the response's trailer.
    receipts: Arc<Mutex<Vec<Receipt>>>,
    /// Whether this connection runs an `exchange` function's inner query.
    nested: bool,
    /// Where binds of `exchange` report what they bound, when someone asks
    /// (the bare-select check in [`super::bare_select`]).
    witness: Option<Arc<Mutex<Vec<Bound>>>>,
}

impl SqlCaller {
    /// The caller a connection's `scope` registered, allowed to exchange:
    /// PermissionDenied for a connection without one (the server's own SQL), or
    /// for a role without the right. `function` names the SQL function asking.
    pub(crate) fn of(scope: Option<Scope>, function: &str) -> Result<(Arc<Self>, Arc<Exchanges>)> {
        let caller = scope
            .and_then(|s| s.downcast::<SqlCaller>().ok())
            .ok_or_else(|| {
                Error::permission_denied(format!("{function} runs only in a client's query"))
            })?;
        let exchanges = caller.exchanges()?;
        exchanges
            .authz
            .check(&caller.principal, Operation::Exchange)?;
        Ok((caller, exchanges))
    }

    /// The server's exchanges; Unavailable once it is stopping.
    pub(crate) fn exchanges(&self) -> Result<Arc<Exchanges>> {
        self.exchanges
            .upgrade()
            .ok_or_else(|| Error::unavailable("the server is stopping"))
    }

    /// Who the SQL runs for.
    pub(crate) fn principal(&self) -> &Principal {
        &self.principal
    }

    /// A flag set when the query is interrupted (a guest call checks it at its
    /// next epoch tick).
    pub(crate) fn cancellation(&self) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(*self.interrupted.borrow()));
        let (set, mut interrupted) = (flag.clone(), self.interrupted.clone());
        self.runtime.spawn(async move {
            if interrupted.wait_for(|fired| *fired).await.is_ok() {
                set.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        flag
    }

    /// Adds an exchange's receipt to the query's.
    pub(crate) fn add_receipt(&self, receipt: Receipt) {
        self.receipts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(receipt);
    }
}

/// The scope factory a request passes to [`query`] so its SQL may call
/// `exchange`; the receipts of the exchanges it runs land in `receipts`.
/// Call inside the runtime.
pub fn caller_scope(
    exchanges: &Arc<Exchanges>,
    principal: &Principal,
    receipts: Arc<Mutex<Vec<Receipt>>>,
) -> ScopeFactory {
    let exchanges = Arc::downgrade(exchanges);
    let principal = principal.clone();
    let runtime = Handle::current();
    Box::new(move |interrupted| {
        Arc::new(SqlCaller {
            exchanges,
            principal,
            runtime,
            interrupted,
            receipts,
            nested: false,
            witness: None,
        }) as Scope
    })
}

/// A caller for `principal` whose binds of `exchange` are recorded in the
/// returned list (outside any query: nothing interrupts it, and no receipt is
/// added through it).
pub(crate) fn witnessing_caller(
    exchanges: &Arc<Exchanges>,
    principal: &Principal,
) -> (SqlCaller, Arc<Mutex<Vec<Bound>>>) {
    let witness = Arc::new(Mutex::new(Vec::new()));
    let caller = SqlCaller {
        exchanges: Arc::downgrade(exchanges),
        principal: principal.clone(),
        runtime: Handle::current(),
        interrupted: watch::channel(false).1,
        receipts: Arc::default(),
        nested: false,
        witness: Some(witness.clone()),
    };
    (caller, witness)
}

/// Registers `exchange` in `db`.
pub fn register(db: &mallard_db::Database) -> Result<()> {
    table_function::register(
        &db.connect_raw()?,
        FUNCTION,
        2,
        Arc::new(ExchangeFunction),
        db.scopes.clone(),
    )
}

/// The `exchange` table function.
struct ExchangeFunction;

impl TableSource for ExchangeFunction {
    fn bind(&self, scope: Option<Scope>, call: Call) -> Result<Box<dyn BoundSource>> {
        let (caller, exchanges) = SqlCaller::of(scope, &format!("{FUNCTION}()"))?;
        if caller.nested {
            return Err(Error::invalid_argument(format!(
                "{FUNCTION}() cannot be called inside another {FUNCTION}()'s query; give a \
                 pipeline instead: {FUNCTION}('[{{\"exchanger\": \"a\"}}, {{\"exchanger\": \"b\"}}]', …)"
            )));
        }
        let [descriptor, query] = <[String; 2]>::try_from(call.args).map_err(|_| {
            Error::invalid_argument(format!("{FUNCTION}(EXCHANGE, QUERY) takes two arguments"))
        })?;
        let mut request = ExchangeRequest::parse(descriptor.as_bytes())?;
        let had_params = !call.params.is_empty();
        if had_params {
            let [stage] = request.stages.as_mut_slice() else {
                return Err(Error::invalid_argument(
                    "params := applies to one exchanger; give each stage of a pipeline its \
                     \"params\" in the JSON",
                ));
            };
            stage.params.extend(call.params);
        }
        let connection = exchanges.db.connect_raw()?;
        let policy = exchanges.authz.sql(&caller.principal);
        let nested = SqlCaller {
            nested: true,
            witness: None,
            ..(*caller).clone()
        };
        let scope = exchanges.db.scopes.enter(connection.id(), Arc::new(nested));
        let input_schema = statements::result_schema(&connection, &query, &*policy)
            .map_err(|e| e.context(format!("the query of {FUNCTION}()")))?;
        drop(scope);
        let output_schema = probe(&exchanges, &caller.principal, &request, &input_schema)?.schema;
        let bound = Bound {
            descriptor,
            query,
            had_params,
            request,
            input_schema,
            output_schema,
        };
        if let Some(witness) = &caller.witness {
            witness
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(bound.clone());
        }
        Ok(Box::new(BoundExchange {
            caller: (*caller).clone(),
            bound,
            connection,
        }))
    }
}

/// What opening an exchange's stages once told.
pub(crate) struct Probed {
    /// The last stage's output schema.
    pub schema: SchemaRef,
    /// Whether every stage's session said it is stateless.
    pub stateless: bool,
    /// The versions the stages resolved to, first to last.
    pub versions: Vec<Arc<crate::catalog::Version>>,
}

/// Opens every stage once, as the exchange would, to learn the output schema;
/// closes them again. Not counted as calls.
pub(crate) fn probe(
    exchanges: &Exchanges,
    principal: &Principal,
    request: &ExchangeRequest,
    input: &SchemaRef,
) -> Result<Probed> {
    // The probe opens guests: it holds one of the caller's exchange slots while
    // they live, like any exchange, so binding cannot open guests beyond the cap.
    let _slot = exchanges.slots.acquire(&principal.user)?;
    let engine = exchanges.catalog.engine();
    let pool = exchanges.guest_memory.of(&principal.user);
    let mut schema = input.clone();
    let mut header = bytes::Bytes::from(MessageEncoder::new(schema.clone()).schema_header());
    let (mut stateless, mut versions) = (true, Vec::new());
    for stage in &request.stages {
        let version =
            exchanges
                .catalog
                .peek(principal, &stage.exchanger, stage.sandbox == Sandbox::On)?;
        let session = version.open_session(
            engine,
            (&header, schema.clone()),
            &stage.params,
            Arc::new(AtomicBool::new(false)),
            pool.clone(),
        )?;
        stateless &= session.stateless();
        header = session.schema_message().data_header;
        schema = super::validated_schema_message(header.clone())?.0;
        versions.push(version);
    }
    Ok(Probed {
        schema,
        stateless,
        versions,
    })
}

/// What one call of `exchange` bound: its arguments, the exchange they ask for
/// and the schemas it promised DuckDB.
#[derive(Clone)]
pub(crate) struct Bound {
    /// The first argument, as given.
    pub descriptor: String,
    /// The inner query, as given.
    pub query: String,
    /// Whether `params := …` was given.
    pub had_params: bool,
    /// The exchange asked for (with the params merged in).
    pub request: ExchangeRequest,
    /// The inner query's result schema.
    pub input_schema: SchemaRef,
    /// The exchange's output schema.
    pub output_schema: SchemaRef,
}

impl Bound {
    /// Starts the bound exchange for `caller`: runs the inner query as them (on
    /// a connection where `exchange` cannot be called again) and streams it
    /// through the stages.
    pub(crate) async fn start(
        &self,
        caller: &SqlCaller,
        exchanges: &Arc<Exchanges>,
    ) -> Result<pipeline::Exchange> {
        let inner = SqlCaller {
            nested: true,
            witness: None,
            ..caller.clone()
        };
        let policy = exchanges.authz.sql(&caller.principal);
        let scope: ScopeFactory = Box::new(move |_| Arc::new(inner) as Scope);
        let source = query::run_with_budget(
            exchanges.db.clone(),
            self.query.clone().into(),
            policy,
            None,
            Some(scope),
        )
        .await?;
        if !table_function::same_columns(&source.schema, &self.input_schema) {
            return Err(Error::aborted(format!(
                "the query of {FUNCTION}() changed its schema between planning and running"
            )));
        }
        let input = Input::from_batches(source.schema.clone(), source.into_stream()).await?;
        let exchange = pipeline::start(exchanges, &caller.principal, &self.request, input).await?;
        if !table_function::same_columns(&exchange.schema, &self.output_schema) {
            return Err(Error::aborted(format!(
                "the exchange declared a different output schema when it ran than when the \
                 query was planned: {:?} then, {:?} now",
                self.output_schema, exchange.schema
            )));
        }
        Ok(exchange)
    }
}

/// A bound call, as DuckDB holds it.
struct BoundExchange {
    caller: SqlCaller,
    bound: Bound,
    connection: RawConnection,
}

impl BoundSource for BoundExchange {
    fn schema(&self) -> SchemaRef {
        self.bound.output_schema.clone()
    }

    fn connection(&self) -> &RawConnection {
        &self.connection
    }

    fn scan_connection(&self) -> Result<RawConnection> {
        self.caller.exchanges()?.db.connect_raw()
    }

    fn start(&self) -> Result<Box<dyn table_function::Batches>> {
        let caller = &self.caller;
        let exchanges = caller.exchanges()?;
        let exchange = caller
            .runtime
            .block_on(self.bound.start(caller, &exchanges))?;
        // SAFETY: every message of an exchange's output was encoded by this
        // server: by a native built-in, or from a guest's output after the host
        // decoded it with full validation (0.1: `wasm::WasmSession::validate`;
        // 0.2: `mallard_assemble::Assembler`, whose pass-through columns come from the
        // host's validated decode of the input). Validating it a second time
        // only costs the scan.
        let decoder = unsafe { MessageDecoder::new_unvalidated(exchange.schema) };
        Ok(Box::new(RunningExchange {
            output: exchange.output,
            decoder,
            runtime: caller.runtime.clone(),
            interrupted: caller.interrupted.clone(),
            receipts: caller.receipts.clone(),
        }))
    }
}

/// The running exchange, as the scan reads it.
struct RunningExchange {
    output: BoxStream<'static, std::result::Result<Output, tonic::Status>>,
    decoder: MessageDecoder,
    runtime: Handle,
    interrupted: watch::Receiver<bool>,
    receipts: Arc<Mutex<Vec<Receipt>>>,
}

impl table_function::Batches for RunningExchange {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            let (output, interrupted) = (&mut self.output, &mut self.interrupted);
            let next = self.runtime.block_on(async {
                tokio::select! {
                    item = output.next() => Some(item),
                    _ = interrupted.wait_for(|fired| *fired) => None,
                }
            });
            let item = next.ok_or_else(|| Error::cancelled("the query was interrupted"))?;
            match item {
                None => {
                    return Err(Error::internal("the exchange ended without finishing"));
                }
                Some(Err(status)) => return Err(status.into()),
                Some(Ok(Output::Done(receipt))) => {
                    self.receipts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(receipt);
                    return Ok(None);
                }
                Some(Ok(Output::Data(mut data))) => {
                    // A batch this server validated goes to DuckDB as it is;
                    // only messages without one (dictionaries, output encoded
                    // with dictionaries) are joined and decoded.
                    if let Some(batch) = data.batch.take() {
                        return Ok(Some(batch));
                    }
                    let data = data.into_flight_data();
                    let batch = self
                        .decoder
                        .decode(&data.data_header, Buffer::from(data.data_body))
                        .map_err(|e| Error::internal(format!("exchange output: {e}")))?;
                    if let Some(batch) = batch {
                        return Ok(Some(batch));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! `exchange()` in SQL on a real DuckDB, with the native built-ins.

    use super::*;
    use crate::testing::exchanges;
    use mallard_access::Role;
    use mallard_core::ErrorKind;

    fn reader() -> Principal {
        Principal {
            user: "rita".into(),
            role: Role::Reader,
        }
    }

    /// Runs `sql` as `caller` (or outside any client's query) to its end.
    async fn run(
        exchanges: &Arc<Exchanges>,
        caller: Option<&Principal>,
        sql: &str,
    ) -> Result<Vec<arrow::array::RecordBatch>> {
        let scope = caller.map(|p| caller_scope(exchanges, p, Arc::default()));
        let policy = exchanges.authz.sql(&reader());
        let stream = query::run_with_budget(
            exchanges.db.clone(),
            sql.to_owned().into(),
            policy,
            None,
            scope,
        )
        .await?;
        stream
            .into_stream()
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    const NATIVE: &str = r#"{"exchanger": "add_processed", "sandbox": "off"}"#;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_readers_query_streams_through_a_native_exchanger() {
        let exchanges = exchanges(4);
        let sql =
            format!("SELECT * FROM exchange('{NATIVE}', 'SELECT range AS x FROM range(5000)')");
        let batches = run(&exchanges, Some(&reader()), &sql).await.unwrap();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 5000);
        assert!(
            batches[0].schema().fields().len() > 1,
            "the exchanger added a column"
        );
        assert_eq!(exchanges.slots.total(), 0, "the slot is given back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exchange_runs_only_for_a_client() {
        let exchanges = exchanges(4);
        let sql = format!("SELECT * FROM exchange('{NATIVE}', 'SELECT 1 AS x')");
        let err = run(&exchanges, None, &sql).await.err().unwrap();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exchange_inside_an_exchange_is_refused_with_the_pipeline_form() {
        let exchanges = exchanges(4);
        let inner = format!("SELECT * FROM exchange(''{NATIVE}'', ''SELECT 1 AS x'')");
        let sql = format!("SELECT * FROM exchange('{NATIVE}', '{inner}')");
        let err = run(&exchanges, Some(&reader()), &sql).await.err().unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.to_string().contains("pipeline"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn binding_holds_a_slot_so_the_cap_applies_to_sql_too() {
        let exchanges = exchanges(1);
        let held = exchanges.slots.acquire(&reader().user).unwrap();
        let sql = format!("SELECT * FROM exchange('{NATIVE}', 'SELECT 1 AS x')");
        let err = run(&exchanges, Some(&reader()), &sql).await.err().unwrap();
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
        drop(held);
        assert!(run(&exchanges, Some(&reader()), &sql).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_descriptor_or_a_write_in_the_inner_query_is_the_clients_error() {
        let exchanges = exchanges(4);
        let bad = run(
            &exchanges,
            Some(&reader()),
            "SELECT * FROM exchange('{', 'SELECT 1')",
        )
        .await
        .err()
        .unwrap();
        assert_eq!(bad.kind(), ErrorKind::InvalidArgument, "{bad}");
        let write =
            format!("SELECT * FROM exchange('{NATIVE}', 'CREATE TABLE t AS SELECT 1 AS x')");
        let err = run(&exchanges, Some(&reader()), &write)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(
                err.kind(),
                ErrorKind::PermissionDenied | ErrorKind::InvalidArgument
            ),
            "{err}"
        );
        let tables = run(
            &exchanges,
            Some(&reader()),
            "SELECT count(*) AS n FROM duckdb_tables()",
        )
        .await
        .unwrap();
        let n = tables[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>();
        assert_eq!(n.unwrap().value(0), 0, "nothing was created");
    }
}
