//! Authorization: who may do what, decided in one place from what a request
//! does, before any work starts.
//!
//! | operation                               | reader | user | admin |
//! |-----------------------------------------|--------|------|-------|
//! | read-only SQL (SELECT, EXPLAIN, …)      | yes    | yes  | yes   |
//! | list tables/flights/exchangers, health  | yes    | yes  | yes   |
//! | run an exchange                         | yes    | yes  | yes   |
//! | put into a table, push to an allowed target | no | yes  | yes   |
//! | DDL/DML, SET/PRAGMA/CALL, `sql`, `drop_table` | no | no | yes   |
//! | upload/remove exchangers in own namespace | no   | yes  | yes   |
//! | upload into / publish to / remove from shared | no | no | yes   |
//! | file statements (COPY, EXPORT, ATTACH, …) | no   | no   | only with `--allow-dir` |
//!
//! SQL is judged statement by statement from DuckDB's own statement type (see
//! [`mallard_db::statements`]); non-admin queries also run inside a read-only
//! transaction, so a statement DuckDB calls a read cannot write either.

use crate::{Principal, Role};
use mallard_core::{Error, Result};
use mallard_db::statements::{StatementKind, StatementPolicy};
use std::sync::Arc;

/// Something a request does that needs a right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// One SQL statement of the given kind.
    Statement(StatementKind),
    /// Listings and the healthcheck.
    Inspect,
    /// Streaming batches through an exchanger.
    Exchange,
    /// Writing batches into a table (`do_put`).
    Put,
    /// Sending a table to another server (`push_table`).
    Push,
    /// Uploading or removing exchangers in one's own namespace.
    ManageExchangers,
    /// Uploading into, publishing to or removing from the shared namespace.
    ShareExchangers,
    /// Dropping tables through the `drop_table` action.
    DropTable,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Statement(StatementKind::Read) => f.write_str("read-only SQL"),
            Self::Statement(StatementKind::Write) => f.write_str("SQL that changes data (DDL/DML)"),
            Self::Statement(StatementKind::Files) => {
                f.write_str("SQL that touches files or other databases")
            }
            Self::Statement(StatementKind::Session) => {
                f.write_str("SQL that changes the session or calls procedures (SET, PRAGMA, CALL, transactions)")
            }
            Self::Inspect => f.write_str("listing"),
            Self::Exchange => f.write_str("running an exchange"),
            Self::Put => f.write_str("putting into a table"),
            Self::Push => f.write_str("pushing a table"),
            Self::ManageExchangers => f.write_str("uploading or removing exchangers"),
            Self::ShareExchangers => f.write_str("managing shared exchangers"),
            Self::DropTable => f.write_str("dropping tables"),
        }
    }
}

/// The server's authorization policy.
#[derive(Debug, Clone, Copy)]
pub struct Authorizer {
    /// Whether the operator opened directories to SQL (`--allow-dir`).
    pub files_allowed: bool,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Reader => "reader",
        Role::User => "user",
        Role::Admin => "admin",
    }
}

impl Authorizer {
    /// The least role that may perform `op`, or `None` when nobody may.
    pub fn required_role(&self, op: Operation) -> Option<Role> {
        match op {
            Operation::Statement(StatementKind::Read)
            | Operation::Inspect
            | Operation::Exchange => Some(Role::Reader),
            Operation::Put | Operation::Push | Operation::ManageExchangers => Some(Role::User),
            Operation::Statement(StatementKind::Files) if !self.files_allowed => None,
            Operation::Statement(_) | Operation::ShareExchangers | Operation::DropTable => {
                Some(Role::Admin)
            }
        }
    }

    /// PermissionDenied unless `principal` may perform `op`.
    pub fn check(&self, principal: &Principal, op: Operation) -> Result<()> {
        match self.required_role(op) {
            Some(needed) if principal.role >= needed => Ok(()),
            Some(needed) => Err(Error::permission_denied(format!(
                "{op} needs role {} or above; user {:?} has role {}",
                role_name(needed),
                principal.user,
                role_name(principal.role)
            ))),
            None => Err(Error::permission_denied(format!(
                "{op} is disabled on this server: SQL has no file access unless the operator \
                 starts it with --allow-dir, and never to the server's own files"
            ))),
        }
    }

    /// The policy `principal`'s SQL runs under.
    pub fn sql(&self, principal: &Principal) -> Arc<dyn StatementPolicy> {
        Arc::new(SqlAccess {
            authorizer: *self,
            principal: principal.clone(),
        })
    }
}

/// One caller's SQL policy: each statement checked as [`Operation::Statement`];
/// anyone below admin runs in a read-only transaction.
struct SqlAccess {
    authorizer: Authorizer,
    principal: Principal,
}

impl StatementPolicy for SqlAccess {
    fn allow(&self, kind: StatementKind) -> Result<()> {
        self.authorizer
            .check(&self.principal, Operation::Statement(kind))
    }

    fn read_only(&self) -> bool {
        self.principal.role < Role::Admin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(role: Role) -> Principal {
        Principal {
            user: "u".into(),
            role,
        }
    }

    #[test]
    fn roles_nest_and_files_need_the_operator() {
        let closed = Authorizer {
            files_allowed: false,
        };
        let open = Authorizer {
            files_allowed: true,
        };
        let files = Operation::Statement(StatementKind::Files);
        for role in [Role::Reader, Role::User, Role::Admin] {
            assert!(closed.check(&who(role), files).is_err());
            assert!(
                closed
                    .check(&who(role), Operation::Statement(StatementKind::Read))
                    .is_ok()
            );
        }
        assert!(open.check(&who(Role::Admin), files).is_ok());
        assert!(open.check(&who(Role::User), files).is_err());
        assert!(closed.check(&who(Role::Reader), Operation::Put).is_err());
        assert!(closed.check(&who(Role::User), Operation::Put).is_ok());
        assert!(
            closed
                .check(&who(Role::User), Operation::Statement(StatementKind::Write))
                .is_err()
        );
        assert!(
            closed
                .check(
                    &who(Role::User),
                    Operation::Statement(StatementKind::Session)
                )
                .is_err()
        );
        assert!(
            closed
                .check(&who(Role::Reader), Operation::ManageExchangers)
                .is_err()
        );
        assert!(
            closed
                .check(&who(Role::User), Operation::ManageExchangers)
                .is_ok()
        );
        assert!(
            closed
                .check(&who(Role::User), Operation::ShareExchangers)
                .is_err()
        );
        assert!(
            closed
                .check(&who(Role::Admin), Operation::DropTable)
                .is_ok()
        );
        let denied = closed
            .check(&who(Role::Reader), Operation::Push)
            .unwrap_err();
        assert!(denied.to_string().contains("role user"), "{denied}");
    }
}
