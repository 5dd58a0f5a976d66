//! Flight SQL bulk ingest (`CommandStatementIngest`): the put of a table with
//! the spec's create/append/replace options, all-or-nothing, inside a
//! transaction when the client names one.

use super::placement::placement;
use super::{Put, unsupported};
use crate::auth::Principal;
use crate::flight::body_outcome::ensure_complete;
use crate::flight::inbound;
use crate::state::ServerState;
use arrow_flight::sql::{CommandStatementIngest, TableExistsOption, TableNotExistOption};
use mallard_access::authz::Operation;
use mallard_core::{Error, Result};
use mallard_db::ingest::{Ingest, Mode};
use mallard_protocol::TableName;
use std::sync::Arc;

/// The ingest mode a `CommandStatementIngest` asks for, and the right it needs
/// beyond putting (replacing destroys the old table: that is dropping it).
fn ingest_mode(command: &CommandStatementIngest) -> Result<(Mode, Option<Operation>)> {
    let options = command.table_definition_options.unwrap_or_default();
    let missing = TableNotExistOption::try_from(options.if_not_exist)
        .map_err(|_| Error::invalid_argument("unknown if_not_exist option"))?;
    let exists = TableExistsOption::try_from(options.if_exists)
        .map_err(|_| Error::invalid_argument("unknown if_exists option"))?;
    use TableExistsOption as E;
    use TableNotExistOption as N;
    Ok(match (missing, exists) {
        (N::Create | N::Unspecified, E::Fail | E::Unspecified) => (Mode::Create, None),
        (N::Create | N::Unspecified, E::Append) => (Mode::CreateOrAppend, None),
        (N::Fail, E::Append | E::Unspecified) => (Mode::Append, None),
        (N::Create | N::Unspecified, E::Replace) => (Mode::Replace, Some(Operation::DropTable)),
        (N::Fail, E::Replace) => {
            return Err(unsupported(
                "replacing a table only if it exists (if_not_exist = FAIL with if_exists = REPLACE)",
            ));
        }
        (N::Fail, E::Fail) => {
            return Err(Error::invalid_argument(
                "if_not_exist = FAIL with if_exists = FAIL can never ingest",
            ));
        }
    })
}

/// `DoPut` of `CommandStatementIngest`: the rows ingested.
pub(super) async fn bulk_ingest(
    state: &Arc<ServerState>,
    principal: &Principal,
    command: CommandStatementIngest,
    put: Put<'_>,
) -> Result<u64> {
    let Put {
        first,
        incoming,
        outcome: body,
    } = put;
    state.authz.check(principal, Operation::Put)?;
    let (mode, extra) = ingest_mode(&command)?;
    if let Some(op) = extra {
        state.authz.check(principal, op)?;
    }
    if command.temporary {
        return Err(unsupported(
            "temporary tables (they would vanish with the request's connection)",
        ));
    }
    if let Some(schema) = command.schema.as_deref().filter(|s| *s != "main") {
        return Err(unsupported(&format!(
            "ingest into schema {schema:?} (tables live in schema \"main\")"
        )));
    }
    if command.transaction_id.is_some() && state.authz.sql(principal).read_only() {
        return Err(Error::failed_precondition(
            "below admin a transaction is read-only, so bulk ingest runs outside \
             transactions: ingest with autocommit on (each ingest is all-or-nothing on its own)",
        ));
    }
    let table = TableName::parse(&command.table).map_err(Error::from)?;
    let _slot = state.put_slots.acquire(&principal.user)?;
    let idle = state.config.stall_timeout;
    let schema_header = inbound::schema_message(first, incoming, idle, "ingest").await?;
    let (schema, _) = mallard_exchange::validated_schema_message(schema_header)?;
    let transaction = command.transaction_id.as_ref();
    let (on, _) = placement(state, principal, transaction)?;
    let mut ingest = Ingest::start_with(state.db.clone(), table, schema, mode, on);
    let outcome = async {
        while let Some(message) = inbound::next_within(incoming, idle, "ingest").await? {
            if !message.data_header.is_empty() {
                ingest
                    .append_message(message.data_header, message.data_body)
                    .await?;
            }
        }
        ensure_complete(body, "ingest")?;
        ingest.commit().await
    }
    .await;
    tracing::debug!(user = ?principal.user, table = ?command.table, ?mode, ok = outcome.is_ok(), "Flight SQL ingest ended");
    match (outcome, transaction) {
        (Err(e), Some(id)) => {
            // The failed ingest rolled its transaction back; the handle goes too,
            // so the client's commit fails instead of committing a part.
            let _ = state.flight_sql.transactions.remove(&principal.user, id);
            Err(e.context("ingest failed and its transaction was rolled back"))
        }
        (outcome, _) => outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_flight::sql::TableDefinitionOptions;
    use mallard_core::ErrorKind;

    fn mode(if_not_exist: i32, if_exists: i32) -> Result<(Mode, Option<Operation>)> {
        ingest_mode(&CommandStatementIngest {
            table_definition_options: Some(TableDefinitionOptions {
                if_not_exist,
                if_exists,
            }),
            ..CommandStatementIngest::default()
        })
    }

    #[test]
    fn every_option_pair_has_one_answer() {
        use TableExistsOption as E;
        use TableNotExistOption as N;
        let ok = |n: N, e: E| mode(n as i32, e as i32).unwrap();
        assert_eq!(ok(N::Unspecified, E::Unspecified).0, Mode::Create);
        assert_eq!(ok(N::Create, E::Fail).0, Mode::Create);
        assert_eq!(ok(N::Create, E::Append).0, Mode::CreateOrAppend);
        assert_eq!(ok(N::Fail, E::Append).0, Mode::Append);
        assert_eq!(ok(N::Fail, E::Unspecified).0, Mode::Append);
        // Replacing destroys the old table: it needs the right to drop one.
        assert_eq!(
            ok(N::Create, E::Replace),
            (Mode::Replace, Some(Operation::DropTable))
        );
        let refused = |n: N, e: E| mode(n as i32, e as i32).err().unwrap().kind();
        assert_eq!(refused(N::Fail, E::Replace), ErrorKind::Unimplemented);
        assert_eq!(refused(N::Fail, E::Fail), ErrorKind::InvalidArgument);
    }

    #[test]
    fn unknown_option_values_are_refused() {
        assert_eq!(
            mode(99, 0).err().unwrap().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            mode(0, -3).err().unwrap().kind(),
            ErrorKind::InvalidArgument
        );
        // No options at all is the spec's default: create, fail if it exists.
        let none = ingest_mode(&CommandStatementIngest::default()).unwrap();
        assert_eq!(none.0, Mode::Create);
    }
}
