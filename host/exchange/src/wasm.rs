//! One exchange stream through a sandboxed guest: a fresh instance, one guest call
//! per message under the call deadline, every output message validated against the
//! declared schema before it is forwarded to the client. Contract 0.1 guests return
//! their output; contract 0.2 guests `emit` it during the call, naming the input
//! columns they pass through unchanged ([`mallard_assemble`]).
//!
//! The client's record batches go into the guest as they came, unvalidated: the
//! guest holds only this stream, and its output is validated. They are validated
//! here only when the guest fails on one, so a malformed batch is reported as the
//! client's (InvalidArgument) rather than as the exchanger's failure.

use crate::{
    ExchangeSession, Outgoing, decode_input, exchanger_error, guest_text, validated_schema_message,
};
use arrow::datatypes::SchemaRef;
use arrow::ipc::{MessageHeader, root_as_message};
use arrow_flight::FlightData;
use bytes::Bytes;
use mallard_assemble::{Assembler, InputBatch};
use mallard_core::{Error, Result};
use mallard_exchanger::ipc::{MessageBounds, MessageDecoder};
use mallard_sandbox::bindings::{Exchanger, IpcMessage, v0_2};
use mallard_sandbox::emit::EmitRefused;
use mallard_sandbox::engine::SandboxEngine;
use mallard_sandbox::input::ReadRefused;
use mallard_sandbox::store::{MemoryDenied, MemoryPool, Stop, StoreState, new_store};
use mallard_sandbox::upload::Pre;
use mallard_sandbox::wasi::CapabilityDenied;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use wasmtime::component::ResourceAny;
use wasmtime::{Store, Trap};

/// A guest session for one stream. Dropped (never reused) after any trap.
pub struct WasmSession {
    info: CallInfo,
    store: Store<StoreState>,
    instance: Instance,
    session: ResourceAny,
    input: MessageDecoder,
    validator: MessageDecoder,
    schema_message: FlightData,
    batch_index: u64,
    /// What the session said of itself after `open` (0.2; 0.1 cannot say).
    stateless: bool,
}

/// The instance, by the contract it speaks.
enum Instance {
    V0_1(Exchanger),
    V0_2(v0_2::Exchanger, Box<Assembler>),
}

impl WasmSession {
    /// Instantiates the guest `name` and opens a session for `input` (the
    /// client's schema message header, and the schema decoded from it); its
    /// memory is also charged to `pool` (the user's).
    pub fn open(
        engine: &SandboxEngine,
        (name, pre): (&str, &Pre),
        (input_schema, input): (&[u8], SchemaRef),
        params: &[(String, String)],
        cancelled: Arc<AtomicBool>,
        pool: Option<Arc<MemoryPool>>,
    ) -> Result<Self> {
        let mut store = new_store(engine, cancelled, pool.clone());
        let mut this = CallInfo {
            name: name.to_owned(),
            call_timeout: engine.limits.call_timeout,
            max_memory_bytes: engine.limits.max_memory_bytes,
            pool,
        };
        enum Opened {
            V0_1(Exchanger),
            V0_2(v0_2::Exchanger),
        }
        // Instantiating runs the guest's start code and grows its memory: the
        // same deadline and budgets apply, and the same statuses.
        // The same calls in both contracts, on each one's generated types.
        macro_rules! instantiate_and_open {
            ($pre:expr) => {{
                let instance =
                    this.call(&mut store, "instantiate", |store| $pre.instantiate(store))?;
                let exchange = instance.mallard_exchanger_exchange();
                store.data_mut().input.opening(input.clone());
                let opened = this.call(&mut store, "open", |store| {
                    exchange.call_open(store, input_schema, params)
                });
                store.data_mut().input.opened();
                let opened = opened?;
                if let (_, Some(refused)) = store.data_mut().input.pushed() {
                    return Err(Error::invalid_argument(format!(
                        "exchanger {name:?} at open: {refused}"
                    )));
                }
                let session = opened.map_err(|e| this.refusal(&store, "open", e.into()))?;
                let header = this.call(&mut store, "output-schema", |store| {
                    exchange.session().call_output_schema(store, session)
                })?;
                (instance, session, header)
            }};
        }
        let (instance, session, header, stateless) = match pre {
            Pre::V0_1(pre) => {
                let (instance, session, header) = instantiate_and_open!(pre);
                (Opened::V0_1(instance), session, header, false)
            }
            Pre::V0_2(pre) => {
                let (instance, session, header) = instantiate_and_open!(pre);
                let stateless = this.call(&mut store, "stateless", |store| {
                    let exchange = instance.mallard_exchanger_exchange();
                    exchange.session().call_stateless(store, session)
                })?;
                if let Some(refused) = store.data_mut().emits.refused_outside_calls() {
                    return Err(this.emit_refused("open", refused));
                }
                (Opened::V0_2(instance), session, header, stateless)
            }
        };
        let (schema, schema_message) =
            validated_schema_message(Bytes::from(header)).map_err(|e| {
                e.context(format!(
                    "exchanger {name:?} declared an invalid output schema"
                ))
            })?;
        let instance = match instance {
            Opened::V0_1(instance) => Instance::V0_1(instance),
            Opened::V0_2(instance) => {
                Instance::V0_2(instance, Box::new(Assembler::new(name, schema.clone())))
            }
        };
        Ok(Self {
            info: this,
            store,
            instance,
            session,
            input: MessageDecoder::new(input),
            validator: MessageDecoder::new(schema),
            schema_message,
            batch_index: 0,
            stateless,
        })
    }

