//! Streaming a query's result out of DuckDB, batch by batch, as DuckDB produces it.
//!
//! DuckDB's worker threads build Arrow batches of up to [`TARGET_BATCH_ROWS`] rows
//! (see [`arrow_result`]); a blocking thread hands them to the async side through a
//! channel of [`CHANNEL_BATCHES`] slots, so memory stays bounded by a few batches
//! however large the result.

use crate::db::Database;
use crate::db::arrow_result::{self, Outcome};
use crate::db::errors::classify_message;
use crate::db::raw::Interrupt;
use crate::error::{Error, Result};
use arrow::array::RecordBatchReader;
use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{mpsc, oneshot};

/// Rows per batch sent to clients: large enough to amortise per-message costs,
/// small enough to keep a handful in flight cheaply.
pub const TARGET_BATCH_ROWS: usize = 131_072;
/// Batches buffered between DuckDB and the network (backpressure beyond this).
pub const CHANNEL_BATCHES: usize = 4;

/// A running query: its schema and a bounded stream of batches.
pub struct QueryStream {
    /// The result's schema, known before the first batch.
    pub schema: SchemaRef,
    /// The batches, then end of stream (or one error).
    pub batches: mpsc::Receiver<Result<RecordBatch>>,
    interrupt: Arc<Interrupt>,
    timer: tokio::task::AbortHandle,
}

impl QueryStream {
    /// The batches as a stream that keeps the query alive until it is dropped.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<RecordBatch>> + Send + 'static {
        futures::stream::unfold(self, |mut s| async move {
            let item = s.batches.recv().await?;
            Some((item, s))
        })
    }
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

/// Runs `sql` (the last of possibly several statements) and streams its result.
pub async fn run(db: Arc<Database>, sql: String) -> Result<QueryStream> {
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
        let limit = Limit { timeout, timed_out };
        produce(&db, &sql, handle_tx, ready_tx, tx, &limit)
    });
    let (schema, interrupt) = ready_rx
        .await
        .map_err(|_| Error::Internal("query thread ended before answering".into()))??;
    Ok(QueryStream {
        schema,
        batches: rx,
        interrupt,
        timer,
    })
}

/// The query timeout and whether it fired, to tell a timeout from other interrupts.
struct Limit {
    timeout: std::time::Duration,
    timed_out: Arc<AtomicBool>,
}

impl Limit {
    fn explain(&self, e: impl Into<Error>) -> Error {
        let e = e.into();
        if self.timed_out.load(Ordering::SeqCst) {
            Error::DeadlineExceeded(format!(
                "query exceeded the server's query timeout of {:?}",
                self.timeout
            ))
        } else {
            e
        }
    }
}

fn produce(
    db: &Database,
    sql: &str,
    handle: oneshot::Sender<Arc<Interrupt>>,
    ready: oneshot::Sender<Result<(SchemaRef, Arc<Interrupt>)>>,
    tx: mpsc::Sender<Result<RecordBatch>>,
    limit: &Limit,
) {
    let conn = match db.connect_raw() {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let interrupt = conn.interrupt_handle();
    let _ = handle.send(interrupt.clone());
    let reader = match arrow_result::run(&conn, sql, TARGET_BATCH_ROWS) {
        Ok(Outcome::Rows(reader)) => reader,
        Ok(Outcome::Done) => {
            let status = status_batch();
            let _ = ready.send(Ok((status.schema(), interrupt)));
            let _ = tx.blocking_send(Ok(status));
            return;
        }
        Err(e) => {
            let _ = ready.send(Err(limit.explain(e)));
            return;
        }
    };
    if ready.send(Ok((reader.schema(), interrupt))).is_err() {
        return;
    }
    for batch in reader {
        let batch = batch.map_err(|e| limit.explain(classify_message(e.to_string())));
        let failed = batch.is_err();
        if tx.blocking_send(batch).is_err() || failed {
            return; // consumer gone, or the error was the last message
        }
    }
}

/// Runs statements without a result set (DDL/DML); returns DuckDB's changed-row count.
pub async fn execute(db: Arc<Database>, sql: String) -> Result<usize> {
    tokio::task::spawn_blocking(move || -> Result<usize> {
        let conn = db.connect()?;
        let mut stmt = conn.prepare(&sql)?;
        Ok(stmt.execute([])?)
    })
    .await
    .map_err(|e| Error::Internal(format!("sql thread failed: {e}")))?
}
