//! Running an exchanger natively, without the sandbox (built-ins only).
//!
//! The host links built-in exchanger crates and drives them through [`Builtin`];
//! batches stay `RecordBatch`es, no IPC is involved.

use crate::unread::{self, Unread};
use crate::{ExchangeError, Exchanger, Info, Params};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

/// A running native session, type-erased.
pub trait Session: Send {
    /// See [`Exchanger::output_schema`].
    fn output_schema(&self) -> SchemaRef;
    /// See [`Exchanger::push`].
    fn push(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>, ExchangeError>;
    /// See [`Exchanger::finish`].
    fn finish(&mut self) -> Result<Vec<RecordBatch>, ExchangeError>;
    /// See [`Exchanger::stateless`].
    fn stateless(&self) -> bool;
}

impl<E: Exchanger + Send> Session for E {
    fn output_schema(&self) -> SchemaRef {
        Exchanger::output_schema(self)
    }
    fn push(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>, ExchangeError> {
        Exchanger::push(self, batch)
    }
    fn finish(&mut self) -> Result<Vec<RecordBatch>, ExchangeError> {
        Exchanger::finish(self)
    }
    fn stateless(&self) -> bool {
        Exchanger::stateless(self)
    }
}

/// An exchanger that reads only some columns, run natively as the sandbox runs
/// it: `push` sees placeholders for the unread columns ([`crate::unread`]), and
/// the columns it passes through are swapped back for the real ones.
struct ReadingSome<E> {
    exchanger: E,
    unread: Unread,
}

impl<E: Exchanger + Send> Session for ReadingSome<E> {
    fn output_schema(&self) -> SchemaRef {
        self.exchanger.output_schema()
    }
    fn push(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>, ExchangeError> {
        let seen = self.unread.view(&batch)?;
        let placeholders = seen.columns().to_vec();
        let out = self.exchanger.push(seen)?;
        unread::restore(&self.unread, out, &placeholders, batch.columns())
    }
    fn finish(&mut self) -> Result<Vec<RecordBatch>, ExchangeError> {
        let out = self.exchanger.finish()?;
        unread::restore(&self.unread, out, &[], &[])
    }
    fn stateless(&self) -> bool {
        self.exchanger.stateless()
    }
}

type OpenFn = fn(SchemaRef, &Params) -> Result<Box<dyn Session>, ExchangeError>;

/// A built-in exchanger: its description and how to open a native session.
#[derive(Clone, Copy)]
pub struct Builtin {
    /// The exchanger's self-description (the same as its wasm build reports).
    pub info: Info,
    open: OpenFn,
}

impl Builtin {
    /// The built-in form of `E`.
    pub fn of<E: Exchanger + Send>() -> Self {
        fn open<E: Exchanger + Send>(
            input: SchemaRef,
            params: &Params,
        ) -> Result<Box<dyn Session>, ExchangeError> {
            let exchanger = E::open(input.clone(), params)?;
            Ok(match exchanger.reads() {
                None => Box::new(exchanger),
                Some(reads) => Box::new(ReadingSome {
                    unread: Unread::new(input, &reads)?,
                    exchanger,
                }),
            })
        }
        Self {
            info: E::INFO,
            open: open::<E>,
        }
    }

    /// Opens a native session.
    pub fn open(
        &self,
        input: SchemaRef,
        params: &Params,
    ) -> Result<Box<dyn Session>, ExchangeError> {
        (self.open)(input, params)
    }
}

impl std::fmt::Debug for Builtin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builtin").field("info", &self.info).finish()
    }
}
