//! Host bindings for the `mallard:exchanger` world, generated from `wit/`.
#![allow(missing_docs)] // generated code; the WIT file carries the docs

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "exchanger",
});

pub use exports::mallard::exchanger::exchange::{ExchangeError, Info, IpcMessage};

impl From<ExchangeError> for mallard_exchanger::ExchangeError {
    fn from(e: ExchangeError) -> Self {
        match e {
            ExchangeError::InvalidParams(m) => Self::InvalidParams(m),
            ExchangeError::InvalidInput(m) => Self::InvalidInput(m),
            ExchangeError::Failed(m) => Self::Failed(m),
        }
    }
}