    /// Validates a call's output. The validation counts against the call's deadline:
    /// output that takes the host longer to check than the guest had left ends the
    /// stream as the guest running over would (each message's check is itself
    /// bounded by the decoder's footprint rule).
    fn validate(&mut self, messages: Vec<IpcMessage>, what: &str) -> Result<Vec<Outgoing>> {
        let deadline = self.store.data().call_deadline;
        let mut out = Vec::with_capacity(messages.len());
        for message in messages {
            self.info.within(deadline, what)?;
            let header = Bytes::from(message.header);
            let body = Bytes::from(message.body);
            let batch = self
                .validator
                .decode(&header, arrow::buffer::Buffer::from(body.clone()))
                .map_err(|e| {
                    Error::invalid_argument(format!(
                        "exchanger {:?} emitted invalid output at {what}: {e}",
                        self.info.name
                    ))
                })?;
            let message = Outgoing::data(header, vec![body]);
            out.push(match batch {
                Some(batch) => message.with_batch(batch),
                None => message,
            });
        }
        Ok(out)
    }
}

impl ExchangeSession for WasmSession {
    fn schema_message(&self) -> FlightData {
        self.schema_message.clone()
    }

    fn push(&mut self, header: &Bytes, body: &Bytes) -> Result<Vec<Outgoing>> {
        let what = format!("batch {}", self.batch_index);
        self.batch_index += 1;
        // Dictionaries are small and later batches need them to be checked.
        let is_dictionary = root_as_message(header)
            .is_ok_and(|m| m.header_type() == MessageHeader::DictionaryBatch);
        if is_dictionary {
            decode_input(&mut self.input, header, body, &what)?;
        }
        let session = self.session;
        let outcome = match &self.instance {
            Instance::V0_1(instance) => self
                .info
                .call(&mut self.store, &what, |store| {
                    instance.mallard_exchanger_exchange().session().call_push(
                        store,
                        session,
                        &header[..],
                        &body[..],
                    )
                })
                .and_then(|result| {
                    result.map_err(|e| self.info.refusal(&self.store, &what, e.into()))
                })
                .and_then(|messages| self.validate(messages, &what)),
            Instance::V0_2(..) => {
                let input = (!is_dictionary).then_some((header, body));
                // A session reading on demand gets the header only, and reads what it needs.
                let on_demand = !is_dictionary && self.store.data().input.granted();
                if on_demand {
                    // The guest sizes its placeholders by the header's row count.
                    MessageBounds::default()
                        .check_header(header, body.len())
                        .map_err(|e| crate::bad_input(&what, e))?;
                }
                let sent = if on_demand { &[][..] } else { &body[..] };
                self.emitting_call(&what, input, |instance, store| {
                    instance.mallard_exchanger_exchange().session().call_push(
                        store,
                        session,
                        &header[..],
                        sent,
                    )
                })
            }
        };
        if outcome.is_err() && !is_dictionary {
            decode_input(&mut self.input, header, body, &what)?;
        }
        outcome
    }

