//! Query results as Flight data streams, one way for every door: the seeds'
//! `do_get` and Flight SQL's both come here, so slots, the output budget, the
//! stall guard and the receipts trailer hold alike.

use crate::auth::Principal;
use crate::flight::ipc_pieces;
use crate::flight::stall;
use crate::state::ServerState;
use crate::transport::MAX_FLIGHT_DATA_BYTES;
use arrow::array::RecordBatch;
use arrow_flight::FlightData;
use arrow_flight::SchemaAsIpc;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_ipc::writer::IpcWriteOptions;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use mallard_core::{Error, Result};
use mallard_db::query::{self, Query};
use mallard_db::session::On;
use mallard_db::statements::StatementPolicy;
use mallard_exchange::output::Output;
use mallard_exchange::{bare_select, sql};
use mallard_protocol::outgoing::Outgoing;
use std::sync::Arc;
use tonic::Status;

/// A stream of Flight messages for a response.
pub type DataStream = BoxStream<'static, Result<Outgoing, Status>>;

/// Runs `query` for `principal` under `policy` and streams its result: one of
/// the caller's query slots held while it streams, its queued batches drawn
/// from the caller's output budget, a stall guard on the reader, and the
/// receipts of the exchanges it ran in the trailer.
pub async fn query_data(
    state: &Arc<ServerState>,
    principal: &Principal,
    query: Query,
    policy: Arc<dyn StatementPolicy>,
    cancel_id: Option<String>,
) -> Result<DataStream> {
    let slot = state.query_slots.acquire(&principal.user)?;
    if query.params.is_empty()
        && matches!(query.on, On::Fresh)
        && let Some(bare) = bare_select::start(
            &state.exchanges,
            principal,
            &query.sql,
            policy.clone(),
            MAX_FLIGHT_DATA_BYTES,
        )
        .await?
    {
        state.metrics.bare_selects.inc();
        return Ok(bare_select_data(state, principal, slot, bare, cancel_id));
    }
    let budget = state.query_output.of(&principal.user);
    let receipts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let scope = sql::caller_scope(&state.exchanges, principal, receipts.clone());
    let result =
        query::run_with_budget(state.db.clone(), query, policy, Some(budget), Some(scope)).await?;
    let schema = result.schema.clone();
    let registration = cancellable(state, principal, cancel_id, result.interrupt_handle());
    let batches = result.into_stream();
    let data = if ipc_pieces::supports(&schema) {
        let batches = batches.map_err(Status::from);
        ipc_pieces::encode_stream(schema, batches, MAX_FLIGHT_DATA_BYTES)?.boxed()
    } else {
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(MAX_FLIGHT_DATA_BYTES)
            .build(batches.map_err(|e| FlightError::Tonic(Box::new(e.into()))))
            .map(|data| {
                data.map(Outgoing::from)
                    .map_err(|e| Status::from(Error::from(e)))
            })
            .boxed()
    };
    // After a clean end, the receipts of the exchanges the SQL ran, if any.
    let trailer = futures::stream::once(async move {
        let receipts = std::mem::take(&mut *receipts.lock().unwrap_or_else(|p| p.into_inner()));
        (!receipts.is_empty()).then(|| Err(receipt_trailer(&receipts, true)))
    })
    .filter_map(|item| async move { item });
    Ok(answer(state, data.chain(trailer), (slot, registration)))
}

/// Registers `interrupt` under `cancel_id`, when given, so the caller can
/// cancel the query by id while it streams (Flight SQL's CancelFlightInfo).
fn cancellable(
    state: &Arc<ServerState>,
    principal: &Principal,
    cancel_id: Option<String>,
    interrupt: Arc<mallard_db::raw::Interrupt>,
) -> Option<impl Send + 'static> {
    cancel_id.map(|id| {
        state
            .running_queries
            .register(id, &principal.user, interrupt)
    })
}

/// `stream` as a query's answer: `held` (its query slot, its cancel
/// registration) kept until the stream is dropped, and a stall guard on the reader.
fn answer(
    state: &Arc<ServerState>,
    stream: impl futures::Stream<Item = Result<Outgoing, Status>> + Send + 'static,
    held: impl Send + 'static,
) -> DataStream {
    let stream = stream.map(move |item| {
        let _held = &held; // until the stream is dropped
        item
    });
    let (stream, _) = stall::guard(stream, state.config.stall_timeout, "do_get");
    stream.boxed()
}

/// A bare `SELECT * FROM exchange(…)` answered from its exchange's output
/// (see [`bare_select`]): DuckDB's schema for the statement, the exchange's
/// messages as they come, and its receipt in the trailer, under the same slot,
/// cancellation and stall guard as any query's result.
fn bare_select_data(
    state: &Arc<ServerState>,
    principal: &Principal,
    slot: impl Send + 'static,
    bare: bare_select::BareSelect,
    cancel_id: Option<String>,
) -> DataStream {
    let registration = cancellable(state, principal, cancel_id, bare.interrupt.clone());
    let schema = Outgoing::from(FlightData::from(SchemaAsIpc::new(
        &bare.schema,
        &IpcWriteOptions::default(),
    )));
    // After the receipt or an error nothing follows; an output that ends
    // without either is an error, never a clean (short) answer.
    let mut finished = false;
    let messages = bare
        .output
        .map(Some)
        .chain(futures::stream::once(async { None }))
        .filter_map(move |item| {
            let item = match item {
                _ if finished => None,
                Some(Ok(Output::Data(data))) => Some(Ok(data)),
                Some(Ok(Output::Done(receipt))) => {
                    finished = true;
                    Some(Err(receipt_trailer(&[receipt], true)))
                }
                Some(Err(status)) => {
                    finished = true;
                    Some(Err(status))
                }
                None => Some(Err(Status::internal(
                    "the exchange ended without finishing",
                ))),
            };
            async move { item }
        });
    let stream = futures::stream::once(async move { Ok(schema) }).chain(messages);
    answer(state, stream, (slot, registration))
}

/// One batch the server built (catalog metadata) as a Flight data stream.
pub fn batch_data(batch: RecordBatch) -> DataStream {
    FlightDataEncoderBuilder::new()
        .with_schema(batch.schema())
        .with_max_flight_data_size(MAX_FLIGHT_DATA_BYTES)
        .build(futures::stream::once(async move { Ok(batch) }))
        .map(|data| {
            data.map(Outgoing::from)
                .map_err(|e| Status::from(Error::from(e)))
        })
        .boxed()
}

/// The clean end of a stream that carries receipts: status OK with the
/// receipts in the [`mallard_protocol::receipt::TRAILER`] trailer (one object for
/// `do_exchange`, a list for `do_get`).
pub fn receipt_trailer(receipts: &[mallard_protocol::Receipt], as_list: bool) -> Status {
    let json = match (receipts, as_list) {
        ([one], false) => one.to_json(),
        _ => mallard_protocol::receipt::list_to_json(receipts),
    };
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert_bin(
        mallard_protocol::receipt::TRAILER,
        tonic::metadata::MetadataValue::from_bytes(&json),
    );
    Status::with_metadata(tonic::Code::Ok, "", metadata)
}
