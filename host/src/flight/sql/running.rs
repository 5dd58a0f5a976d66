//! Queries a client may cancel by id while they stream (Flight SQL's
//! `CancelFlightInfo`): only their owner can, and an id that is not running
//! (finished, never started, someone else's) is "not cancellable".

use arrow_flight::CancelStatus;
use mallard_db::raw::Interrupt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The running, cancellable queries of one server. Bounded by the query slots:
/// an entry lives exactly as long as its stream.
#[derive(Default)]
pub struct RunningQueries {
    queries: Mutex<HashMap<String, (String, Arc<Interrupt>)>>,
}

/// Keeps a query cancellable until dropped (with its stream).
pub struct Registration {
    queries: Arc<RunningQueries>,
    id: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.queries.lock().remove(&self.id);
    }
}

impl RunningQueries {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Arc<Interrupt>)>> {
        self.queries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `owner`'s query `id`, interruptible through `interrupt`.
    pub fn register(
        self: &Arc<Self>,
        id: String,
        owner: &str,
        interrupt: Arc<Interrupt>,
    ) -> Registration {
        self.lock()
            .insert(id.clone(), (owner.to_owned(), interrupt));
        Registration {
            queries: self.clone(),
            id,
        }
    }

    /// Interrupts `owner`'s running query `id`.
    pub fn cancel(&self, owner: &str, id: &str) -> CancelStatus {
        match self.lock().get(id) {
            Some((who, interrupt)) if who == owner => {
                interrupt.interrupt();
                CancelStatus::Cancelled
            }
            _ => CancelStatus::NotCancellable,
        }
    }

    /// How many are registered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
