//! The Arrow Flight service: authentication of every call, then dispatch to DuckDB
//! (`do_get`, `do_put`), exchangers (`do_exchange`) and actions (`do_action`),
//! in the seeds' protocol or in Flight SQL ([`sql`]) on the same listener.

pub mod actions;
pub mod auth_layer;
pub mod blocking;
pub mod body_outcome;
pub mod direct;
pub mod inbound;
pub mod incoming;
pub mod ipc_pieces;
pub mod partition;
pub mod push;
pub mod push_partitioned;
pub mod results;
pub mod rpc_metrics;
pub mod service;
pub mod sql;
pub mod stall;
pub mod two_phase;

pub use service::MallardService;
