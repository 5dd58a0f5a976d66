//! Streaming ingest of Arrow batches into a DuckDB table, all or nothing.
//!
//! A blocking thread opens a transaction, creates the table from the stream's schema
//! if it is missing, and appends each batch as it arrives through a bounded channel.
//! Only an explicit [`Ingest::commit`] commits; a dropped sender (client gone,
//! stream failed) rolls everything back, the table creation included.

use crate::db::Database;
use crate::db::identifier::TableName;
use crate::db::types::create_table_sql;
use crate::error::{Error, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Batches buffered between the network and DuckDB.
pub const CHANNEL_BATCHES: usize = 4;

enum Command {
    Append(RecordBatch),
    Commit,
}

/// An open ingest transaction.
pub struct Ingest {
    tx: mpsc::Sender<Command>,
    done: oneshot::Receiver<Result<u64>>,
    schema: SchemaRef,
}

impl Ingest {
    /// Starts ingesting into `table` batches that follow `schema`.
    pub fn start(db: Arc<Database>, table: TableName, schema: SchemaRef) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let (done_tx, done) = oneshot::channel();
        let thread_schema = schema.clone();
        tokio::task::spawn_blocking(move || {
            let _ = done_tx.send(consume(&db, &table, &thread_schema, rx));
        });
        Self { tx, done, schema }
    }

    /// Queues one batch; fails with the ingest's own error if it already failed.
    pub async fn append(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.schema_ref().fields() != self.schema.fields() {
            return Err(Error::InvalidArgument(format!(
                "schema changed mid-stream: expected {}, got {}",
                self.schema,
                batch.schema_ref()
            )));
        }
        if self.tx.send(Command::Append(batch)).await.is_err() {
            return Err(self
                .outcome()
                .await
                .err()
                .unwrap_or_else(|| Error::Internal("ingest ended before the stream did".into())));
        }
        Ok(())
    }

    /// Commits and returns the number of rows appended.
    pub async fn commit(self) -> Result<u64> {
        let _ = self.tx.send(Command::Commit).await;
        drop(self.tx);
        self.done
            .await
            .map_err(|_| Error::Internal("ingest thread ended without an answer".into()))?
    }

    async fn outcome(&mut self) -> Result<u64> {
        (&mut self.done)
            .await
            .map_err(|_| Error::Internal("ingest thread ended without an answer".into()))?
    }
}

fn consume(
    db: &Database,
    table: &TableName,
    schema: &SchemaRef,
    mut rx: mpsc::Receiver<Command>,
) -> Result<u64> {
    let conn = db.connect()?;
    conn.execute_batch("BEGIN TRANSACTION")?;
    let result = (|| -> Result<Option<u64>> {
        conn.execute_batch(&create_table_sql(&table.quoted(), schema)?)?;
        let mut appender = conn.appender(table.as_str())?;
        let mut rows = 0u64;
        while let Some(command) = rx.blocking_recv() {
            match command {
                Command::Append(batch) => {
                    rows += batch.num_rows() as u64;
                    appender
                        .append_record_batch(batch)
                        .map_err(|e| Error::from(e).context(format!("appending to {table:?}")))?;
                }
                Command::Commit => {
                    appender.flush()?;
                    return Ok(Some(rows));
                }
            }
        }
        Ok(None) // sender dropped without commit: cancelled
    })();
    match result {
        Ok(Some(rows)) => {
            conn.execute_batch("COMMIT")?;
            Ok(rows)
        }
        Ok(None) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(Error::Cancelled(
                "put stream ended without completing; nothing was written".into(),
            ))
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
