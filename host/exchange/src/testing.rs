//! What the unit tests of this crate share: a real exchange context on an
//! in-memory DuckDB with the native built-ins.

use crate::Exchanges;
use crate::catalog::Catalog;
use crate::context::Parallelism;
use crate::output::OutputBudget;
use crate::quotas::Quotas;
use mallard_access::authz::Authorizer;
use mallard_access::slots::{MemoryPools, UserSlots};
use mallard_db::{Database, DbOptions};
use mallard_sandbox::engine::SandboxEngine;
use mallard_sandbox::limits::Limits;
use std::sync::Arc;
use std::time::Duration;

/// A context allowing `max_per_user` concurrent exchanges per user.
pub fn exchanges(max_per_user: usize) -> Arc<Exchanges> {
    let db = Arc::new(Database::open(DbOptions::default()).unwrap());
    crate::sql::register(&db).unwrap();
    let engine = Arc::new(SandboxEngine::new(Limits::default()).unwrap());
    Arc::new(Exchanges {
        db,
        catalog: Arc::new(Catalog::open(engine, Quotas::default(), None).unwrap()),
        guest_memory: MemoryPools::new(1 << 30),
        slots: UserSlots::new("exchanges", "--max-exchanges-per-user", max_per_user),
        authz: Authorizer {
            files_allowed: false,
        },
        output: OutputBudget {
            bytes: 1 << 20,
            stall: Duration::from_secs(5),
        },
        parallelism: Parallelism {
            per_stage: 4,
            extra: UserSlots::new("extra instances", "--max-extra-instances-per-user", 4),
        },
    })
}
