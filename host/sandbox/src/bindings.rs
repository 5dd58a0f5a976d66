//! Host bindings for the `mallard:exchanger` worlds: 0.1 (`wit/`) at the top,
//! 0.2 (`wit/0.2.0`) in [`v0_2`].
#![allow(missing_docs)] // generated code; the WIT file carries the docs

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "exchanger",
});

pub use exports::mallard::exchanger::exchange::{ExchangeError, Info, IpcMessage};

/// The SDK's error from a contract's generated `exchange-error` (each contract
/// generates its own type of the same cases).
macro_rules! sdk_error_from {
    ($generated:ty) => {
        impl From<$generated> for mallard_exchanger::ExchangeError {
            fn from(e: $generated) -> Self {
                type E = $generated;
                match e {
                    E::InvalidParams(m) => Self::InvalidParams(m),
                    E::InvalidInput(m) => Self::InvalidInput(m),
                    E::Failed(m) => Self::Failed(m),
                }
            }
        }
    };
}

sdk_error_from!(ExchangeError);
sdk_error_from!(v0_2::ExchangeError);

/// Host bindings for contract 0.2 (`wit/0.2.0`): the guest imports `output`
/// (whose `emit` the host implements, see [`crate::emit`]) and exports `exchange`.
pub mod v0_2 {
    #![allow(missing_docs)] // generated code; the WIT file carries the docs

    wasmtime::component::bindgen!({
        path: "../../wit/0.2.0",
        world: "exchanger",
    });

    pub use mallard::exchanger::types::{ColumnSource, ExchangeError, Info, IpcMessage};
}
