//! Connections kept across requests: an open Flight SQL transaction holds one,
//! and every request of that transaction runs on it, one at a time.

use super::Database;
use super::raw::RawConnection;
use super::statements::{StatementKind, StatementPolicy};
use mallard_core::{Error, Result};
use std::sync::{Arc, Mutex, MutexGuard};

/// One connection with a transaction open on it.
pub struct SessionConnection {
    conn: Mutex<RawConnection>,
}

impl SessionConnection {
    /// Wraps `conn`, on which the caller has begun a transaction.
    pub fn new(conn: RawConnection) -> Self {
        Self {
            conn: Mutex::new(conn),
        }
    }

    /// The connection for one request; FailedPrecondition while another request
    /// of the same transaction still runs (a transaction runs one statement at
    /// a time, as DuckDB's connection does).
    pub fn lock(&self) -> Result<MutexGuard<'_, RawConnection>> {
        match self.conn.try_lock() {
            Ok(conn) => Ok(conn),
            Err(std::sync::TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => Err(Error::failed_precondition(
                "the transaction is busy with another request (read the previous result \
                 to its end first)",
            )),
        }
    }
}

/// Where a statement runs.
#[derive(Clone, Default)]
pub enum On {
    /// A connection of its own, closed afterwards (its work commits unless it
    /// runs inside a read-only transaction).
    #[default]
    Fresh,
    /// An open transaction's connection.
    Session(Arc<SessionConnection>),
}

/// A policy for statements inside an open transaction: the same judgement,
/// without beginning a read-only transaction per request (the transaction was
/// begun read-only when the caller's role asks for it).
pub struct InTransaction(pub Arc<dyn StatementPolicy>);

impl StatementPolicy for InTransaction {
    fn allow(&self, kind: StatementKind) -> Result<()> {
        self.0.allow(kind)
    }

    fn read_only(&self) -> bool {
        false
    }
}

/// The connection a request runs on: its own, or a transaction's (armed for
/// interrupts while the request runs, disarmed after).
pub enum Held<'a> {
    /// A connection of the request's own, closed with it.
    Own(RawConnection),
    /// An open transaction's connection, locked for the request.
    Session(std::sync::MutexGuard<'a, RawConnection>),
}

impl On {
    /// The connection a request placed here runs on. The one place that chooses
    /// a connection: queries, updates, ingests and Flight SQL's schema lookups.
    pub fn hold<'a>(&'a self, db: &Database) -> Result<Held<'a>> {
        Ok(match self {
            On::Fresh => Held::Own(db.connect_raw()?),
            On::Session(session) => {
                let conn = session.lock()?;
                conn.interrupt_handle().arm();
                Held::Session(conn)
            }
        })
    }
}

impl std::ops::Deref for Held<'_> {
    type Target = RawConnection;
    fn deref(&self) -> &RawConnection {
        match self {
            Held::Own(conn) => conn,
            Held::Session(conn) => conn,
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Held::Session(conn) = self {
            conn.interrupt_handle().disarm();
        }
    }
}
