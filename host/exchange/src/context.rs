//! What running an exchange needs from the server, and nothing more: the
//! database its SQL entry reads, the catalogue, the per-user guest memory and
//! exchange slots, who may do what, and the output queue's budget.

use crate::catalog::Catalog;
use crate::output::OutputBudget;
use mallard_access::authz::Authorizer;
use mallard_access::slots::{MemoryPools, UserSlots};
use mallard_db::Database;
use std::sync::Arc;

/// The narrow context every exchange entry (`do_exchange`, SQL `exchange()`,
/// `push_table`) runs in; one per server.
pub struct Exchanges {
    /// The database `exchange()`'s inner query runs on.
    pub db: Arc<Database>,
    /// Known exchangers, by owner, name and version.
    pub catalog: Arc<Catalog>,
    /// Each user's guest memory, across their live instances.
    pub guest_memory: MemoryPools,
    /// Concurrent exchanges (and probes and upload dry runs) per user.
    pub slots: Arc<UserSlots>,
    /// Who may do what.
    pub authz: Authorizer,
    /// How much output an exchange may queue for a slow reader, and for how long.
    pub output: OutputBudget,
    /// How many instances a stateless stage may run on.
    pub parallelism: Parallelism,
}

/// How many instances a stateless stage may run on: at most `per_stage`, each
/// instance after a stage's first holding one of the user's `extra` slots. When
/// the user's extra slots are taken a stage runs on fewer instances (at least
/// one); it is never refused for it.
pub struct Parallelism {
    /// Most instances per stateless stage (`--exchange-instances`); 1 turns
    /// parallel stages off.
    pub per_stage: usize,
    /// Instances beyond each stage's first, per user
    /// (`--max-extra-instances-per-user`).
    pub extra: Arc<UserSlots>,
}

impl Parallelism {
    /// No stage runs on more than one instance.
    pub fn off() -> Self {
        Self {
            per_stage: 1,
            extra: UserSlots::new(
                "extra exchange instances",
                "--max-extra-instances-per-user",
                0,
            ),
        }
    }
}
