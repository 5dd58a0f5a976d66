//! Exchangers as scalar functions in SQL, vectorised per DuckDB chunk:
//!
//! ```sql
//! SELECT exchanger_varchar('{"exchanger": "pseudonymize",
//!                            "params": {"column": "arg1", "key": "…"}}', carrier)
//! FROM flights
//! ```
//!
//! `exchanger_varchar`, `_bigint`, `_integer`, `_double` and `_boolean` differ in
//! their result type only: DuckDB's C API fixes a scalar function's return type
//! when it is registered, so the caller picks it by name. The first argument is
//! the exchange (one stage: a name or a JSON stage, as for `do_exchange`); the
//! others reach the exchanger as the columns `arg1`, `arg2`, …; the value is the
//! output's last column, which must have the function's type (checked when the
//! query is bound) and one value per row (checked on every chunk).
//!
//! Only exchangers whose session says it is stateless (contract 0.2) are
//! accepted: DuckDB evaluates chunks on several threads in no particular order.
//! The call holds one of the caller's exchange slots while it runs and opens
//! one instance; each further DuckDB thread opens its own while the stage stays
//! within `--exchange-instances` and the caller has an extra-instance slot free
//! (`--max-extra-instances-per-user`, as a parallel stage's), and shares the
//! first one otherwise. Every instance is charged to the caller's guest-memory
//! pool. The caller, rights, namespaces and
//! sandbox budgets are those of `exchange()`: see [`crate::sql`].

use crate::Exchanges;
use crate::sql::SqlCaller;
use arrow::array::{ArrayRef, RecordBatch};
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, SchemaRef};
use bytes::Bytes;
use mallard_access::slots::Slot;
use mallard_core::{Error, Result};
use mallard_db::scalar_function::{self, BoundScalar, ScalarEvaluator, ScalarSource};
use mallard_db::scopes::Scope;
use mallard_exchanger::ipc::{MessageDecoder, MessageEncoder};
use mallard_protocol::receipt::StageReceipt;
use mallard_protocol::{ExchangeRequest, Receipt};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The functions, by result type.
pub const FUNCTIONS: [(&str, DataType); 5] = [
    ("exchanger_varchar", DataType::Utf8),
    ("exchanger_bigint", DataType::Int64),
    ("exchanger_integer", DataType::Int32),
    ("exchanger_double", DataType::Float64),
    ("exchanger_boolean", DataType::Boolean),
];

/// Longest argument name accepted.
const MAX_ARGUMENT_NAME_BYTES: usize = 255;

/// A JSON descriptor's `"arguments": [names…]`, taken out of it (the rest is an
/// ordinary stage); `None` when it names none.
fn argument_names(descriptor: &str) -> Result<(String, Option<Vec<String>>)> {
    let trimmed = descriptor.trim_start();
    if !trimmed.starts_with('{') {
        return Ok((descriptor.to_owned(), None));
    }
    let mut stage: serde_json::Map<String, serde_json::Value> = serde_json::from_str(trimmed)
        .map_err(|e| Error::invalid_argument(format!("the exchanger's JSON: {e}")))?;
    let Some(names) = stage.remove("arguments") else {
        return Ok((descriptor.to_owned(), None));
    };
    let bad = || {
        Error::invalid_argument(
            "\"arguments\" names the arguments: a list of distinct, non-empty names",
        )
    };
    let names: Vec<String> = serde_json::from_value(names).map_err(|_| bad())?;
    for (i, name) in names.iter().enumerate() {
        if name.is_empty()
            || name.len() > MAX_ARGUMENT_NAME_BYTES
            || name.chars().any(char::is_control)
            || names[..i].contains(name)
        {
            return Err(bad());
        }
    }
    Ok((serde_json::Value::Object(stage).to_string(), Some(names)))
}

/// `arguments` with the columns renamed to `names`, one name per argument.
fn named(arguments: &SchemaRef, names: Vec<String>) -> Result<SchemaRef> {
    if names.len() != arguments.fields().len() {
        return Err(Error::invalid_argument(format!(
            "\"arguments\" names {} columns for {} arguments",
            names.len(),
            arguments.fields().len()
        )));
    }
    let fields: Vec<_> = arguments
        .fields()
        .iter()
        .zip(names)
        .map(|(field, name)| field.as_ref().clone().with_name(name))
        .collect();
    Ok(Arc::new(arrow::datatypes::Schema::new(fields)))
}

