//! One exchange, whatever its entry (`do_exchange`, the SQL function, `push_table`):
//! resolve its stages, open one session per stage, pass every input message
//! through the stages in order, and end the output with an explicit done (with
//! the [`Receipt`]) or failure.
//!
//! **The seam.** [`start`] is async: it takes the caller's exchange slot, resolves
//! every stage (so a missing name is NotFound before any work), and hands the rest
//! to one blocking worker thread, returning once every stage has opened or the
//! first has refused. The worker reads input with `blocking_recv` and writes
//! through [`output::OutputSender`], which waits on the runtime's handle; nothing
//! else crosses between the two worlds. Stages run one after another on that
//! thread, so a pipeline costs one thread and its batches never leave the process;
//! a stage whose session says it is stateless may also run on further instances,
//! each on a thread of its own ([`crate::lanes`], bounded by
//! [`crate::context::Parallelism`]).
//!
//! Every stage is its own instance with its own budgets (fuel, deadline, memory,
//! all charged to the caller's guest-memory pool), holds its version
//! ([`catalog::Running`]) so it is never removed mid-stream, and is counted in its
//! version's metrics. The version guards, the sessions and the slot are released
//! before the final item, so a caller that sees the end finds them free.

use super::catalog::Running;
use super::lanes::{self, Lanes};
use super::metrics::{ExchangerMetrics, ExtraInstance};
use super::output::{self, Output, OutputSender, SendError};
use super::{CHANNEL_MESSAGES, CancelOnDrop, ExchangeSession, Outgoing};
use crate::Exchanges;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::FlightData;
use arrow_flight::encode::FlightDataEncoderBuilder;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use mallard_access::Principal;
use mallard_core::{Error, Result};
use mallard_protocol::{ExchangeRequest, Receipt, Sandbox, Stage, StageReceipt};
use mallard_sandbox::meter::measure_cpu;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// An exchange's input: the schema message's header, then record and dictionary
/// batch messages; an error item ends the exchange with that error.
pub struct Input {
    /// The input schema's IPC message header.
    pub schema_header: Bytes,
    /// The messages after the schema.
    pub messages: mpsc::Receiver<Result<FlightData>>,
}

