//! `push_table` to several targets: the rows (through the push's exchange, if
//! any) are split by a [`Partitioner`], each target's share goes through its own
//! two-phase `do_put` ([`crate::flight::two_phase`]), and the targets are told to
//! commit only once every one of them has inserted its share. A target that
//! fails before that (refuses, dies, stops reading) rolls every target back and
//! is named in the error.

use crate::auth::Principal;
use crate::flight::partition::Partitioner;
use crate::flight::push::{PushAs, Pushed, exchange_output, receipt_of};
use crate::flight::two_phase::Control;
use crate::state::ServerState;
use crate::transport::MAX_FLIGHT_DATA_BYTES;
use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightData, FlightDescriptor, PutResult};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use mallard_core::{Error, Result};
use mallard_db::query::QueryStream;
use mallard_protocol::{Partition, PushRequest, PushTarget};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Batches queued for one target before the split waits for it.
const QUEUED_PER_TARGET: usize = 2;

/// Pushes `source` to every target of `request`, split by `partition`.
pub async fn push(
    state: &Arc<ServerState>,
    principal: &Principal,
    request: &PushRequest,
    partition: &Partition,
    source: QueryStream,
) -> Result<Pushed> {
    let (schema, mut batches, receipt) = match &request.exchange {
        None => (source.schema.clone(), source.into_stream().boxed(), None),
        Some(exchange) => {
            let output = exchange_output(state, principal, exchange, source).await?;
            let schema = Arc::new(Schema::try_from(&output.schema_message)?);
            let schema_message = output.schema_message;
            let data = futures::stream::once(async move { Ok(schema_message) })
                .chain(output.data)
                .map_err(|status| FlightError::Tonic(Box::new(status)));
            let batches = FlightRecordBatchStream::new_from_flight_data(data).map_err(Error::from);
            (schema, batches.boxed(), Some(output.receipt))
        }
    };
    let mut partitioner = Partitioner::new(partition, &schema, request.to.len())?;
    let opened = futures::future::join_all(
        request
            .to
            .iter()
            .map(|target| Leg::open(state, principal, request, target, schema.clone())),
    )
    .await;
    let mut legs = opened.into_iter().collect::<Result<Vec<_>>>()?;
    let wait = state.config.stall_timeout;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        for (leg, part) in legs.iter_mut().zip(partitioner.split(&batch)?) {
            if let Some(part) = part {
                leg.send(part, wait).await?;
            }
        }
    }
    // Phase one: every target inserts its share, uncommitted. Any failure
    // returns here, dropping every leg: each target then rolls back.
    let prepared = futures::future::join_all(legs.iter_mut().map(|leg| leg.prepare(wait))).await;
    for outcome in prepared {
        outcome?;
    }
    // Phase two.
    let committed = futures::future::join_all(legs.iter_mut().map(|leg| leg.commit(wait))).await;
    let mut rows_per_target = Vec::new();
    let mut failed = Vec::new();
    for outcome in committed {
        match outcome {
            Ok(rows) => rows_per_target.push(rows),
            Err(e) => failed.push(e),
        }
    }
    if let Some(first) = failed.into_iter().next() {
        return Err(first.context(format!(
            "push_table: every target had prepared its share, {} of {} committed",
            rows_per_target.len(),
            legs.len()
        )));
    }
    Ok(Pushed {
        rows: rows_per_target.iter().sum(),
        rows_per_target,
        receipt: receipt_of(receipt).await?,
    })
}

/// One target's two-phase `do_put`.
struct Leg {
    target: PushTarget,
    /// The share's batches; dropped to end them.
    batches: Option<mpsc::Sender<RecordBatch>>,
    /// `prepare` and `commit`, after the batches.
    control: mpsc::Sender<FlightData>,
    answers: BoxStream<'static, Result<PutResult, FlightError>>,
}

impl Leg {
    async fn open(
        state: &ServerState,
        principal: &Principal,
        request: &PushRequest,
        target: &PushTarget,
        schema: SchemaRef,
    ) -> Result<Self> {
        let named = |e: Error| e.context(format!("push_table to {target}"));
        let mut client = PushAs::choose(state, principal, target, &request.credentials)
            .connect(state, target)
            .await
            .map_err(named)?;
        let (batches, batch_rx) = mpsc::channel(QUEUED_PER_TARGET);
        let (control, control_rx) = mpsc::channel(2);
        let mut first = Control::TwoPhase.message();
        first.flight_descriptor = Some(FlightDescriptor::new_cmd(
            request.target_table.as_str().to_owned(),
        ));
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(MAX_FLIGHT_DATA_BYTES)
            .build(ReceiverStream::new(batch_rx).map(Ok));
        let input = futures::stream::once(async { Ok(first) })
            .chain(encoded)
            .chain(ReceiverStream::new(control_rx).map(Ok));
        let answers = client.do_put(input).await.map_err(|e| named(e.into()))?;
        Ok(Self {
            target: target.clone(),
            batches: Some(batches),
            control,
            answers,
        })
    }

    fn named(&self, e: Error) -> Error {
        e.context(format!("push_table to {}", self.target))
    }

    async fn send(&mut self, part: RecordBatch, wait: Duration) -> Result<()> {
        let Some(batches) = &self.batches else {
            return Err(Error::internal("a share's batch after its end"));
        };
        match tokio::time::timeout(wait, batches.send(part)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.early_end().await),
            Err(_) => Err(self.named(Error::deadline_exceeded(format!(
                "the target read nothing for {wait:?}; the push was stopped and rolled back"
            )))),
        }
    }

    /// Why the target stopped taking the share (its answer, if it gave one).
    async fn early_end(&mut self) -> Error {
        match tokio::time::timeout(Duration::from_secs(5), self.answers.next()).await {
            Ok(Some(Err(e))) => self.named(e.into()),
            _ => self.named(Error::unavailable("the target stopped taking rows")),
        }
    }

    async fn prepare(&mut self, wait: Duration) -> Result<u64> {
        self.batches = None;
        self.say(Control::Prepare).await?;
        self.answer("prepared", wait).await
    }

    async fn commit(&mut self, wait: Duration) -> Result<u64> {
        self.say(Control::Commit).await?;
        self.answer("rows", wait).await
    }

    async fn say(&mut self, control: Control) -> Result<()> {
        if self.control.send(control.message()).await.is_err() {
            return Err(self.early_end().await);
        }
        Ok(())
    }

    /// The next answer, which must carry `key`.
    async fn answer(&mut self, key: &str, wait: Duration) -> Result<u64> {
        let answer = tokio::time::timeout(wait, self.answers.next())
            .await
            .map_err(|_| {
                self.named(Error::deadline_exceeded(format!(
                    "no `{key}` answer within {wait:?}"
                )))
            })?;
        match answer {
            Some(Ok(result)) => serde_json::from_slice::<serde_json::Value>(&result.app_metadata)
                .ok()
                .and_then(|v| v.get(key)?.as_u64())
                .ok_or_else(|| {
                    self.named(Error::internal(format!(
                        "the target answered without `{key}`"
                    )))
                }),
            Some(Err(e)) => Err(self.named(e.into())),
            None => Err(self.named(Error::unavailable(format!(
                "the target ended the put without its `{key}` answer"
            )))),
        }
    }
}
