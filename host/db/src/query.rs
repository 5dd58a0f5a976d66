//! Streaming a query's result out of DuckDB, batch by batch, as DuckDB produces it.
//!
//! DuckDB's worker threads build Arrow batches of up to [`TARGET_BATCH_ROWS`] rows
//! (see [`arrow_result`]); a blocking thread hands them to the async side through a
//! channel of [`CHANNEL_BATCHES`] slots, so memory stays bounded by a few batches
//! however large the result.

use crate::Database;
use crate::arrow_result::{self, Outcome};
use crate::params::Params;
use crate::raw::Interrupt;
use crate::session::{InTransaction, On};
use crate::statements::{self, StatementPolicy};
use arrow::array::RecordBatchReader;
use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::StreamExt;
use mallard_core::duckdb_errors::classify_message;
use mallard_core::{Error, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Rows per batch sent to clients: large enough to amortise per-message costs,
/// small enough to keep a handful in flight cheaply.
pub const TARGET_BATCH_ROWS: usize = 131_072;
/// Batches buffered between DuckDB and the network (backpressure beyond this).
pub const CHANNEL_BATCHES: usize = 4;

/// Bytes of query output one user may have queued at once, all their queries
/// together; a batch larger than the whole budget takes all of it.
#[derive(Clone)]
pub struct OutputBudget {
    /// One permit per byte.
    pub permits: Arc<Semaphore>,
    /// The budget's size (at most `u32::MAX`).
    pub bytes: usize,
}

/// What the producing thread sends: batches, then an explicit end or one error.
/// A channel that closes without either means the producer died (a panic): the
/// consumer reports that as an error, never as a clean end of stream.
pub enum Produced {
    /// One batch of the result, with its share of the caller's output budget
    /// (given back once the batch leaves the queue).
    Batch(RecordBatch, Option<OwnedSemaphorePermit>),
    /// The result is complete.
    End,
    /// The query failed; nothing follows.
    Failed(Error),
}

/// A running query: its schema and a bounded stream of batches.
pub struct QueryStream {
    /// The result's schema, known before the first batch.
    pub schema: SchemaRef,
    batches: mpsc::Receiver<Produced>,
    interrupt: Arc<Interrupt>,
    timer: tokio::task::AbortHandle,
}

impl QueryStream {
    /// Interrupts the query (a client's cancel request).
    pub fn interrupt_handle(&self) -> Arc<Interrupt> {
        self.interrupt.clone()
    }

    /// The batches as a stream that keeps the query alive until it is dropped;
    /// it ends cleanly only after the producer said the result is complete.
    pub fn into_stream(
        mut self,
    ) -> impl futures::Stream<Item = Result<RecordBatch>> + Send + 'static {
        let (_, closed) = mpsc::channel(1);
        let batches = std::mem::replace(&mut self.batches, closed);
        let keep_alive = self;
        ended_explicitly(batches).map(move |item| {
            let _query = &keep_alive;
            item
        })
    }
}

/// The items of a producer's channel as a stream that ends cleanly only at
/// [`Produced::End`]; a channel closed without it yields one Internal error.
pub fn ended_explicitly(
    batches: mpsc::Receiver<Produced>,
) -> impl futures::Stream<Item = Result<RecordBatch>> + Send + 'static {
    futures::stream::unfold(Some(batches), |state| async move {
        let mut batches = state?;
        match batches.recv().await {
            Some(Produced::Batch(batch, _budget)) => Some((Ok(batch), Some(batches))),
            Some(Produced::End) => None,
            Some(Produced::Failed(e)) => Some((Err(e), None)),
            None => Some((
                Err(Error::internal(
                    "the query's producer ended without finishing the result",
                )),
                None,
            )),
        }
    })
}

impl Drop for QueryStream {
    fn drop(&mut self) {
        // If the consumer leaves early, stop DuckDB instead of finishing the query.
        self.interrupt.interrupt();
        self.timer.abort();
    }
}

/// The one-row answer to a statement that has no result set.
fn status_batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "status",
        DataType::Utf8,
        false,
    )]));
    RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["OK"]))])
        .expect("static status batch is valid")
}

/// Builds the scope a query's connection serves ([`super::scopes`]) from the
/// watch that turns true when the query is interrupted.
pub type ScopeFactory =
    Box<dyn FnOnce(tokio::sync::watch::Receiver<bool>) -> super::scopes::Scope + Send>;

/// What to run: SQL, the values of its parameters, and where.
#[derive(Default)]
pub struct Query {
    /// One or more statements; the last one's result is streamed.
    pub sql: String,
    /// Values for the parameters of a one-statement request.
    pub params: Params,
    /// The connection it runs on.
    pub on: On,
}

impl From<String> for Query {
    fn from(sql: String) -> Self {
        Self {
            sql,
            ..Self::default()
        }
    }
}

/// Runs `sql` (the last of possibly several statements) under `policy` and
/// streams its result.
pub async fn run(
    db: Arc<Database>,
    sql: String,
    policy: Arc<dyn StatementPolicy>,
) -> Result<QueryStream> {
    run_with_budget(db, sql.into(), policy, None, None).await
}

