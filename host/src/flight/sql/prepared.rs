//! Prepared statements: created by an action, bound by `DoPut`, run by
//! `DoGet` (queries) or `DoPut` (updates), closed by an action or by expiry.
//!
//! A prepared statement keeps its SQL, not a DuckDB handle: it is prepared
//! again at each run, so it is judged against the catalog as it is then.

use super::placement::{on_callers_connection, placement, statement_shape};
use super::tickets::changed_batch;
use crate::auth::Principal;
use crate::state::ServerState;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::sql::{
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
};
use arrow_flight::{IpcMessage, SchemaAsIpc};
use arrow_ipc::writer::IpcWriteOptions;
use bytes::Bytes;
use mallard_core::{Error, Result};
use mallard_db::params::Params;
use mallard_db::query::{self, Query};
use mallard_db::statements::{self, StatementKind};
use std::sync::{Arc, Mutex};

/// A prepared statement: its SQL, its shape, and bound rows.
pub struct PreparedStatement {
    sql: String,
    kind: StatementKind,
    transaction: Option<Bytes>,
    dataset_schema: SchemaRef,
    params: Mutex<Vec<RecordBatch>>,
}

impl PreparedStatement {
    /// Whether running it reads (a query) rather than changes something.
    pub fn is_query(&self) -> bool {
        self.kind == StatementKind::Read
    }

    /// The SQL to ask the cluster's other nodes, which do not hold this
    /// statement: a query outside a transaction without bound parameters only;
    /// InvalidArgument otherwise.
    pub fn sql_for_peers(&self) -> Result<String> {
        let every_node = crate::cluster::NODES_HEADER;
        let params = self.params.lock().unwrap_or_else(|p| p.into_inner());
        if !self.is_query() || self.transaction.is_some() || !params.is_empty() {
            return Err(Error::invalid_argument(format!(
                "{every_node}: all runs a prepared statement on every node only when it is \
                 a query outside a transaction without bound parameters"
            )));
        }
        Ok(self.sql.clone())
    }

    /// Replaces the bound parameter batches.
    pub fn bind(&self, batches: Vec<RecordBatch>) {
        *self.params.lock().unwrap_or_else(|p| p.into_inner()) = batches;
    }

    /// The parameter rows bound, one [`Params`] each.
    fn bound_rows(&self) -> Result<Vec<Params>> {
        let batches = self.params.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows = Vec::new();
        for batch in batches.iter() {
            for row in 0..batch.num_rows() {
                rows.push(Params::from_row(batch, row)?);
            }
        }
        Ok(rows)
    }
}

/// The caller's prepared statement `handle`; NotFound for anyone else's.
pub(super) fn get(
    state: &ServerState,
    principal: &Principal,
    handle: &[u8],
) -> Result<Arc<PreparedStatement>> {
    state.flight_sql.prepared.get(&principal.user, handle)
}

/// `CreatePreparedStatement`: judges the statement for the caller and keeps it.
pub(super) async fn create(
    state: &Arc<ServerState>,
    principal: &Principal,
    request: ActionCreatePreparedStatementRequest,
) -> Result<ActionCreatePreparedStatementResult> {
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
    Ok(ActionCreatePreparedStatementResult {
        prepared_statement_handle: handle.into_bytes().into(),
        ..result
    })
}

/// `ClosePreparedStatement`.
pub(super) fn close(state: &ServerState, principal: &Principal, handle: &[u8]) -> Result<()> {
    state.flight_sql.prepared.remove(&principal.user, handle)?;
    Ok(())
}

/// The schema a prepared query's stream will have: with one row of parameters
/// bound, the schema DuckDB gives the statement bound with them (it may type
/// the result only then); without, the one it gave when prepared.
pub(super) async fn result_schema(
    state: &Arc<ServerState>,
    principal: &Principal,
    prepared: &PreparedStatement,
) -> Result<SchemaRef> {
    if !prepared.is_query() {
        return Ok(changed_batch(0)?.schema());
    }
    let mut rows = prepared.bound_rows()?;
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

/// The query a prepared query runs as, with where it runs and its policy: one
/// row of parameters at most.
pub(super) fn query(
    state: &ServerState,
    principal: &Principal,
    prepared: &PreparedStatement,
) -> Result<(Query, Arc<dyn statements::StatementPolicy>)> {
    let (on, policy) = placement(state, principal, prepared.transaction.as_ref())?;
    let rows = prepared.bound_rows()?;
    let params = single_row(rows)?;
    Ok((
        Query {
            sql: prepared.sql.clone(),
            params,
            on,
        },
        policy,
    ))
}

/// The parameters of a query: none, or the one row bound.
fn single_row(rows: Vec<Params>) -> Result<Params> {
    match rows.len() {
        0 => Ok(Params::none()),
        1 => Ok(rows.into_iter().next().expect("one row")),
        n => Err(Error::invalid_argument(format!(
            "a prepared query runs with one row of parameters; {n} are bound \
             (bind one row, or use an update for many)"
        ))),
    }
}

/// Runs a prepared statement once per bound parameter row (once without
/// parameters when none are bound); the changed rows of all runs.
pub(super) async fn run_update(
    state: &Arc<ServerState>,
    principal: &Principal,
    prepared: &PreparedStatement,
) -> Result<u64> {
    let rows = prepared.bound_rows()?;
    let _slot = state.query_slots.acquire(&principal.user)?;
    let (on, policy) = placement(state, principal, prepared.transaction.as_ref())?;
    query::execute_each(state.db.clone(), prepared.sql.clone(), rows, on, policy).await
}

fn ipc_schema(schema: &SchemaRef) -> Result<Bytes> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into()?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use mallard_core::ErrorKind;

    fn statement(batches: Vec<RecordBatch>) -> PreparedStatement {
        PreparedStatement {
            sql: "SELECT $1".into(),
            kind: StatementKind::Read,
            transaction: None,
            dataset_schema: Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)])),
            params: Mutex::new(batches),
        }
    }

    fn rows(n: i64) -> RecordBatch {
        RecordBatch::try_from_iter([(
            "p",
            Arc::new(Int64Array::from_iter_values(0..n)) as arrow::array::ArrayRef,
        )])
        .unwrap()
    }

    #[test]
    fn every_row_of_every_bound_batch_is_one_run() {
        let prepared = statement(vec![rows(2), rows(0), rows(3)]);
        assert_eq!(prepared.bound_rows().unwrap().len(), 5);
        prepared.bind(Vec::new());
        assert!(prepared.bound_rows().unwrap().is_empty());
    }

    #[test]
    fn a_query_takes_no_row_or_one_and_refuses_more() {
        assert!(single_row(Vec::new()).unwrap().is_empty());
        let one = statement(vec![rows(1)]).bound_rows().unwrap();
        assert_eq!(single_row(one).unwrap().len(), 1);
        let two = statement(vec![rows(2)]).bound_rows().unwrap();
        let err = single_row(two).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("2 are bound"), "{err}");
    }
}
