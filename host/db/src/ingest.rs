//! Streaming ingest of Arrow batches into a DuckDB table, all or nothing.
//!
//! A blocking thread opens a transaction, creates the table from the stream's schema
//! if it is missing, and inserts through DuckDB's own (parallel) Arrow scan of a
//! stream that yields each batch as it arrives through a bounded channel, the same
//! way for in-memory and file databases.
//! Only an explicit [`Ingest::commit`] commits; a dropped sender (client gone,
//! stream failed) rolls everything back, the table creation included.
//!
//! A put's raw IPC messages are decoded on that thread too (with the bounds and
//! full validation of [`MessageDecoder`]), so the async runtime only moves bytes.

use crate::Database;
use crate::session::On;
use crate::types::create_table_sql;
use arrow::array::{RecordBatch, RecordBatchReader};
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ffi_stream::FFI_ArrowArrayStream;
use bytes::Bytes;
use mallard_core::{Error, Result};
use mallard_exchanger::ipc::MessageDecoder;
use mallard_protocol::TableName;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Batches buffered between the network and DuckDB.
pub const CHANNEL_BATCHES: usize = 4;

/// DuckDB's insert costs far more per row on small Arrow batches, so batches of
/// fewer rows are joined until they reach this many...
pub const COALESCE_ROWS: usize = 122_880;
/// ...or hold this many bytes, whichever comes first (wide rows are not held back).
pub const COALESCE_BYTES: usize = 16 << 20;

enum Command {
    /// A decoded batch (in-process callers).
    Batch(RecordBatch),
    /// One IPC record-batch or dictionary message, still to decode.
    Message {
        header: Bytes,
        body: Bytes,
    },
    Commit,
}

/// Decodes a put's messages on the ingest thread, counting them for errors.
struct Decoding {
    decoder: MessageDecoder,
    messages: u64,
}

impl Decoding {
    fn new(schema: &SchemaRef) -> Self {
        Self {
            decoder: MessageDecoder::new(schema.clone()),
            messages: 0,
        }
    }

    /// The batch in `header`/`body`, `None` for a dictionary message.
    fn decode(&mut self, header: &Bytes, body: &Bytes) -> Result<Option<RecordBatch>> {
        self.messages += 1;
        self.decoder
            .decode(header, Buffer::from(body.clone()))
            .map_err(|e| {
                Error::invalid_argument(format!("do_put input at message {}: {e}", self.messages))
            })
    }
}

/// What an ingest does with the target table before appending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Creates the table if it is missing, else appends (`do_put`).
    #[default]
    CreateOrAppend,
    /// Creates the table; AlreadyExists if it is there.
    Create,
    /// Appends to the table; NotFound if it is missing.
    Append,
    /// Drops the table if it is there and creates it anew (one transaction: a
    /// failed replace leaves the old table as it was).
    Replace,
}

impl Mode {
    /// The statements that prepare `table` for rows of `schema`.
    fn prepare_sql(self, table: &TableName, schema: &SchemaRef) -> Result<Vec<String>> {
        let create = create_table_sql(&table.quoted(), schema)?;
        let create_strict = create.replacen("CREATE TABLE IF NOT EXISTS", "CREATE TABLE", 1);
        Ok(match self {
            Self::CreateOrAppend => vec![create],
            Self::Create => vec![create_strict],
            Self::Append => vec![format!("SELECT * FROM {} LIMIT 0", table.quoted())],
            Self::Replace => vec![
                format!("DROP TABLE IF EXISTS {}", table.quoted()),
                create_strict,
            ],
        })
    }
}

/// An open ingest transaction.
pub struct Ingest {
    tx: mpsc::Sender<Command>,
    done: oneshot::Receiver<Result<u64>>,
    schema: SchemaRef,
    /// For a two-phase ingest: the rows once everything is inserted, before COMMIT...
    prepared: Option<oneshot::Receiver<u64>>,
    /// ...and the decision that then commits (`true`) or rolls back.
    decision: Option<oneshot::Sender<bool>>,
}

/// The ingest thread's side of a two-phase ingest.
struct TwoPhase {
    prepared: oneshot::Sender<u64>,
    decision: oneshot::Receiver<bool>,
}

/// Why a prepared ingest that was never told to commit wrote nothing.
const NOT_COMMITTED: &str = "the two-phase put was prepared but not committed; nothing was written";

impl Ingest {
    /// Starts ingesting into `table` batches that follow `schema`.
    pub fn start(db: Arc<Database>, table: TableName, schema: SchemaRef) -> Self {
        Self::start_with(db, table, schema, Mode::CreateOrAppend, On::Fresh)
    }