/// [`run`], each queued batch first taking its bytes from `budget` (one per
/// user: so one user's unread streams can hold at most that much queued output,
/// and wait on it, while other users' queries are not affected), its connection
/// serving `scope` while it runs.
pub async fn run_with_budget(
    db: Arc<Database>,
    query: Query,
    policy: Arc<dyn StatementPolicy>,
    budget: Option<OutputBudget>,
    scope: Option<ScopeFactory>,
) -> Result<QueryStream> {
    let runtime = tokio::runtime::Handle::current();
    let (ready_tx, ready_rx) = oneshot::channel::<Result<(SchemaRef, Arc<Interrupt>)>>();
    let (handle_tx, handle_rx) = oneshot::channel::<Arc<Interrupt>>();
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let timeout = db.options().query_timeout;
    let timed_out = Arc::new(AtomicBool::new(false));
    let flag = timed_out.clone();
    // The timeout covers everything from connecting on, including the time DuckDB
    // needs before the first row (a long aggregation, say).
    let timer = tokio::spawn(async move {
        if let Ok(handle) = handle_rx.await {
            tokio::time::sleep(timeout).await;
            flag.store(true, Ordering::SeqCst);
            handle.interrupt();
        }
    })
    .abort_handle();
    let live = db.live_queries.enter();
    tokio::task::spawn_blocking(move || {
        let _live = live;
        let limit = Limit {
            timeout,
            timed_out,
            budget,
            runtime,
        };
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            produce(
                &db, &query, &*policy, scope, handle_tx, ready_tx, tx, &limit,
            )
        }));
        if caught.is_err() {
            tracing::error!("query producer panicked; its stream ends with an error");
        }
    });
    let (schema, interrupt) = ready_rx
        .await
        .map_err(|_| Error::internal("query thread ended before answering"))??;
    Ok(QueryStream {
        schema,
        batches: rx,
        interrupt,
        timer,
    })
}

/// The query timeout and whether it fired, to tell a timeout from other
/// interrupts; the output budget queued batches draw on.
struct Limit {
    timeout: std::time::Duration,
    timed_out: Arc<AtomicBool>,
    budget: Option<OutputBudget>,
    runtime: tokio::runtime::Handle,
}

