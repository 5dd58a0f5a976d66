//! What every request handler of one server shares.

use crate::auth::Authenticator;
use crate::config::ServerConfig;
use crate::db::Database;
use crate::sandbox::registry::Registry;
use std::sync::Arc;

/// The shared state of one server.
pub struct ServerState {
    /// The DuckDB database.
    pub db: Arc<Database>,
    /// Credentials and tokens.
    pub auth: Authenticator,
    /// Known exchangers.
    pub registry: Arc<Registry>,
    /// Concurrent exchanges per user.
    pub exchange_slots: Arc<crate::exchange::ExchangeSlots>,
    /// The configuration the server started with.
    pub config: ServerConfig,
}