    fn finish(&mut self) -> Result<Vec<Outgoing>> {
        let session = self.session;
        match &self.instance {
            Instance::V0_1(instance) => {
                let result = self.info.call(&mut self.store, "finish", |store| {
                    instance
                        .mallard_exchanger_exchange()
                        .session()
                        .call_finish(store, session)
                })?;
                let messages =
                    result.map_err(|e| self.info.refusal(&self.store, "finish", e.into()))?;
                self.validate(messages, "finish")
            }
            Instance::V0_2(..) => self.emitting_call("finish", None, |instance, store| {
                instance
                    .mallard_exchanger_exchange()
                    .session()
                    .call_finish(store, session)
            }),
        }
    }

    fn guest_output(&self) -> String {
        self.store.data().output.text()
    }

    fn guest_memory_bytes(&self) -> usize {
        self.store.data().memory.used_bytes()
    }

    fn stateless(&self) -> bool {
        self.stateless
    }
}

impl WasmSession {
    /// One contract 0.2 call that may emit: opens emits, runs `call`, then
    /// assembles what was emitted (checked against the call's deadline, as 0.1's
    /// output validation is). `input` is the pushed record batch, decoded by the
    /// host only if an emission references its columns.
    fn emitting_call(
        &mut self,
        what: &str,
        input: Option<(&Bytes, &Bytes)>,
        call: impl FnOnce(
            &v0_2::Exchanger,
            &mut Store<StoreState>,
        ) -> wasmtime::Result<std::result::Result<(), v0_2::ExchangeError>>,
    ) -> Result<Vec<Outgoing>> {
        let Instance::V0_2(instance, _) = &self.instance else {
            unreachable!("only contract 0.2 sessions emit")
        };
        self.store.data_mut().emits.open();
        if let Some((header, body)) = input {
            self.store.data_mut().input.pushing(header, body);
        }
        let result = self
            .info
            .call(&mut self.store, what, |store| call(instance, store));
        let emitted = self.store.data_mut().emits.close();
        let (mut decoded_input, read_refused) = self.store.data_mut().input.pushed();
        match read_refused {
            // The client's malformed batch is reported as the client's, whatever the guest did.
            Some(ReadRefused::Input(e)) => return Err(crate::bad_input(what, e)),
            Some(ReadRefused::Misuse(m)) if result.is_ok() => {
                return Err(Error::invalid_argument(format!(
                    "exchanger {:?} at {what}: {m}",
                    self.info.name
                )));
            }
            _ => {}
        }
        let returned = result?;
        let emitted = emitted.map_err(|refused| self.info.emit_refused(what, refused))?;
        returned.map_err(|e| self.info.refusal(&self.store, what, e.into()))?;
        let Instance::V0_2(_, assembler) = &mut self.instance else {
            unreachable!("matched above")
        };
        let deadline = self.store.data().call_deadline;
        let decoder = &mut self.input;
        let mut input_batch = || -> Result<Option<InputBatch>> {
            let Some((header, body)) = input else {
                return Ok(None);
            };
            if decoded_input.is_none() {
                decoded_input = decode_input(decoder, header, body, what)?;
            }
            Ok(decoded_input.clone().map(|batch| InputBatch {
                batch,
                body_bytes: body.len(),
            }))
        };
        let mut out = Vec::new();
        for emission in emitted {
            self.info.within(deadline, what)?;
            assembler.assemble(emission, &mut input_batch, what, &mut out)?;
        }
        Ok(out)
    }

    /// The schema message the exchanger declared in `open`.
    pub fn output_schema(&self) -> Result<SchemaRef> {
        Ok(validated_schema_message(self.schema_message.data_header.clone())?.0)
    }
}

/// What a call needs to know to report a failure; a field of its own so it can be
/// borrowed beside the store.
struct CallInfo {
    name: String,
    call_timeout: Duration,
    max_memory_bytes: usize,
    pool: Option<Arc<MemoryPool>>,
}