/// The function to call for `result`, if one returns it.
fn function_for(result: &DataType) -> Option<&'static str> {
    FUNCTIONS
        .iter()
        .find(|(_, t)| t == result)
        .map(|(name, _)| *name)
}

/// Registers every `exchanger_*` function in `db`.
pub fn register(db: &mallard_db::Database) -> Result<()> {
    for (name, result) in FUNCTIONS {
        scalar_function::register(
            &db.connect_raw()?,
            name,
            result,
            Arc::new(ScalarExchange),
            db.scopes.clone(),
            db.connect_raw()?,
        )?;
    }
    Ok(())
}

struct ScalarExchange;

impl ScalarSource for ScalarExchange {
    fn bind(
        &self,
        scope: Option<Scope>,
        descriptor: String,
        arguments: SchemaRef,
        result: &DataType,
    ) -> Result<Box<dyn BoundScalar>> {
        let (caller, exchanges) = SqlCaller::of(scope, "exchanger_*()")?;
        let (descriptor, names) = argument_names(&descriptor)?;
        let arguments = match names {
            Some(names) => named(&arguments, names)?,
            None => arguments,
        };
        let request = ExchangeRequest::parse(descriptor.as_bytes())?;
        if request.stages.len() != 1 {
            return Err(Error::invalid_argument(
                "a scalar call runs one exchanger, not a pipeline",
            ));
        }
        if arguments.fields().is_empty() {
            return Err(Error::invalid_argument(
                "give the exchanger at least one argument: exchanger_…(EXCHANGER, value, …)",
            ));
        }
        let probed = crate::sql::probe(&exchanges, caller.principal(), &request, &arguments)?;
        let version = probed
            .versions
            .into_iter()
            .next()
            .expect("one stage, one version");
        let name = version.describe();
        if !probed.stateless {
            return Err(Error::invalid_argument(format!(
                "{name} keeps state from one batch to the next; a scalar call needs an \
                 exchanger that says it is stateless (contract 0.2), since DuckDB evaluates \
                 chunks on several threads in any order; use exchange() instead"
            )));
        }
        let output = probed.schema;
        let last = output
            .fields()
            .last()
            .ok_or_else(|| Error::invalid_argument(format!("{name} has no output column")))?;
        if last.data_type() != result {
            let instead = function_for(last.data_type())
                .map(|f| format!("; call {f}() instead"))
                .unwrap_or_default();
            return Err(Error::invalid_argument(format!(
                "{name}'s last output column {:?} is {}, not {result}{instead}",
                last.name(),
                last.data_type()
            )));
        }
        if crate::lanes::has_dictionaries(&output) {
            return Err(Error::invalid_argument(format!(
                "{name}'s output has dictionary columns; a scalar call cannot use them"
            )));
        }
        let [stage] = <[_; 1]>::try_from(request.stages).expect("checked: one stage");
        Ok(Box::new(BoundScalarExchange {
            caller: (*caller).clone(),
            exchanges,
            version,
            params: stage.params,
            header: Bytes::from(MessageEncoder::new(arguments.clone()).schema_header()),
            arguments,
            output,
            running: Arc::default(),
        }))
    }
}

/// What the call's instances did, for its receipt; the slot it holds; and its
/// first instance, which threads share when no further one may open.
#[derive(Default)]
struct Running {
    slot: Option<Slot>,
    receipt: StageReceipt,
    started: Option<Instant>,
    first: Option<SharedSession>,
}

/// An instance, used by one DuckDB thread or shared by several; finished when
/// the last of them lets go.
type SharedSession = Arc<Mutex<FinishOnDrop>>;

/// A session that is finished when dropped.
struct FinishOnDrop(Box<dyn crate::ExchangeSession>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        let _ = self.0.finish();
    }
}