impl Input {
    /// An input fed from `batches` (a query's result), IPC-encoded on a task as
    /// the worker asks for them; the first error ends it.
    pub async fn from_batches(
        schema: SchemaRef,
        batches: impl Stream<Item = Result<RecordBatch>> + Send + 'static,
    ) -> Result<Self> {
        let batches = batches
            .map(|b| b.map_err(|e| arrow_flight::error::FlightError::Tonic(Box::new(e.into()))));
        let mut encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            // In-process: no need to split batches into gRPC-sized messages.
            .with_max_flight_data_size(usize::MAX)
            .build(batches);
        let schema_header = match encoded.next().await {
            Some(Ok(first)) => first.data_header,
            Some(Err(e)) => return Err(Error::from(e)),
            None => return Err(Error::internal("encoder produced no schema")),
        };
        let (tx, messages) = mpsc::channel(CHANNEL_MESSAGES);
        tokio::spawn(async move {
            while let Some(item) = encoded.next().await {
                let item = item.map_err(Error::from);
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Self {
            schema_header,
            messages,
        })
    }
}

/// A running exchange.
pub struct Exchange {
    /// The last stage's output schema.
    pub schema: SchemaRef,
    /// Its IPC schema message, to send ahead of the output.
    pub schema_message: FlightData,
    /// The output messages, then [`Output::Done`] or an error. Dropping it
    /// cancels the exchange (running guests are interrupted).
    pub output: Pin<Box<dyn Stream<Item = std::result::Result<Output, tonic::Status>> + Send>>,
}

/// Starts `request`'s stages over `input` for `principal`.
pub async fn start(
    exchanges: &Exchanges,
    principal: &Principal,
    request: &ExchangeRequest,
    input: Input,
) -> Result<Exchange> {
    let slot = exchanges.slots.acquire(&principal.user)?;
    let versions = request
        .stages
        .iter()
        .map(|stage| {
            exchanges
                .catalog
                .resolve(principal, &stage.exchanger, stage.sandbox == Sandbox::On)
        })
        .collect::<Result<Vec<Running>>>()?;
    let (input_schema, _) = super::validated_schema_message(input.schema_header.clone())?;
    let cancelled = Arc::new(AtomicBool::new(false));
    let (out_tx, out_rx) = output::channel(exchanges.output);
    let (opened_tx, opened_rx) = oneshot::channel();
    let opening = Opening {
        engine: exchanges.catalog.engine().clone(),
        pool: exchanges.guest_memory.of(&principal.user),
        cancelled: cancelled.clone(),
        label: format!("{}#{}", describe(&versions), principal.user),
        stages: request.stages.clone(),
        user: principal.user.clone(),
        per_stage: exchanges
            .parallelism
            .per_stage
            .clamp(1, mallard_protocol::exchange::MAX_INSTANCES as usize),
        extra: exchanges.parallelism.extra.clone(),
    };
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let opened = opening.open(versions, (&input.schema_header, input_schema));
        match opened {
            Ok(stages) => {
                let last = stages.last().expect("at least one stage");
                let schema_message = last.schema_message();
                match super::validated_schema_message(schema_message.data_header) {
                    Ok(opened) => {
                        let _ = opened_tx.send(Ok(opened));
                        let worker = Worker {
                            stages,
                            label: opening.label,
                            started,
                        };
                        worker.run(input.messages, out_tx, slot);
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                    }
                }
            }
            Err(e) => {
                drop(slot);
                let _ = opened_tx.send(Err(e));
            }
        }
    });
    let (schema, schema_message) = opened_rx
        .await
        .map_err(|_| Error::internal("exchange worker ended before opening"))??;
    let guard = CancelOnDrop(cancelled);
    let output = out_rx.map(move |item| {
        let _keep = &guard;
        item
    });
    Ok(Exchange {
        schema,
        schema_message,
        output: Box::pin(output),
    })
}

