//! What every request handler of one server shares.

use crate::auth::Authenticator;
use crate::config::ServerConfig;
use mallard_access::authz::Authorizer;
use mallard_access::slots::UserSlots;
use mallard_db::Database;
use mallard_exchange::Exchanges;
use std::sync::Arc;

/// The shared state of one server.
pub struct ServerState {
    /// The DuckDB database.
    pub db: Arc<Database>,
    /// Credentials and tokens.
    pub auth: Authenticator,
    /// What exchanges run in: catalogue, guest memory, exchange slots.
    pub exchanges: Arc<Exchanges>,
    /// What the Prometheus exporter and the RPC layer count.
    pub metrics: Arc<crate::metrics::ServerMetrics>,
    /// Who may do what.
    pub authz: Authorizer,
    /// Open `do_get` streams per user.
    pub query_slots: Arc<UserSlots>,
    /// Query output each user may have queued.
    pub query_output: mallard_access::slots::OutputBudgets,
    /// Open `do_put` streams per user.
    pub put_slots: Arc<UserSlots>,
    /// Flight SQL's prepared statements and transactions.
    pub flight_sql: crate::flight::sql::FlightSqlState,
    /// Queries a Flight SQL client may cancel by id while they stream.
    pub running_queries: Arc<crate::flight::sql::running::RunningQueries>,
    /// The configuration the server started with.
    pub config: ServerConfig,
}