struct BoundScalarExchange {
    caller: SqlCaller,
    exchanges: Arc<Exchanges>,
    version: Arc<crate::catalog::Version>,
    params: Vec<(String, String)>,
    header: Bytes,
    arguments: SchemaRef,
    output: SchemaRef,
    /// Shared with the call's evaluators, which count into its receipt.
    running: Arc<Mutex<Running>>,
}

impl BoundScalarExchange {
    fn open_session(&self) -> Result<SharedSession> {
        let session = self.version.open_session(
            self.exchanges.catalog.engine(),
            (&self.header, self.arguments.clone()),
            &self.params,
            self.caller.cancellation(),
            self.exchanges
                .guest_memory
                .of(&self.caller.principal().user),
        )?;
        Ok(Arc::new(Mutex::new(FinishOnDrop(session))))
    }

    fn evaluator(&self, session: SharedSession, extra: Option<Slot>) -> Box<dyn ScalarEvaluator> {
        // SAFETY: every output message was produced by a native built-in or
        // decoded from the guest with full validation by the session (as for
        // `exchange()`'s scan).
        let decoder = unsafe { MessageDecoder::new_unvalidated(self.output.clone()) };
        Box::new(Evaluator {
            session,
            _extra: extra,
            arguments: self.arguments.clone(),
            encoder: MessageEncoder::new(self.arguments.clone()),
            decoder,
            running: self.running.clone(),
        })
    }
}

impl BoundScalar for BoundScalarExchange {
    /// The first DuckDB thread opens the call's instance under the caller's
    /// exchange slot. Each further thread opens its own only while the stage
    /// stays within `--exchange-instances` and the caller has one of their
    /// `--max-extra-instances-per-user` slots free (held until the query ends);
    /// otherwise it shares the first instance. Never a refusal for it.
    fn open(&self) -> Result<Box<dyn ScalarEvaluator>> {
        let user = &self.caller.principal().user;
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let Some(first) = running.first.clone() else {
            if running.slot.is_none() {
                running.slot = Some(self.exchanges.slots.acquire(user)?);
                running.started = Some(Instant::now());
                running.receipt.exchanger = self.version.describe();
            }
            // Opened under the lock: a second thread waits for it to share.
            let session = self.open_session()?;
            running.first = Some(session.clone());
            running.receipt.instances += 1;
            return Ok(self.evaluator(session, None));
        };
        let within_stage =
            (running.receipt.instances as usize) < self.exchanges.parallelism.per_stage;
        let extra = within_stage
            .then(|| {
                self.exchanges
                    .parallelism
                    .extra
                    .acquire_up_to(user, 1)
                    .pop()
            })
            .flatten();
        let Some(extra) = extra else {
            return Ok(self.evaluator(first, None));
        };
        running.receipt.instances += 1;
        drop(running);
        let session = self.open_session()?;
        Ok(self.evaluator(session, Some(extra)))
    }
}

impl Drop for BoundScalarExchange {
    fn drop(&mut self) {
        let running = std::mem::take(&mut *self.running.lock().unwrap_or_else(|p| p.into_inner()));
        if let (Some(started), Some(_slot)) = (running.started, running.slot) {
            let wall_ms = started.elapsed().as_secs_f64() * 1e3;
            self.caller.add_receipt(Receipt {
                stages: vec![running.receipt],
                wall_ms,
            });
        }
    }
}

/// One DuckDB thread's use of an instance (its own, or the call's first).
struct Evaluator {
    session: SharedSession,
    /// The extra-instance slot its own instance holds, if it has one.
    _extra: Option<Slot>,
    /// The arguments' schema the exchanger was opened with.
    arguments: SchemaRef,
    encoder: MessageEncoder,
    decoder: MessageDecoder,
    running: Arc<Mutex<Running>>,
}