impl Limit {
    fn explain(&self, e: impl Into<Error>) -> Error {
        let e = e.into();
        if self.timed_out.load(Ordering::SeqCst) {
            Error::deadline_exceeded(format!(
                "query exceeded the server's query timeout of {:?}",
                self.timeout
            ))
        } else {
            e
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn produce(
    db: &Database,
    query: &Query,
    policy: &dyn StatementPolicy,
    scope: Option<ScopeFactory>,
    handle: oneshot::Sender<Arc<Interrupt>>,
    ready: oneshot::Sender<Result<(SchemaRef, Arc<Interrupt>)>>,
    tx: mpsc::Sender<Produced>,
    limit: &Limit,
) {
    let conn = match query.on.hold(db) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let interrupt = conn.interrupt_handle();
    let _ = handle.send(interrupt.clone());
    let scope = scope.map(|scope| db.scopes.enter(conn.id(), scope(interrupt.watch())));
    // The connection (an open transaction's, maybe) is released before the
    // stream's last item is sent: a client that read to the end, or saw the
    // error, may use the transaction again at once.
    let reader =
        match arrow_result::run(&conn, &query.sql, TARGET_BATCH_ROWS, policy, &query.params) {
            Ok(Outcome::Rows(reader)) => reader,
            Ok(Outcome::Done) => {
                drop((scope, conn));
                let status = status_batch();
                let _ = ready.send(Ok((status.schema(), interrupt)));
                if tx.blocking_send(Produced::Batch(status, None)).is_ok() {
                    let _ = tx.blocking_send(Produced::End);
                }
                return;
            }
            Err(e) => {
                drop((scope, conn));
                let _ = ready.send(Err(limit.explain(e)));
                return;
            }
        };
    if ready.send(Ok((reader.schema(), interrupt))).is_err() {
        return;
    }
    let mut reader = reader;
    let last = loop {
        let batch = match reader.next() {
            None => break Produced::End,
            Some(Err(e)) => break Produced::Failed(limit.explain(classify_message(e.to_string()))),
            Some(Ok(batch)) => batch,
        };
        let permit = match &limit.budget {
            None => None,
            Some(budget) => {
                let bytes = batch.get_array_memory_size().clamp(1, budget.bytes);
                let acquire = budget.permits.clone().acquire_many_owned(bytes as u32);
                let granted = limit.runtime.block_on(async {
                    tokio::select! {
                        permit = acquire => permit.ok(),
                        () = tx.closed() => None,
                    }
                });
                match granted {
                    Some(permit) => Some(permit),
                    None => return, // consumer gone
                }
            }
        };
        if tx.blocking_send(Produced::Batch(batch, permit)).is_err() {
            return; // consumer gone
        }
    };
    drop(reader);
    drop((scope, conn));
    let _ = tx.blocking_send(last);
}

/// Runs statements without a result set (DDL/DML) under `policy`; returns
/// DuckDB's changed-row count of the last.
pub async fn execute(
    db: Arc<Database>,
    sql: String,
    policy: Arc<dyn StatementPolicy>,
) -> Result<u64> {
    execute_each(db, sql, Vec::new(), On::Fresh, policy).await
}

/// Runs `sql` once per parameter row of `rows` (once without parameters when
/// there are none) on one connection, under `policy`; returns the changed rows
/// of all runs together. On a fresh connection the runs are one transaction:
/// all of them take effect, or none.
pub async fn execute_each(
    db: Arc<Database>,
    sql: String,
    rows: Vec<Params>,
    on: On,
    policy: Arc<dyn StatementPolicy>,
) -> Result<u64> {
    // The query timeout holds here too, and a caller that goes away (its
    // future dropped) interrupts the statement instead of leaving it running.
    let timeout = db.options().query_timeout;
    let (handle_tx, handle_rx) = oneshot::channel::<Arc<Interrupt>>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let timed_out = Arc::new(AtomicBool::new(false));
    let flag = timed_out.clone();
    tokio::spawn(async move {
        let Ok(handle) = handle_rx.await else { return };
        tokio::select! {
            () = tokio::time::sleep(timeout) => {
                flag.store(true, Ordering::SeqCst);
                handle.interrupt();
            }
            finished = done_rx => if finished.is_err() { handle.interrupt() },
        }
    });
    let outcome = tokio::task::spawn_blocking(move || -> Result<u64> {
        let conn = on.hold(&db)?;
        let _ = handle_tx.send(conn.interrupt_handle());
        if rows.is_empty() {
            return arrow_result::execute_all(&conn, &sql, &*policy, &Params::none());
        }
        let own_transaction = matches!(on, On::Fresh) && rows.len() > 1;
        let policy: Arc<dyn StatementPolicy> = if own_transaction {
            conn.execute(if policy.read_only() {
                "BEGIN TRANSACTION READ ONLY"
            } else {
                "BEGIN TRANSACTION"
            })?;
            Arc::new(InTransaction(policy))
        } else {
            policy
        };
        let mut changed = 0u64;
        for params in &rows {
            match arrow_result::execute_all(&conn, &sql, &*policy, params) {
                Ok(n) => changed += n,
                Err(e) => {
                    if own_transaction {
                        let _ = conn.execute("ROLLBACK");
                    }
                    return Err(e);
                }
            }
        }
        if own_transaction {
            conn.execute("COMMIT")?;
        }
        Ok(changed)
    })
    .await
    .map_err(|e| Error::internal(format!("sql thread failed: {e}")))?;
    let _ = done_tx.send(());
    outcome.map_err(|e| {
        if timed_out.load(Ordering::SeqCst) {
            Error::deadline_exceeded(format!(
                "the statement exceeded the server's query timeout of {timeout:?}"
            ))
        } else {
            e
        }
    })
}

/// The result schema of the single statement `sql` under `policy`, without
/// running it, its connection serving `scope`.
pub async fn schema(
    db: Arc<Database>,
    sql: String,
    policy: Arc<dyn StatementPolicy>,
    scope: Option<ScopeFactory>,
) -> Result<SchemaRef> {
    schema_on(db, sql, policy, scope, On::Fresh).await
}

/// [`schema`], looked up on `on` (a transaction sees its own uncommitted tables).
pub async fn schema_on(
    db: Arc<Database>,
    sql: String,
    policy: Arc<dyn StatementPolicy>,
    scope: Option<ScopeFactory>,
    on: On,
) -> Result<SchemaRef> {
    tokio::task::spawn_blocking(move || -> Result<SchemaRef> {
        let conn = on.hold(&db)?;
        let _scope = scope.map(|scope| {
            let interrupt = conn.interrupt_handle();
            db.scopes.enter(conn.id(), scope(interrupt.watch()))
        });
        statements::result_schema(&conn, &sql, &*policy)
    })
    .await
    .map_err(|e| Error::internal(format!("schema thread failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_producer_that_dies_ends_the_stream_with_an_error() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Produced::Batch(status_batch(), None))
            .await
            .unwrap();
        drop(tx); // as a panic unwinding the producer would
        let items: Vec<_> = ended_explicitly(rx).collect().await;
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        let err = items[1].as_ref().unwrap_err();
        assert_eq!(err.kind(), mallard_core::ErrorKind::Internal, "{err}");
    }

    #[tokio::test]
    async fn only_an_explicit_end_is_a_clean_end() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Produced::Batch(status_batch(), None))
            .await
            .unwrap();
        tx.send(Produced::End).await.unwrap();
        drop(tx);
        let items: Vec<_> = ended_explicitly(rx).collect().await;
        assert_eq!(items.len(), 1);
        assert!(items[0].is_ok());
    }
}
