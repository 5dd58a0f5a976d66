//! The guest SDK for Mallard exchangers.
//!
//! An exchanger is a streaming transform of Arrow record batches. Write one by
//! implementing [`Exchanger`] on a type that holds your per-stream state, then export
//! it with [`export_exchanger!`]:
//!
//! ```ignore
//! use mallard_exchanger::prelude::*;
//!
//! pub struct Identity(SchemaRef);
//!
//! impl Exchanger for Identity {
//!     const INFO: Info = Info { name: "identity", version: "1.0.0", description: "returns its input" };
//!     fn open(input: SchemaRef, _params: &Params) -> Result<Self, ExchangeError> { Ok(Self(input)) }
//!     fn output_schema(&self) -> SchemaRef { self.0.clone() }
//!     fn push(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>, ExchangeError> { Ok(vec![batch]) }
//! }
//!
//! export_exchanger!(Identity);
//! ```
//!
//! Built for `wasm32-wasip2`, the macro exports the `mallard:exchanger@0.2.0` WIT
//! world (or 0.1 with the feature `contract-0-1`) and the SDK takes care of the
//! Arrow IPC messages that cross the sandbox boundary. Under 0.2, an output column
//! that is one of the input batch's own columns (`batch.column(k).clone()`) is
//! not sent back at all: the host reuses the column it already holds. Built
//! natively, the macro does nothing and the host calls the same type through
//! [`native::Builtin`], which is how Mallard runs built-in exchangers with the sandbox
//! off: one source, two builds, no logic written twice.

mod error;
mod flat_validation;
pub mod footprint;
pub mod ipc;
pub mod native;
mod params;
pub mod raw;
pub mod unread;

#[cfg(all(target_arch = "wasm32", feature = "contract-0-1"))]
#[doc(hidden)]
pub mod guest;
#[cfg(all(target_arch = "wasm32", not(feature = "contract-0-1")))]
#[doc(hidden)]
#[path = "guest_v0_2.rs"]
pub mod guest;

pub use arrow_array;
pub use arrow_schema;
pub use error::ExchangeError;
pub use params::Params;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

/// What an exchanger says about itself. `name` is what clients put in `do_exchange`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// Registry name (`[a-z0-9_]+`), e.g. `add_processed`.
    pub name: &'static str,
    /// The exchanger's own semantic version.
    pub version: &'static str,
    /// One line for humans.
    pub description: &'static str,
}

/// A streaming transform over one input stream.
///
/// The host calls [`Exchanger::open`] once per stream with the input schema, then
/// [`Exchanger::push`] for each batch in order, then [`Exchanger::finish`] once. Every
/// batch returned must match [`Exchanger::output_schema`]; the host checks.
pub trait Exchanger: Sized + 'static {
    /// The self-description shown by `list_exchangers`.
    const INFO: Info;

    /// Start a stream of batches following `input`, configured by the client's `params`.
    fn open(input: SchemaRef, params: &Params) -> Result<Self, ExchangeError>;

    /// The schema of every batch this session emits.
    fn output_schema(&self) -> SchemaRef;

    /// Transform one batch into zero or more output batches.
    fn push(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>, ExchangeError>;

    /// End of input: emit whatever is still held. Stateless exchangers keep the default.
    fn finish(&mut self) -> Result<Vec<RecordBatch>, ExchangeError> {
        Ok(Vec::new())
    }

    /// Whether this session's output for a batch depends only on that batch and
    /// the params: no state kept between pushes, nothing emitted by `finish`.
    /// Say `true` and the host may spread one stream over several instances, each
    /// opened with the same schema and params, merging their output in input
    /// order. Asked once, after `open` (so it may depend on the params).
    fn stateless(&self) -> bool {
        false
    }

    /// The input columns `push` reads (indices into the input schema), when it
    /// reads only some. Under contract 0.2 only those enter the sandbox: a batch's
    /// other columns stay in the host. `push` still receives every column, but an
    /// unread one is a placeholder of zeros (empty strings, `false`) that may only
    /// be passed through whole (`batch.column(k).clone()`, `batch.columns().to_vec()`,
    /// which sends the real column) or left out; an output column sliced from one
    /// is refused, and one computed from it would be computed from zeros. Columns
    /// of nested, dictionary, view or wide types are always read. Asked once, after
    /// `open`. `None` (the default): every column is read.
    fn reads(&self) -> Option<Vec<usize>> {
        None
    }
}

/// Everything an exchanger source file needs.
pub mod prelude {
    pub use crate::ipc::Message;
    pub use crate::raw::{ColumnSource, Emission, RawExchanger};
    pub use crate::{
        ExchangeError, Exchanger, Info, Params, export_exchanger, export_raw_exchanger,
    };
    pub use arrow_array::{Array, ArrayRef, RecordBatch};
    pub use arrow_schema::{DataType, Field, Schema, SchemaRef};
    pub use std::sync::Arc;
}

/// Exports an [`Exchanger`] as the component's `mallard:exchanger/exchange` interface.
///
/// Compiles to nothing on native targets, so the same crate can also be linked into
/// the host as a built-in.
#[macro_export]
macro_rules! export_exchanger {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type MallardExport = $crate::guest::Adapter<$crate::raw::Typed<$ty>>;
    $crate::__export_exchanger_impl!(MallardExport with_types_in $crate::guest::bindings);
        };
    };
}

/// Exports a [`raw::RawExchanger`] (message-level) as the component's interface.
#[macro_export]
macro_rules! export_raw_exchanger {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type MallardExport = $crate::guest::Adapter<$ty>;
    $crate::__export_exchanger_impl!(MallardExport with_types_in $crate::guest::bindings);
        };
    };
}
