//! Where a caller's Flight SQL statements run: on a fresh connection, or on the
//! open transaction they name, under the caller's SQL policy and with their
//! `exchange()` scope. The connection itself is chosen by `mallard_db::session::On`.

use crate::auth::Principal;
use crate::state::ServerState;
use bytes::Bytes;
use mallard_core::Result;
use mallard_db::raw::RawConnection;
use mallard_db::session::{InTransaction, On};
use mallard_db::statements::{self, Shape, StatementPolicy};
use mallard_exchange::sql::caller_scope;
use std::sync::Arc;

/// Where a request of `transaction` runs and the policy it runs under: inside
/// a transaction the caller's policy without its per-request read-only begin
/// (the transaction was begun read-only for roles below admin).
pub(super) fn placement(
    state: &ServerState,
    principal: &Principal,
    transaction: Option<&Bytes>,
) -> Result<(On, Arc<dyn StatementPolicy>)> {
    let policy = state.authz.sql(principal);
    match transaction {
        None => Ok((On::Fresh, policy)),
        Some(id) => {
            let session = state.flight_sql.transactions.get(&principal.user, id)?;
            Ok((On::Session(session), Arc::new(InTransaction(policy))))
        }
    }
}

/// The shape of one statement, judged for `principal`, without running it.
pub(super) async fn statement_shape(
    state: &Arc<ServerState>,
    principal: &Principal,
    sql: String,
    transaction: Option<&Bytes>,
) -> Result<Shape> {
    on_callers_connection(state, principal, transaction, move |conn, policy| {
        statements::statement_shape(conn, &sql, policy)
    })
    .await
}

/// Runs `f` on a blocking thread, on the connection `transaction` places the
/// caller's statements on, with the caller's SQL policy and its `exchange()` scope.
pub(super) async fn on_callers_connection<T: Send + 'static>(
    state: &Arc<ServerState>,
    principal: &Principal,
    transaction: Option<&Bytes>,
    f: impl FnOnce(&RawConnection, &dyn StatementPolicy) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (on, policy) = placement(state, principal, transaction)?;
    let db = state.db.clone();
    let scope = caller_scope(&state.exchanges, principal, Arc::default());
    crate::flight::blocking::blocking(move || {
        let conn = on.hold(&db)?;
        let _scope = db
            .scopes
            .enter(conn.id(), scope(conn.interrupt_handle().watch()));
        f(&conn, &*policy)
    })
    .await
}