fn describe(versions: &[Running]) -> String {
    versions
        .iter()
        .map(|r| r.version.describe())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// What opening the stages needs, moved onto the worker thread.
struct Opening {
    engine: Arc<mallard_sandbox::engine::SandboxEngine>,
    pool: Arc<mallard_sandbox::store::MemoryPool>,
    cancelled: Arc<AtomicBool>,
    label: String,
    stages: Vec<Stage>,
    user: String,
    /// The server's cap on instances per stage.
    per_stage: usize,
    extra: Arc<mallard_access::slots::UserSlots>,
}

impl Opening {
    /// Opens every stage, each on the previous one's output schema.
    fn open(&self, versions: Vec<Running>, input: (&Bytes, SchemaRef)) -> Result<Vec<StageRun>> {
        let mut stages: Vec<StageRun> = Vec::with_capacity(versions.len());
        let (mut header, mut schema) = (input.0.clone(), input.1);
        for (running, stage) in versions.into_iter().zip(&self.stages) {
            let version = running.version.clone();
            let mut cpu = Duration::ZERO;
            let session = self
                .open_metered(&running, (&header, &schema), stage, &mut cpu)
                .inspect_err(|e| version.metrics.error(e.code()))?;
            let next = session.schema_message().data_header;
            let (next_schema, _) = super::validated_schema_message(next.clone())?;
            let wanted = stage
                .instances
                .map_or(self.per_stage, |n| n as usize)
                .min(self.per_stage);
            let parallel = wanted > 1 && lanes::may_run_on_lanes(&*session, &next_schema);
            let (run, extra) = if parallel {
                self.open_lanes(
                    session,
                    &running,
                    (&header, &schema),
                    stage,
                    wanted,
                    &mut cpu,
                )?
            } else {
                (Run::One(session), Vec::new())
            };
            stages.push(StageRun {
                receipt: StageReceipt {
                    exchanger: version.describe(),
                    cpu_ms: millis(cpu),
                    instances: run.instances() as u32,
                    ..Default::default()
                },
                run,
                running,
                failed: false,
                extra_instances: extra,
            });
            (header, schema) = (next, next_schema);
        }
        Ok(stages)
    }

    /// Opens one session of `running`'s version, its CPU time added to `cpu`.
    fn open_metered(
        &self,
        running: &Running,
        (header, schema): (&Bytes, &SchemaRef),
        stage: &Stage,
        cpu: &mut Duration,
    ) -> Result<Box<dyn ExchangeSession>> {
        let version = &running.version;
        let (session, used) = measure_cpu(|| {
            version.open_session(
                &self.engine,
                (header, schema.clone()),
                &stage.params,
                self.cancelled.clone(),
                self.pool.clone(),
            )
        });
        version.metrics.add_cpu(used);
        *cpu += used;
        session
    }

    /// `first` and up to `wanted - 1` more sessions, as many as the user's extra
    /// instance slots allow and their guest memory has room for: a further
    /// instance opens only while the user's pool could still hold it at its full
    /// per-instance limit, so going parallel does not turn a stream that fits
    /// into one that runs out. One session runs as it is.
    fn open_lanes(
        &self,
        first: Box<dyn ExchangeSession>,
        running: &Running,
        input: (&Bytes, &SchemaRef),
        stage: &Stage,
        wanted: usize,
        cpu: &mut Duration,
    ) -> Result<(Run, Vec<ExtraSlot>)> {
        let slots = self.extra.acquire_up_to(&self.user, wanted - 1);
        let mut sessions = vec![first];
        let mut extra = Vec::with_capacity(slots.len());
        let instance_limit = self.engine.limits.max_memory_bytes;
        for slot in slots {
            let free = self.pool.max_bytes().saturating_sub(self.pool.used_bytes());
            if free < instance_limit {
                break;
            }
            match self.open_metered(running, input, stage, cpu) {
                Ok(session) => {
                    sessions.push(session);
                    extra.push(ExtraSlot {
                        _slot: slot,
                        _live: ExtraInstance::enter(&running.version.metrics),
                    });
                }
                // The first instance opened: a further one failing (the user's
                // guest memory is taken, say) means fewer instances, not an error.
                Err(e) => {
                    tracing::info!(exchange = ?self.label, error = %e, "stage runs on fewer instances");
                    break;
                }
            }
        }
        if sessions.len() == 1 {
            let session = sessions.pop().expect("the first session");
            return Ok((Run::One(session), extra));
        }
        Ok((
            Run::Lanes(Box::new(Lanes::start(sessions, stage.order, &self.label)?)),
            extra,
        ))
    }
}

/// An instance beyond a stage's first: the user's slot for it and its count
/// in the version's live instances, both released when the stage closes.
struct ExtraSlot {
    _slot: mallard_access::slots::Slot,
    _live: ExtraInstance,
}

/// How a stage runs: one session on the worker thread, or several on lanes.
enum Run {
    One(Box<dyn ExchangeSession>),
    Lanes(Box<Lanes>),
}

impl Run {
    fn instances(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Lanes(lanes) => lanes.len(),
        }
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One open stage: its session(s), its version held, and what it has done so far.
struct StageRun {
    run: Run,
    running: Running,
    receipt: StageReceipt,
    /// Whether one of its calls failed (the failure is counted then).
    failed: bool,
    extra_instances: Vec<ExtraSlot>,
}

impl StageRun {
    fn metrics(&self) -> &ExchangerMetrics {
        &self.running.version.metrics
    }

    /// The output schema message the stage's session(s) declared.
    fn schema_message(&self) -> FlightData {
        match &self.run {
            Run::One(session) => session.schema_message(),
            Run::Lanes(lanes) => lanes.schema_message(),
        }
    }

    /// Counts one call's outcome (wherever it ran) and its output.
    fn account(
        &mut self,
        out: Result<Vec<Outgoing>>,
        cpu: Duration,
        wall: Duration,
    ) -> Result<Vec<Outgoing>> {
        let metrics = &self.running.version.metrics;
        metrics.add_cpu(cpu);
        self.receipt.cpu_ms += millis(cpu);
        self.receipt.wall_ms += millis(wall);
        if let Err(e) = &out {
            metrics.error(e.code());
            self.failed = true;
        }
        let out = out?;
        for data in &out {
            let (rows, bytes) = metrics.sent(data);
            self.receipt.rows_out += rows;
            self.receipt.bytes_out += bytes;
            self.receipt.batches_out += 1;
        }
        Ok(out)
    }

    /// Counts what several lane calls returned, in order, up to the first error.
    fn account_all(&mut self, done: Vec<lanes::Done>) -> Result<Vec<Outgoing>> {
        let mut out = Vec::new();
        for lanes::Done {
            out: one,
            cpu,
            wall,
            finish,
            ..
        } in done
        {
            // Per batch, as on one instance: `finish` is not a batch.
            if !finish {
                self.metrics().batch_wall.observe(wall);
            }
            out.extend(self.account(one, cpu, wall)?);
        }
        Ok(out)
    }

    /// Hands one message to the stage; returns the output now ready (a parallel
    /// stage's may belong to earlier messages).
    fn push(&mut self, message: &FlightData) -> Result<Vec<Outgoing>> {
        let (rows, bytes) = self.metrics().received(message);
        self.receipt.rows_in += rows;
        self.receipt.bytes_in += bytes;
        self.receipt.batches_in += 1;
        match &mut self.run {
            Run::One(session) => {
                let (out, cpu, wall) =
                    lanes::timed(|| session.push(&message.data_header, &message.data_body));
                self.metrics().batch_wall.observe(wall);
                self.account(out, cpu, wall)
            }
            Run::Lanes(lanes) => {
                let done = lanes.push(message)?;
                self.account_all(done)
            }
        }
    }

    /// The output of everything still in flight (a parallel stage's), waiting for it.
    fn drain(&mut self) -> Result<Vec<Outgoing>> {
        match &mut self.run {
            Run::One(_) => Ok(Vec::new()),
            Run::Lanes(lanes) => {
                let done = lanes.drain()?;
                self.account_all(done)
            }
        }
    }

    fn finish(&mut self) -> Result<Vec<Outgoing>> {
        match &mut self.run {
            Run::One(session) => {
                let (out, cpu, wall) = lanes::timed(|| session.finish());
                self.account(out, cpu, wall)
            }
            Run::Lanes(lanes) => {
                let done = lanes.finish()?;
                self.account_all(done)
            }
        }
    }

    /// Releases the session(s) (metering their teardown) and returns the receipt.
    fn close(self, label: &str) -> StageReceipt {
        let Self {
            run,
            running,
            mut receipt,
            extra_instances,
            ..
        } = self;
        let sessions = match run {
            Run::One(session) => vec![session],
            Run::Lanes(lanes) => (*lanes).close(),
        };
        receipt.peak_memory_bytes = 0;
        for session in sessions {
            let memory = session.guest_memory_bytes();
            running.version.metrics.memory_seen(memory);
            receipt.peak_memory_bytes += memory as u64;
            let guest_output = session.guest_output();
            if !guest_output.is_empty() {
                // Debug-formatted: the guest's text is escaped, so it cannot forge log lines.
                tracing::info!(exchange = ?label, output = ?guest_output.trim_end(), "guest output");
            }
            let ((), cpu) = measure_cpu(|| drop(session));
            running.version.metrics.add_cpu(cpu);
            receipt.cpu_ms += millis(cpu);
        }
        // Their slots and live counts outlive the instances they stand for.
        drop(extra_instances);
        receipt
    }
}

/// Passes `message` through `stages` in order, then to `sink`; false once the
/// client is gone. A stage reads its input in one piece (joined if it came in
/// several); the last stage's output goes to the sink as it is.
fn feed(
    stages: &mut [StageRun],
    message: Outgoing,
    sink: &mut dyn FnMut(Outgoing) -> Result<bool>,
) -> Result<bool> {
    let Some((stage, rest)) = stages.split_first_mut() else {
        return sink(message);
    };
    for out in stage.push(&message.into_flight_data())? {
        if !feed(rest, out, sink)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Calls `each` on every stage in order (draining what is in flight, or ending
/// it), passing what it returns through the stages after it; false once the
/// client is gone.
fn in_stage_order(
    stages: &mut [StageRun],
    sink: &mut dyn FnMut(Outgoing) -> Result<bool>,
    each: fn(&mut StageRun) -> Result<Vec<Outgoing>>,
) -> Result<bool> {
    for i in 0..stages.len() {
        let (head, rest) = stages.split_at_mut(i + 1);
        for out in each(&mut head[i])? {
            if !feed(rest, out, sink)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// The worker's side of a running exchange.
struct Worker {
    stages: Vec<StageRun>,
    label: String,
    started: Instant,
}

impl Worker {
    /// Streams `input` through the stages into `output` until input ends, the
    /// consumer leaves, or something fails (sent as the stream's final status).
    fn run(
        mut self,
        mut input: mpsc::Receiver<Result<FlightData>>,
        output: OutputSender,
        slot: mallard_access::slots::Slot,
    ) {
        let outcome = (|| -> Result<bool> {
            let mut sink = |data: Outgoing| match output.send(data) {
                Ok(()) => Ok(true),
                Err(SendError::Gone) => Ok(false),
                Err(SendError::Stalled(e)) => Err(e),
            };
            loop {
                let message = match input.try_recv() {
                    Ok(message) => message,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    // Input went quiet: hand on what parallel stages hold before
                    // waiting, so the output of every batch received goes out.
                    Err(mpsc::error::TryRecvError::Empty) => {
                        if !in_stage_order(&mut self.stages, &mut sink, StageRun::drain)? {
                            return Ok(false);
                        }
                        match input.blocking_recv() {
                            Some(message) => message,
                            None => break,
                        }
                    }
                };
                let message = message?;
                if message.data_header.is_empty() {
                    continue; // metadata-only message
                }
                if !feed(&mut self.stages, Outgoing::from(message), &mut sink)? {
                    return Ok(false);
                }
            }
            in_stage_order(&mut self.stages, &mut sink, StageRun::finish)
        })();
        let label = self.label;
        let stage_failed = self.stages.iter().any(|s| s.failed);
        let stages: Vec<StageReceipt> = self
            .stages
            .into_iter()
            .map(|stage| {
                match &outcome {
                    Ok(false) => stage.metrics().error(tonic::Code::Cancelled),
                    // A stage's own failure was counted where it happened; anything
                    // else (bad input, a stalled client) failed every stage.
                    Err(e) if !stage_failed => stage.metrics().error(e.code()),
                    _ => {}
                }
                stage.close(&label)
            })
            .collect();
        drop(slot);
        match outcome {
            Ok(true) => {
                tracing::debug!(exchange = ?label, "exchange complete");
                output.finish(Receipt {
                    stages,
                    wall_ms: millis(self.started.elapsed()),
                });
            }
            Ok(false) => tracing::info!(exchange = ?label, "client left during exchange"),
            Err(e) => {
                tracing::warn!(exchange = ?label, error = ?e.to_string(), "exchange failed");
                output.fail(e.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pipeline with the native built-ins on a real context: stage order,
    //! receipts, and that the slot comes back however the exchange ends.

    use super::*;
    use crate::testing::exchanges;
    use arrow::array::{Int64Array, StringArray};
    use mallard_access::Role;
    use mallard_core::ErrorKind;

    fn alice() -> Principal {
        Principal {
            user: "alice".into(),
            role: Role::User,
        }
    }

    fn batch(from: i64, n: i64) -> RecordBatch {
        let values = Int64Array::from_iter_values(from..from + n);
        let keys = StringArray::from_iter_values((from..from + n).map(|i| format!("k{}", i % 3)));
        RecordBatch::try_from_iter([
            ("key", Arc::new(keys) as arrow::array::ArrayRef),
            ("value", Arc::new(values) as arrow::array::ArrayRef),
        ])
        .unwrap()
    }

    async fn input(batches: Vec<Result<RecordBatch>>) -> Input {
        let schema = batch(0, 1).schema();
        Input::from_batches(schema, futures::stream::iter(batches))
            .await
            .unwrap()
    }

    fn request(json: &str) -> ExchangeRequest {
        ExchangeRequest::parse(json.as_bytes()).unwrap()
    }

    const TWO_STAGES: &str = r#"[{"exchanger": "add_processed", "sandbox": "off"},
        {"exchanger": "running_totals", "sandbox": "off", "params": {"key": "key", "value": "value"}}]"#;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stages_run_in_order_and_the_receipt_counts_each() {
        let ctx = exchanges(2);
        let input = input(vec![Ok(batch(0, 1000)), Ok(batch(1000, 24))]).await;
        let exchange = start(&ctx, &alice(), &request(TWO_STAGES), input)
            .await
            .unwrap();
        let names: Vec<_> = exchange
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["key", "value", "processed", "running_total"]);
        let items: Vec<_> = exchange.output.collect().await;
        let Some(Ok(Output::Done(receipt))) = items.last() else {
            panic!(
                "an exchange ends with an explicit done: {:?}",
                items.last().map(|i| i.is_ok())
            );
        };
        assert_eq!(receipt.stages.len(), 2);
        for stage in &receipt.stages {
            assert_eq!((stage.rows_in, stage.rows_out), (1024, 1024), "{stage:?}");
        }
        assert!(receipt.stages[0].exchanger.contains("add_processed"));
        assert_eq!(ctx.slots.total(), 0, "released before the final item");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_stage_is_refused_before_any_work_and_frees_the_slot() {
        let ctx = exchanges(1);
        let json = r#"[{"exchanger": "add_processed", "sandbox": "off"}, {"exchanger": "nope"}]"#;
        let err = start(&ctx, &alice(), &request(json), input(vec![]).await)
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert_eq!(ctx.slots.total(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_input_error_ends_the_output_with_that_error() {
        let ctx = exchanges(1);
        let broken = vec![
            Ok(batch(0, 10)),
            Err(Error::cancelled("the client went away")),
        ];
        let exchange = start(&ctx, &alice(), &request(TWO_STAGES), input(broken).await)
            .await
            .unwrap();
        let items: Vec<_> = exchange.output.collect().await;
        let Some(Err(last)) = items.last() else {
            panic!("the output must end with the input's error");
        };
        assert_eq!(last.code(), tonic::Code::Cancelled, "{last}");
        assert_eq!(ctx.slots.total(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_output_never_read_and_dropped_frees_the_slot() {
        let ctx = exchanges(1);
        let many: Vec<_> = (0..64).map(|i| Ok(batch(i * 4096, 4096))).collect();
        let exchange = start(&ctx, &alice(), &request(TWO_STAGES), input(many).await)
            .await
            .unwrap();
        assert_eq!(ctx.slots.total(), 1);
        drop(exchange);
        let deadline = Instant::now() + Duration::from_secs(5);
        while ctx.slots.total() != 0 {
            assert!(Instant::now() < deadline, "the slot was not given back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The cap is free again for the next exchange.
        let next = start(&ctx, &alice(), &request(TWO_STAGES), input(vec![]).await).await;
        assert!(next.is_ok());
    }
}
