//! What Flight SQL keeps between a client's calls: prepared statements and open
//! transactions, each in a bounded [`Registry`], and the sweep that expires
//! the idle ones.

use super::metadata;
use super::prepared::PreparedStatement;
use super::registry::{Limits, Registry};
use crate::state::ServerState;
use arrow_flight::sql::metadata::SqlInfoData;
use mallard_core::Result;
use mallard_db::session::SessionConnection;
use std::sync::Arc;
use std::time::Duration;

/// Prepared statements: per user, in all, and how long one may sit unused.
pub const PREPARED_LIMITS: Limits = Limits {
    per_user: 64,
    total: 4_096,
    idle: Duration::from_secs(3_600),
};

/// Open transactions: each holds a DuckDB connection (and its locks), so few,
/// and rolled back after five idle minutes.
pub const TRANSACTION_LIMITS: Limits = Limits {
    per_user: 4,
    total: 64,
    idle: Duration::from_secs(300),
};

/// What Flight SQL keeps between a client's calls.
pub struct FlightSqlState {
    pub(super) prepared: Registry<PreparedStatement>,
    pub(super) transactions: Registry<SessionConnection>,
    pub(super) info: SqlInfoData,
}

impl FlightSqlState {
    /// Empty tables; `statement_timeout` is what `GetSqlInfo` reports.
    pub fn new(statement_timeout: Duration) -> Result<Self> {
        let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
        Ok(Self {
            prepared: Registry::new("prepared statements", PREPARED_LIMITS),
            transactions: Registry::new("transactions", TRANSACTION_LIMITS),
            info: metadata::sql_info(ms(statement_timeout), ms(TRANSACTION_LIMITS.idle))?,
        })
    }

    /// Open transactions (all users).
    pub fn open_transactions(&self) -> usize {
        self.transactions.len()
    }

    /// Open prepared statements (all users).
    pub fn open_prepared(&self) -> usize {
        self.prepared.len()
    }
}

/// How often idle prepared statements and transactions are looked for.
pub const EXPIRY_SWEEP: Duration = Duration::from_secs(30);

/// Drops idle prepared statements and rolls back idle transactions every
/// [`EXPIRY_SWEEP`] while the server's state lives.
pub fn expire_idle_in_background(state: &Arc<ServerState>) {
    let state = Arc::downgrade(state);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(EXPIRY_SWEEP).await;
            let Some(live) = state.upgrade() else { return };
            let now = std::time::Instant::now();
            let prepared = live.flight_sql.prepared.expire(now);
            let transactions = live.flight_sql.transactions.expire(now);
            drop(live);
            if !prepared.is_empty() || !transactions.is_empty() {
                tracing::debug!(
                    prepared = prepared.len(),
                    transactions = transactions.len(),
                    "expired idle Flight SQL handles"
                );
            }
            // Dropping a transaction's connection rolls it back: off the runtime.
            let _ = tokio::task::spawn_blocking(move || drop(transactions)).await;
        }
    });
}