    /// Starts ingesting into `table`, preparing it as `mode` says, on `on`: its
    /// own transaction, or inside a client's open one.
    pub fn start_with(
        db: Arc<Database>,
        table: TableName,
        schema: SchemaRef,
        mode: Mode,
        on: On,
    ) -> Self {
        Self::spawn(db, table, schema, mode, on, None)
    }

    /// Starts an ingest into `table` (created if missing) that stops before its
    /// COMMIT: [`Ingest::prepare`] inserts everything and reports the rows,
    /// [`Ingest::commit_prepared`] commits; dropped before that, it rolls back.
    pub fn start_two_phase(db: Arc<Database>, table: TableName, schema: SchemaRef) -> Self {
        let (prepared_tx, prepared) = oneshot::channel();
        let (decision, decision_rx) = oneshot::channel();
        let two_phase = TwoPhase {
            prepared: prepared_tx,
            decision: decision_rx,
        };
        let mut ingest = Self::spawn(
            db,
            table,
            schema,
            Mode::CreateOrAppend,
            On::Fresh,
            Some(two_phase),
        );
        ingest.prepared = Some(prepared);
        ingest.decision = Some(decision);
        ingest
    }

    fn spawn(
        db: Arc<Database>,
        table: TableName,
        schema: SchemaRef,
        mode: Mode,
        on: On,
        two_phase: Option<TwoPhase>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let (done_tx, done) = oneshot::channel();
        let thread_schema = schema.clone();
        let live = db.live_ingests.enter();
        tokio::task::spawn_blocking(move || {
            let _live = live;
            let outcome = consume(&db, &on, &table, &thread_schema, mode, rx, two_phase);
            let _ = done_tx.send(outcome);
        });
        Self {
            tx,
            done,
            schema,
            prepared: None,
            decision: None,
        }
    }

    /// Ends the input of a two-phase ingest and waits until every row is
    /// inserted (uncommitted); returns the rows.
    pub async fn prepare(&mut self) -> Result<u64> {
        let prepared = self
            .prepared
            .take()
            .ok_or_else(|| Error::internal("prepare on an ingest that is not two-phase"))?;
        self.send(Command::Commit).await?;
        match prepared.await {
            Ok(rows) => Ok(rows),
            Err(_) => Err(self
                .outcome()
                .await
                .err()
                .unwrap_or_else(|| Error::internal("ingest ended without preparing"))),
        }
    }

    /// Commits a prepared ingest; returns the rows.
    pub async fn commit_prepared(mut self) -> Result<u64> {
        let decision = self
            .decision
            .take()
            .ok_or_else(|| Error::internal("commit_prepared on an ingest that is not two-phase"))?;
        let _ = decision.send(true);
        self.outcome().await
    }

    /// Queues one batch; fails with the ingest's own error if it already failed.
    pub async fn append(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.schema_ref().fields() != self.schema.fields() {
            return Err(Error::invalid_argument(format!(
                "schema changed mid-stream: expected {}, got {}",
                self.schema,
                batch.schema_ref()
            )));
        }
        self.send(Command::Batch(batch)).await
    }

    /// Queues one IPC message of the stream (decoded on the ingest thread).
    pub async fn append_message(&mut self, header: Bytes, body: Bytes) -> Result<()> {
        self.send(Command::Message { header, body }).await
    }

    async fn send(&mut self, command: Command) -> Result<()> {
        if self.tx.send(command).await.is_err() {
            return Err(self
                .outcome()
                .await
                .err()
                .unwrap_or_else(|| Error::internal("ingest ended before the stream did")));
        }
        Ok(())
    }

    /// Commits and returns the number of rows appended.
    pub async fn commit(self) -> Result<u64> {
        let _ = self.tx.send(Command::Commit).await;
        drop(self.tx);
        self.done
            .await
            .map_err(|_| Error::internal("ingest thread ended without an answer"))?
    }

    async fn outcome(&mut self) -> Result<u64> {
        (&mut self.done)
            .await
            .map_err(|_| Error::internal("ingest thread ended without an answer"))?
    }
}

/// Joins consecutive small batches into ones of at least [`COALESCE_ROWS`] rows or
/// [`COALESCE_BYTES`] bytes; a batch that is already that large passes untouched
/// (the small ones before it go first, joined), so a client whose batches are
/// large but not all alike (a Parquet file's row groups cut at the batch size)
/// never has its data copied.
#[derive(Default)]
struct Coalescer {
    pending: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
}

