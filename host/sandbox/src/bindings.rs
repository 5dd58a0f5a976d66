//! Host bindings for the `mallard:exchanger` worlds: 0.1 (`wit/`) at the top,
//! 0.2 (`wit/0.2.0`) in [`v0_2`].
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

/// Host bindings for contract 0.2 (`wit/0.2.0`): the guest imports `output`
/// (whose `emit` the host implements, see [`crate::emit`]) and exports `exchange`.
pub mod v0_2 {
    #![allow(missing_docs)] // generated code; the WIT file carries the docs

    wasmtime::component::bindgen!({
        path: "../../wit/0.2.0",
        world: "exchanger",
    });

    pub use mallard::exchanger::types::{ColumnSource, ExchangeError, Info, IpcMessage};

    impl From<ExchangeError> for mallard_exchanger::ExchangeError {
        fn from(e: ExchangeError) -> Self {
            match e {
                ExchangeError::InvalidParams(m) => Self::InvalidParams(m),
                ExchangeError::InvalidInput(m) => Self::InvalidInput(m),
                ExchangeError::Failed(m) => Self::Failed(m),
            }
        }
    }
}
