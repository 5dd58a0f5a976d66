//! Who a DuckDB connection is serving: a request registers its caller's scope
//! under the connection's id for as long as the connection runs its SQL, so a
//! callback DuckDB makes from inside that SQL (a table function's bind) acts
//! for that caller and no one else. A connection without a scope gets nothing.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A scope: whatever the registering layer needs (downcast by the callback).
pub type Scope = Arc<dyn Any + Send + Sync>;

/// The scopes of one database's connections.
#[derive(Default)]
pub struct ConnectionScopes {
    scopes: Mutex<HashMap<u64, Scope>>,
}

/// Removes its connection's scope when dropped.
pub struct ScopeGuard {
    scopes: Arc<ConnectionScopes>,
    connection: u64,
}

impl ConnectionScopes {
    /// Registers `scope` for `connection` until the guard drops.
    pub fn enter(self: &Arc<Self>, connection: u64, scope: Scope) -> ScopeGuard {
        self.lock().insert(connection, scope);
        ScopeGuard {
            scopes: self.clone(),
            connection,
        }
    }

    /// The scope of `connection`, if a request registered one.
    pub fn get(&self, connection: u64) -> Option<Scope> {
        self.lock().get(&connection).cloned()
    }

    /// Scopes registered now (for tests and gauges).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no scope is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Scope>> {
        self.scopes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        self.scopes.lock().remove(&self.connection);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_lives_exactly_as_long_as_its_guard() {
        let scopes = Arc::new(ConnectionScopes::default());
        let guard = scopes.enter(7, Arc::new("alice".to_owned()));
        let found = scopes.get(7).unwrap();
        assert_eq!(found.downcast_ref::<String>().unwrap(), "alice");
        assert!(scopes.get(8).is_none());
        drop(guard);
        assert!(scopes.get(7).is_none());
        assert!(scopes.is_empty());
    }
}