/// The bytes of a batch's own slices, not of the message they point into.
fn slice_bytes(batch: &RecordBatch) -> Result<usize, ArrowError> {
    let mut bytes = 0;
    for column in batch.columns() {
        bytes += column.to_data().get_slice_memory_size()?;
    }
    Ok(bytes)
}

impl Coalescer {
    /// Takes one batch; returns what is ready to go, in order: nothing, a
    /// joined batch, or the pending ones joined and then `batch` as it came.
    fn push(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>, ArrowError> {
        let bytes = slice_bytes(&batch)?;
        if batch.num_rows() >= COALESCE_ROWS || bytes >= COALESCE_BYTES {
            let mut ready: Vec<RecordBatch> = self.flush()?.into_iter().collect();
            ready.push(batch);
            return Ok(ready);
        }
        self.rows += batch.num_rows();
        self.bytes += bytes;
        self.pending.push(batch);
        if self.rows >= COALESCE_ROWS || self.bytes >= COALESCE_BYTES {
            return Ok(self.flush()?.into_iter().collect());
        }
        Ok(Vec::new())
    }

    /// Whatever is pending, joined.
    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        let pending = std::mem::take(&mut self.pending);
        (self.rows, self.bytes) = (0, 0);
        match pending.len() {
            0 => Ok(None),
            1 => Ok(pending.into_iter().next()),
            _ => arrow::compute::concat_batches(pending[0].schema_ref(), &pending).map(Some),
        }
    }
}

/// Feeds the batches a put receives to DuckDB's Arrow scan, ending at `Commit`
/// (clean end of stream) or with an error if the sender goes away first.
struct ChannelReader {
    schema: SchemaRef,
    rx: mpsc::Receiver<Command>,
    decoding: Decoding,
    coalescer: Coalescer,
    /// Batches the coalescer released that DuckDB has not taken yet.
    ready: VecDeque<RecordBatch>,
    /// The decoding error, kept so the put reports it rather than DuckDB's wrapping.
    failure: Arc<Mutex<Option<Error>>>,
    committed: Arc<AtomicBool>,
    done: bool,
}

