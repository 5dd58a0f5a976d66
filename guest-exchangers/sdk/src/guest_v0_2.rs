//! The wasm side of contract 0.2: WIT bindings and the adapter from
//! [`RawExchanger`] to the exported `mallard:exchanger/exchange@0.2.0` interface.
//! Output leaves through the imported `emit`, one call per output batch; the
//! host copies it before `emit` returns, so the batch's memory is free again
//! when the next one is built. Only compiled for wasm32 (the default contract).

use crate::ipc::Message;
use crate::raw::{ColumnSource, Emission, RawExchanger};
use crate::{ExchangeError, Params};
use std::cell::RefCell;
use std::marker::PhantomData;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/0.2.0",
        world: "exchanger",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "mallard_exchanger::guest::bindings",
    });
}

use bindings::exports::mallard::exchanger::exchange::{self as wit, GuestSession};
use bindings::mallard::exchanger::types as wit_types;
use bindings::mallard::exchanger::{input, output};

/// Implements the exported interface for any [`RawExchanger`].
pub struct Adapter<R>(PhantomData<R>);

/// One session behind the WIT resource (resource methods take `&self`), and
/// whether the host granted it input on demand.
pub struct SessionState<R>(RefCell<R>, bool);

fn to_wit(e: ExchangeError) -> wit_types::ExchangeError {
    match e {
        ExchangeError::InvalidParams(m) => wit_types::ExchangeError::InvalidParams(m),
        ExchangeError::InvalidInput(m) => wit_types::ExchangeError::InvalidInput(m),
        ExchangeError::Failed(m) => wit_types::ExchangeError::Failed(m),
    }
}

/// Hands each emission to the host; stops at the first it refuses (the host
/// has ended the stream and reports why).
fn send(emissions: Vec<Emission>) -> Result<(), wit_types::ExchangeError> {
    for Emission { columns, messages } in emissions {
        let columns: Vec<wit_types::ColumnSource> = columns
            .into_iter()
            .map(|c| match c {
                ColumnSource::Input(k) => wit_types::ColumnSource::Input(k),
                ColumnSource::Emitted => wit_types::ColumnSource::Emitted,
            })
            .collect();
        let messages: Vec<wit_types::IpcMessage> = messages
            .into_iter()
            .map(|Message { header, body }| wit_types::IpcMessage { header, body })
            .collect();
        output::emit(&columns, &messages).map_err(|refused| {
            wit_types::ExchangeError::Failed(format!("the host refused an emit: {refused}"))
        })?;
    }
    Ok(())
}

impl<R: RawExchanger> wit::Guest for Adapter<R> {
    type Session = SessionState<R>;

    fn describe() -> wit_types::Info {
        wit_types::Info {
            name: R::INFO.name.into(),
            version: R::INFO.version.into(),
            description: R::INFO.description.into(),
        }
    }

    fn open(
        input_schema: Vec<u8>,
        params: Vec<(String, String)>,
    ) -> Result<wit::Session, wit_types::ExchangeError> {
        let raw = R::open(&input_schema, &Params::new(params)).map_err(to_wit)?;
        let on_demand = raw.reads().is_some() && input::read_on_demand();
        Ok(wit::Session::new(SessionState(
            RefCell::new(raw),
            on_demand,
        )))
    }
}

impl<R: RawExchanger> GuestSession for SessionState<R> {
    fn output_schema(&self) -> Vec<u8> {
        self.0.borrow().output_schema()
    }

    fn push(&self, header: Vec<u8>, body: Vec<u8>) -> Result<(), wit_types::ExchangeError> {
        let is_batch = arrow_ipc::root_as_message(&header)
            .is_ok_and(|m| m.header_type() == arrow_ipc::MessageHeader::RecordBatch);
        let mut raw = self.0.borrow_mut();
        let emissions = if self.1 && is_batch {
            raw.push_reading(&header, &mut |indices| {
                input::read_columns(indices)
                    .map(|m| Message {
                        header: m.header,
                        body: m.body,
                    })
                    .map_err(|refused| {
                        ExchangeError::Failed(format!("the host refused read-columns: {refused}"))
                    })
            })
        } else {
            raw.push_emissions(Message { header, body })
        }
        .map_err(to_wit)?;
        drop(raw);
        send(emissions)
    }

    fn finish(&self) -> Result<(), wit_types::ExchangeError> {
        let emissions = self.0.borrow_mut().finish_emissions().map_err(to_wit)?;
        send(emissions)
    }

    fn stateless(&self) -> bool {
        self.0.borrow().stateless()
    }
}
