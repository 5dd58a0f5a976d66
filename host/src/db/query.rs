//! Streaming a query's result out of DuckDB, batch by batch, as DuckDB produces it.
//!
//! A blocking thread drives DuckDB's streaming result, coalesces its small chunks
//! (2048 rows) into batches of [`TARGET_BATCH_ROWS`] and hands them to the async side
//! through a channel of [`CHANNEL_BATCHES`] slots, so memory stays bounded by a few
//! batches however large the result.

use crate::db::Database;
use crate::error::{Error, Result};
use arrow::array::{RecordBatch, StringArray};
use arrow::compute::BatchCoalescer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use duckdb::InterruptHandle;
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
    interrupt: Arc<InterruptHandle>,
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
    let (ready_tx, ready_rx) = oneshot::channel::<Result<(SchemaRef, Arc<InterruptHandle>)>>();
    let (handle_tx, handle_rx) = oneshot::channel::<Arc<InterruptHandle>>();
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
    tokio::task::spawn_blocking(move || {
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
    handle: oneshot::Sender<Arc<InterruptHandle>>,
    ready: oneshot::Sender<Result<(SchemaRef, Arc<InterruptHandle>)>>,
    tx: mpsc::Sender<Result<RecordBatch>>,
    limit: &Limit,
) {
    let conn = match db.connect() {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let interrupt = conn.interrupt_handle();
    let _ = handle.send(interrupt.clone());
    let mut stmt = match conn.prepare(sql) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(limit.explain(e)));
            return;
        }
    };
    let stream = match stmt.stream_arrow([]) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(limit.explain(e)));
            return;
        }
    };
    let schema = stream.get_schema();
    if schema.fields().is_empty() {
        let status = status_batch();
        let _ = ready.send(Ok((status.schema(), interrupt)));
        let _ = tx.blocking_send(Ok(status));
        return;
    }
    if ready.send(Ok((schema.clone(), interrupt))).is_err() {
        return;
    }
    let mut coalescer = BatchCoalescer::new(schema, TARGET_BATCH_ROWS);
    for chunk in stream {
        let pushed = chunk
            .map_err(Error::from)
            .and_then(|c| Ok(coalescer.push_batch(c)?));
        if let Err(e) = pushed {
            let _ = tx.blocking_send(Err(limit.explain(e)));
            return;
        }
        while let Some(batch) = coalescer.next_completed_batch() {
            if tx.blocking_send(Ok(batch)).is_err() {
                return; // consumer gone
            }
        }
    }
    if let Err(e) = coalescer.finish_buffered_batch() {
        let _ = tx.blocking_send(Err(limit.explain(e)));
        return;
    }
    while let Some(batch) = coalescer.next_completed_batch() {
        if tx.blocking_send(Ok(batch)).is_err() {
            return;
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