impl CallInfo {
    fn call<R>(
        &mut self,
        store: &mut Store<StoreState>,
        what: &str,
        f: impl FnOnce(&mut Store<StoreState>) -> wasmtime::Result<R>,
    ) -> Result<R> {
        store.data_mut().call_deadline = Instant::now() + self.call_timeout;
        // What the memory limit refused is judged per call.
        store.data_mut().memory.denied = None;
        store.set_epoch_deadline(1);
        f(store).map_err(|e| self.classify(store, what, e))
    }

    /// A refusal the guest returned. Returned after the memory limit refused it
    /// memory in this call, it is that limit (an interpreter's `MemoryError`,
    /// SpiderMonkey's "out of memory"), not the exchanger's own verdict.
    fn refusal(
        &self,
        store: &Store<StoreState>,
        what: &str,
        e: mallard_exchanger::ExchangeError,
    ) -> Error {
        let who = format!("exchanger {:?} at {what}", self.name);
        self.memory_exhausted(
            store,
            &who,
            &format!("; the guest reported: {}", guest_text(&e.to_string())),
        )
        .unwrap_or_else(|| exchanger_error(&self.name, what, e))
    }

    /// DeadlineExceeded once checking a call's output runs past `deadline`:
    /// validation counts against the call's deadline, in either contract.
    fn within(&self, deadline: Instant, what: &str) -> Result<()> {
        if Instant::now() > deadline {
            return Err(Error::deadline_exceeded(format!(
                "exchanger {:?} at {what}: its output took past the per-call CPU deadline of \
                 {:?} to validate",
                self.name, self.call_timeout
            )));
        }
        Ok(())
    }

    /// The status of an `emit` the host refused.
    fn emit_refused(&self, what: &str, refused: EmitRefused) -> Error {
        match refused {
            EmitRefused::Misuse(m) => {
                Error::invalid_argument(format!("exchanger {:?} at {what}: {m}", self.name))
            }
            EmitRefused::Exhausted(m) => {
                Error::resource_exhausted(format!("exchanger {:?} at {what}: {m}", self.name))
            }
        }
    }

    fn memory_exhausted(&self, store: &Store<StoreState>, who: &str, tail: &str) -> Option<Error> {
        match store.data().memory.denied? {
            MemoryDenied::Instance => Some(Error::resource_exhausted(format!(
                "{who}: hit the memory limit of {} MiB per instance (--exchanger-memory-mb){tail}",
                self.max_memory_bytes >> 20
            ))),
            MemoryDenied::User => {
                let pool = self.pool.as_ref().map_or(0, |p| p.max_bytes() >> 20);
                Some(Error::resource_exhausted(format!(
                    "{who}: the user's exchanges together hold the {pool} MiB of guest memory \
                     allowed ({}){tail}",
                    crate::quotas::flags::GUEST_MEMORY
                )))
            }
        }
    }

    fn classify(&self, store: &Store<StoreState>, what: &str, e: wasmtime::Error) -> Error {
        let who = format!("exchanger {:?} at {what}", self.name);
        let output = store.data().output.text();
        let tail = if output.is_empty() {
            String::new()
        } else {
            let start = output.len().saturating_sub(512);
            let start = (start..output.len())
                .find(|&i| output.is_char_boundary(i))
                .unwrap_or(0);
            format!("; guest output: {}", output[start..].trim())
        };
        if let Some(stop) = e.downcast_ref::<Stop>() {
            return match stop {
                Stop::Deadline => Error::deadline_exceeded(format!(
                    "{who}: exceeded the per-call CPU deadline of {:?}",
                    self.call_timeout
                )),
                Stop::Cancelled => Error::cancelled(format!("{who}: cancelled")),
            };
        }
        if let Some(denied) = e.downcast_ref::<CapabilityDenied>() {
            return Error::permission_denied(format!("{who}: {denied}"));
        }
        if let Some(exhausted) = self.memory_exhausted(store, &who, &tail) {
            return exhausted;
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::StackOverflow) => {
                Error::resource_exhausted(format!("{who}: wasm stack exhausted"))
            }
            Some(trap) => Error::aborted(format!("{who}: trapped ({trap}){tail}")),
            None => Error::aborted(format!("{who}: failed: {e:#}{tail}")),
        }
    }
}
