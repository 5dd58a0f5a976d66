//! The wasm side: WIT bindings and the adapter from [`RawExchanger`] to the exported
//! `mallard:exchanger/exchange` interface. Only compiled for wasm32.

use crate::ipc::Message;
use crate::raw::RawExchanger;
use crate::{ExchangeError, Params};
use std::cell::RefCell;
use std::marker::PhantomData;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "exchanger",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "mallard_exchanger::guest::bindings",
    });
}

use bindings::exports::mallard::exchanger::exchange::{self as wit, GuestSession};
use bindings::mallard::exchanger::types as wit_types;

/// Implements the exported interface for any [`RawExchanger`].
pub struct Adapter<R>(PhantomData<R>);

/// One session behind the WIT resource (resource methods take `&self`).
pub struct SessionState<R>(RefCell<R>);

fn to_wit(e: ExchangeError) -> wit_types::ExchangeError {
    match e {
        ExchangeError::InvalidParams(m) => wit_types::ExchangeError::InvalidParams(m),
        ExchangeError::InvalidInput(m) => wit_types::ExchangeError::InvalidInput(m),
        ExchangeError::Failed(m) => wit_types::ExchangeError::Failed(m),
    }
}

fn to_wit_messages(messages: Vec<Message>) -> Vec<wit_types::IpcMessage> {
    messages
        .into_iter()
        .map(|Message { header, body }| wit_types::IpcMessage { header, body })
        .collect()
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
        Ok(wit::Session::new(SessionState(RefCell::new(raw))))
    }
}

impl<R: RawExchanger> GuestSession for SessionState<R> {
    fn output_schema(&self) -> Vec<u8> {
        self.0.borrow().output_schema()
    }

    fn push(
        &self,
        header: Vec<u8>,
        body: Vec<u8>,
    ) -> Result<Vec<wit_types::IpcMessage>, wit_types::ExchangeError> {
        let message = Message { header, body };
        self.0
            .borrow_mut()
            .push(message)
            .map(to_wit_messages)
            .map_err(to_wit)
    }

    fn finish(&self) -> Result<Vec<wit_types::IpcMessage>, wit_types::ExchangeError> {
        self.0
            .borrow_mut()
            .finish()
            .map(to_wit_messages)
            .map_err(to_wit)
    }
}
