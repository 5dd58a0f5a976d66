//! The Arrow Flight service: authentication of every call, then dispatch to DuckDB
//! (`do_get`, `do_put`), exchangers (`do_exchange`) and actions (`do_action`).

pub mod actions;
pub mod auth_layer;
pub mod push;
pub mod rpc_metrics;
pub mod service;
pub mod stall;

pub use service::MallardService;
