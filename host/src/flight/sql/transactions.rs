//! Flight SQL transactions: `BeginTransaction` opens one on a connection of its
//! own (read-only below admin), every request naming it runs on that
//! connection, and `EndTransaction` (or expiry) ends it.

use crate::auth::Principal;
use crate::state::ServerState;
use arrow_flight::sql::{ActionEndTransactionRequest, EndTransaction};
use mallard_access::authz::Operation;
use mallard_core::{Error, ErrorKind, Result};
use mallard_db::session::SessionConnection;

/// `BeginTransaction`: the new transaction's id.
pub(super) async fn begin(state: &ServerState, principal: &Principal) -> Result<String> {
    state.authz.check(principal, Operation::Inspect)?;
    let read_only = state.authz.sql(principal).read_only();
    let db = state.db.clone();
    let session = crate::flight::blocking::blocking(move || {
        let conn = db.connect_raw()?;
        conn.execute(begin_sql(read_only))?;
        conn.interrupt_handle().disarm();
        Ok(SessionConnection::new(conn))
    })
    .await?;
    state
        .flight_sql
        .transactions
        .insert(&principal.user, session)
}

fn begin_sql(read_only: bool) -> &'static str {
    if read_only {
        "BEGIN TRANSACTION READ ONLY"
    } else {
        "BEGIN TRANSACTION"
    }
}

/// What `EndTransaction` asks DuckDB to do.
fn end_sql(request: &ActionEndTransactionRequest) -> Result<&'static str> {
    let end = EndTransaction::try_from(request.action)
        .map_err(|_| Error::invalid_argument("unknown EndTransaction action"))?;
    match end {
        EndTransaction::Commit => Ok("COMMIT"),
        EndTransaction::Rollback => Ok("ROLLBACK"),
        EndTransaction::Unspecified => Err(Error::invalid_argument(
            "EndTransaction needs COMMIT or ROLLBACK",
        )),
    }
}

/// `EndTransaction`: commits or rolls back. The handle is gone afterwards
/// unless the transaction was busy with another request (then nothing ended).
pub(super) async fn end(
    state: &ServerState,
    principal: &Principal,
    request: ActionEndTransactionRequest,
) -> Result<()> {
    let sql = end_sql(&request)?;
    let transactions = &state.flight_sql.transactions;
    let session = transactions.get(&principal.user, &request.transaction_id)?;
    let ended = crate::flight::blocking::blocking(move || {
        let conn = session.lock()?;
        conn.execute(sql).map(|_| ())
    })
    .await;
    if !matches!(&ended, Err(e) if e.kind() == ErrorKind::FailedPrecondition) {
        // Committed, rolled back, or failed to commit (DuckDB rolls back): gone.
        let _ = transactions.remove(&principal.user, &request.transaction_id);
    }
    ended.map_err(|e| {
        if e.kind() == ErrorKind::InvalidArgument && sql == "COMMIT" {
            Error::aborted(format!("the transaction could not commit: {e}")).with_source(e)
        } else {
            e
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(action: i32) -> ActionEndTransactionRequest {
        ActionEndTransactionRequest {
            transaction_id: Default::default(),
            action,
        }
    }

    #[test]
    fn only_commit_and_rollback_end_a_transaction() {
        assert_eq!(
            end_sql(&request(EndTransaction::Commit as i32)).unwrap(),
            "COMMIT"
        );
        assert_eq!(
            end_sql(&request(EndTransaction::Rollback as i32)).unwrap(),
            "ROLLBACK"
        );
        for action in [EndTransaction::Unspecified as i32, 99, -1] {
            let err = end_sql(&request(action)).err().unwrap();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{action}");
        }
    }
}