impl ScalarEvaluator for Evaluator {
    fn evaluate(&mut self, arguments: RecordBatch) -> Result<ArrayRef> {
        // The columns under the names the exchanger was opened with.
        let arguments = RecordBatch::try_new(self.arguments.clone(), arguments.columns().to_vec())?;
        let rows = arguments.num_rows();
        let mut messages = Vec::new();
        self.encoder.encode(&arguments, &mut messages)?;
        let started = Instant::now();
        let (mut outputs, mut bytes_in) = (Vec::new(), 0);
        // One lock for the chunk: a shared instance serves one thread's chunk at a time.
        let memory = {
            let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
            for message in messages {
                bytes_in += message.header.len() + message.body.len();
                let (header, body) = (Bytes::from(message.header), Bytes::from(message.body));
                outputs.extend(session.0.push(&header, &body)?);
            }
            session.0.guest_memory_bytes()
        };
        let wall = started.elapsed();
        let mut values = None;
        let mut bytes_out = 0;
        let batches_out = outputs.len() as u64;
        for mut message in outputs {
            bytes_out += message.ipc_len();
            // A batch this server validated or built is taken as it is.
            let batch = match message.batch.take() {
                Some(batch) => Some(batch),
                None => {
                    let message = message.into_flight_data();
                    self.decoder
                        .decode(&message.data_header, Buffer::from(message.data_body))
                        .map_err(|e| Error::invalid_argument(format!("exchanger output: {e}")))?
                }
            };
            if let Some(batch) = batch {
                if values.is_some() {
                    return Err(Error::invalid_argument(
                        "a scalar call's exchanger answered one batch with several",
                    ));
                }
                values = Some(batch);
            }
        }
        let batch = values.ok_or_else(|| {
            Error::invalid_argument("a scalar call's exchanger answered a batch with nothing")
        })?;
        if batch.num_rows() != rows {
            return Err(Error::invalid_argument(format!(
                "the exchanger returned {} rows for {rows}",
                batch.num_rows()
            )));
        }
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let receipt = &mut running.receipt;
        receipt.rows_in += rows as u64;
        receipt.rows_out += rows as u64;
        receipt.batches_in += 1;
        receipt.batches_out += batches_out;
        receipt.bytes_in += bytes_in as u64;
        receipt.bytes_out += bytes_out as u64;
        receipt.wall_ms += wall.as_secs_f64() * 1e3;
        receipt.peak_memory_bytes = receipt.peak_memory_bytes.max(memory as u64);
        Ok(batch.column(batch.num_columns() - 1).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn arguments_are_named_by_the_descriptor_or_numbered() {
        let (rest, names) = argument_names("pseudonymize").unwrap();
        assert_eq!((rest.as_str(), names), ("pseudonymize", None));
        let (rest, names) =
            argument_names(r#"{"exchanger": "x", "arguments": ["carrier", "delay"]}"#).unwrap();
        assert_eq!(rest, r#"{"exchanger":"x"}"#);
        assert_eq!(names.unwrap(), ["carrier", "delay"]);
        for bad in [
            r#"{"exchanger": "x", "arguments": ["a", "a"]}"#,
            r#"{"exchanger": "x", "arguments": [""]}"#,
            r#"{"exchanger": "x", "arguments": ["a\nb"]}"#,
            r#"{"exchanger": "x", "arguments": "a"}"#,
            r#"{"exchanger": "x", "arguments": [1]}"#,
            r#"{"exchanger": "x", "#,
        ] {
            assert!(argument_names(bad).is_err(), "{bad}");
        }
        let long = "n".repeat(MAX_ARGUMENT_NAME_BYTES + 1);
        let at_limit = "n".repeat(MAX_ARGUMENT_NAME_BYTES);
        let descriptor = |name: &str| format!(r#"{{"exchanger": "x", "arguments": ["{name}"]}}"#);
        assert!(argument_names(&descriptor(&long)).is_err());
        assert!(argument_names(&descriptor(&at_limit)).is_ok());
    }

    #[test]
    fn naming_needs_one_name_per_argument() {
        let numbered = Arc::new(Schema::new(vec![
            Field::new("arg1", DataType::Utf8, true),
            Field::new("arg2", DataType::Int32, true),
        ]));
        let renamed = named(&numbered, vec!["carrier".into(), "delay".into()]).unwrap();
        assert_eq!(renamed.field(1).name(), "delay");
        assert_eq!(renamed.field(1).data_type(), &DataType::Int32);
        assert!(named(&numbered, vec!["carrier".into()]).is_err());
    }
}