impl Iterator for ChannelReader {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Some(Ok(batch));
            }
            if self.done {
                return None;
            }
            let batch = match self.rx.blocking_recv() {
                Some(Command::Batch(batch)) => batch,
                Some(Command::Message { header, body }) => {
                    match self.decoding.decode(&header, &body) {
                        Ok(Some(batch)) => batch,
                        Ok(None) => continue, // a dictionary, remembered
                        Err(e) => {
                            self.done = true;
                            *self.failure.lock().expect("failure lock") = Some(e);
                            return Some(Err(ArrowError::ExternalError(
                                "a put message could not be decoded".into(),
                            )));
                        }
                    }
                }
                Some(Command::Commit) => {
                    self.committed.store(true, Ordering::SeqCst);
                    self.done = true;
                    return self.coalescer.flush().transpose();
                }
                None => {
                    self.done = true;
                    return Some(Err(ArrowError::ExternalError(CANCELLED.into())));
                }
            };
            match self.coalescer.push(batch) {
                Ok(ready) => self.ready.extend(ready),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl RecordBatchReader for ChannelReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

const CANCELLED: &str = "put stream ended without completing; nothing was written";

/// Runs the ingest on `on`: its own transaction, or inside a client's open one,
/// through DuckDB's Arrow scan of the put's channel (in memory or into a file).
fn consume(
    db: &Database,
    on: &On,
    table: &TableName,
    schema: &SchemaRef,
    mode: Mode,
    rx: mpsc::Receiver<Command>,
    two_phase: Option<TwoPhase>,
) -> Result<u64> {
    let prepare = mode.prepare_sql(table, schema)?;
    let con = on.hold(db)?;
    // Inside a client's transaction the ingest is part of it; on any failure the
    // whole transaction is rolled back (no half-written ingest can be committed).
    let own_transaction = matches!(on, On::Fresh);
    let committed = Arc::new(AtomicBool::new(false));
    let failure = Arc::new(Mutex::new(None));
    let reader = ChannelReader {
        schema: schema.clone(),
        rx,
        decoding: Decoding::new(schema),
        coalescer: Coalescer::default(),
        ready: VecDeque::new(),
        failure: failure.clone(),
        committed: committed.clone(),
        done: false,
    };
    let mut stream = FFI_ArrowArrayStream::new(Box::new(reader));
    if own_transaction {
        con.execute("BEGIN TRANSACTION")?;
    }
    let result = (|| -> Result<u64> {
        for sql in &prepare {
            con.execute(sql)?;
        }
        let inserted = con
            .insert_arrow_stream(table.as_str(), &mut stream)
            .map_err(|e| e.context(format!("appending to {table:?}")))?;
        if !committed.load(Ordering::SeqCst) {
            return Err(Error::cancelled(CANCELLED));
        }
        Ok(inserted)
    })();
    let outcome = result.and_then(|rows| {
        if let Some(TwoPhase { prepared, decision }) = two_phase {
            let _ = prepared.send(rows);
            if decision.blocking_recv() != Ok(true) {
                return Err(Error::aborted(NOT_COMMITTED));
            }
        }
        if own_transaction {
            con.execute("COMMIT")?;
        }
        Ok(rows)
    });
    if outcome.is_err() {
        let _ = con.execute("ROLLBACK");
        if !own_transaction {
            // Until the client's handle is gone, nothing on this connection may
            // write or run outside a transaction.
            let _ = con.execute("BEGIN TRANSACTION READ ONLY");
        }
    }
    drop(stream);
    let decoding_failure = failure.lock().expect("failure lock").take();
    outcome.map_err(|e| decoding_failure.unwrap_or(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    fn rows(
        coalescer: &mut Coalescer,
        batches: impl IntoIterator<Item = RecordBatch>,
    ) -> Vec<usize> {
        batches
            .into_iter()
            .flat_map(|b| coalescer.push(b).unwrap())
            .map(|b| b.num_rows())
            .collect()
    }

    #[test]
    fn small_batches_are_joined_up_to_the_row_limit_and_flushed_at_the_end() {
        let mut coalescer = Coalescer::default();
        let step = 16_384;
        let joined = rows(
            &mut coalescer,
            (0..20).map(|i| mallard_flights::batch(i * step as u64, step)),
        );
        // 8 × 16,384 = 131,072 is the first count at or above COALESCE_ROWS.
        assert_eq!(joined, vec![8 * step, 8 * step]);
        let rest = coalescer.flush().unwrap().unwrap();
        assert_eq!(rest.num_rows(), 4 * step);
        // Order and values survive the join.
        let ids = rest.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.value(0), 16 * step as i64);
        assert_eq!(ids.value(rest.num_rows() - 1), 20 * step as i64 - 1);
        assert!(coalescer.flush().unwrap().is_none());
    }

    #[test]
    fn a_batch_at_the_limit_passes_untouched() {
        let mut coalescer = Coalescer::default();
        let big = mallard_flights::batch(0, COALESCE_ROWS);
        let out = coalescer.push(big.clone()).unwrap();
        assert_eq!(out.len(), 1);
        // The same buffers, not a copy.
        assert_eq!(
            out[0].column(0).to_data().buffers()[0].as_ptr(),
            big.column(0).to_data().buffers()[0].as_ptr()
        );
        let below = coalescer
            .push(mallard_flights::batch(0, COALESCE_ROWS - 1))
            .unwrap();
        assert!(below.is_empty(), "one row short of the limit is held");
    }

    #[test]
    fn a_large_batch_after_small_ones_is_not_joined_to_them() {
        // A Parquet file read at the batch size: each row group ends in a short batch.
        let mut coalescer = Coalescer::default();
        let short = mallard_flights::batch(0, 16_960);
        let big = mallard_flights::batch(16_960, COALESCE_ROWS);
        assert!(coalescer.push(short).unwrap().is_empty());
        let out = coalescer.push(big.clone()).unwrap();
        let counts: Vec<usize> = out.iter().map(|b| b.num_rows()).collect();
        assert_eq!(
            counts,
            vec![16_960, COALESCE_ROWS],
            "in order, the short one first"
        );
        assert_eq!(
            out[1].column(0).to_data().buffers()[0].as_ptr(),
            big.column(0).to_data().buffers()[0].as_ptr(),
            "the large batch is not copied"
        );
        assert!(coalescer.flush().unwrap().is_none());
    }

    #[test]
    fn wide_rows_are_released_at_the_byte_limit() {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
        // 4 rows of 1 MiB each: 4 MiB per batch, far below the row limit.
        let wide = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(vec!["x".repeat(1 << 20); 4]))],
        )
        .unwrap();
        let mut coalescer = Coalescer::default();
        let joined = rows(&mut coalescer, std::iter::repeat_n(wide, 9));
        // 16 MiB of values are reached at the fourth batch, again at the eighth.
        assert_eq!(joined, vec![16, 16]);
        assert_eq!(coalescer.flush().unwrap().unwrap().num_rows(), 4);
    }
}
