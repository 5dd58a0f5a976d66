//! Contract 0.2's `emit` import: what a guest emits during `push` and `finish`
//! is copied out of its memory when it calls, and held here until the call
//! returns, bounded per call. The exchange layer validates and assembles it.

use crate::bindings::v0_2::mallard::exchanger::output::Host;
pub use crate::bindings::v0_2::mallard::exchanger::types::{ColumnSource, IpcMessage};
use crate::store::StoreState;
pub use mallard_assemble::Emitted;
use mallard_exchanger::ipc::Message;

/// Emits one guest call may make: a batch split into many small ones is
/// fine, a guest emitting one row at a time a million times is not.
pub const MAX_EMITS_PER_CALL: usize = 4_096;

/// Why the host refused an `emit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmitRefused {
    /// Emitted where the contract does not allow it (`open`, `output-schema`).
    Misuse(String),
    /// More than a call may emit, in count or bytes.
    Exhausted(String),
}

/// What one store's guest has emitted in the current call.
pub struct Emits {
    open: bool,
    emitted: Vec<Emitted>,
    bytes: usize,
    max_bytes: usize,
    refused: Option<EmitRefused>,
}

impl Emits {
    /// Closed to emits until a call opens them; at most `max_bytes` per call.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            open: false,
            emitted: Vec::new(),
            bytes: 0,
            max_bytes,
            refused: None,
        }
    }

    /// Starts a call that may emit (`push`, `finish`).
    pub fn open(&mut self) {
        self.open = true;
        self.emitted.clear();
        self.bytes = 0;
        self.refused = None;
    }

    /// Ends the call: what it emitted, or why an emit was refused.
    pub fn close(&mut self) -> Result<Vec<Emitted>, EmitRefused> {
        self.open = false;
        self.bytes = 0;
        let emitted = std::mem::take(&mut self.emitted);
        match self.refused.take() {
            Some(refused) => Err(refused),
            None => Ok(emitted),
        }
    }

    /// The refusal recorded outside any call (an emit from `open`), if any.
    pub fn refused_outside_calls(&mut self) -> Option<EmitRefused> {
        if self.open {
            return None;
        }
        self.emitted.clear();
        self.refused.take()
    }

    fn accept(
        &mut self,
        columns: Vec<ColumnSource>,
        messages: Vec<IpcMessage>,
    ) -> Result<(), String> {
        if let Some(refused) = &self.refused {
            return Err(describe(refused));
        }
        let refusal = if !self.open {
            Some(EmitRefused::Misuse(
                "emit called outside push and finish (from open or output-schema)".into(),
            ))
        } else if self.emitted.len() >= MAX_EMITS_PER_CALL {
            Some(EmitRefused::Exhausted(format!(
                "more than {MAX_EMITS_PER_CALL} emits in one call"
            )))
        } else {
            let bytes: usize = messages.iter().map(|m| m.header.len() + m.body.len()).sum();
            self.bytes = self.bytes.saturating_add(bytes);
            (self.bytes > self.max_bytes).then(|| {
                EmitRefused::Exhausted(format!(
                    "more than {} MiB emitted in one call",
                    self.max_bytes >> 20
                ))
            })
        };
        match refusal {
            Some(refused) => {
                let text = describe(&refused);
                self.emitted.clear();
                self.refused = Some(refused);
                Err(text)
            }
            None => {
                let messages = messages
                    .into_iter()
                    .map(|m| Message {
                        header: m.header,
                        body: m.body,
                    })
                    .collect();
                let columns = columns
                    .into_iter()
                    .map(|c| match c {
                        ColumnSource::Emitted => mallard_assemble::ColumnSource::Emitted,
                        ColumnSource::Input(k) => mallard_assemble::ColumnSource::Input(k),
                    })
                    .collect();
                self.emitted.push(Emitted { columns, messages });
                Ok(())
            }
        }
    }
}

fn describe(refused: &EmitRefused) -> String {
    match refused {
        EmitRefused::Misuse(m) | EmitRefused::Exhausted(m) => m.clone(),
    }
}

impl Host for StoreState {
    fn emit(
        &mut self,
        columns: Vec<ColumnSource>,
        messages: Vec<IpcMessage>,
    ) -> Result<(), String> {
        self.emits.accept(columns, messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(bytes: usize) -> Vec<IpcMessage> {
        vec![IpcMessage {
            header: vec![0; 8],
            body: vec![0; bytes],
        }]
    }

    #[test]
    fn emits_outside_a_call_are_misuse_and_stay_refused() {
        let mut emits = Emits::new(1 << 20);
        assert!(emits.accept(vec![], message(1)).is_err());
        assert!(matches!(
            emits.refused_outside_calls(),
            Some(EmitRefused::Misuse(_))
        ));
        emits.open();
        emits
            .accept(vec![ColumnSource::Emitted], message(1))
            .unwrap();
        assert_eq!(emits.close().unwrap().len(), 1);
        assert!(
            emits.accept(vec![], message(1)).is_err(),
            "after the call, closed again"
        );
    }

    #[test]
    fn a_call_may_emit_up_to_its_count_and_bytes_and_no_more() {
        let mut emits = Emits::new(1 << 20);
        emits.open();
        for _ in 0..MAX_EMITS_PER_CALL {
            emits.accept(vec![], Vec::new()).unwrap();
        }
        assert!(emits.accept(vec![], Vec::new()).is_err());
        assert!(
            emits.accept(vec![], Vec::new()).is_err(),
            "refused for the rest of the call"
        );
        assert!(matches!(emits.close(), Err(EmitRefused::Exhausted(_))));

        emits.open();
        emits.accept(vec![], message((1 << 20) - 8)).unwrap();
        let over = emits.accept(vec![], message(1)).unwrap_err();
        assert!(over.contains("1 MiB"), "{over}");
        assert!(matches!(emits.close(), Err(EmitRefused::Exhausted(_))));
        emits.open();
        assert!(
            emits.close().unwrap().is_empty(),
            "a new call starts afresh"
        );
    }
}
