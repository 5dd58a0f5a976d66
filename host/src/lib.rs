//! Mallard: DuckDB-backed Apache Arrow Flight servers that run untrusted data
//! transformations ("exchangers") as sandboxed WebAssembly components.
//!
//! - [`server`] starts a server ([`server::start`]) from a [`config::ServerConfig`].
//! - [`flight`] implements the Flight methods and actions (the wire protocol).
//! - [`db`] streams queries out of and batches into DuckDB, locked down.
//! - [`sandbox`] validates, compiles and runs exchanger components under hard limits.
//! - [`exchange`] streams `do_exchange` batches through a sandboxed or native session.
//! - [`auth`] checks credentials and issues expiring bearer tokens.
//! - [`authz`] decides once per request whether its caller may do what it does.
//! - [`slots`] caps each user's concurrent streams.
//! - [`flights`] generates the deterministic flights data set.
//! - [`components`] builds the workspace's guest components (tests, demo).
//! - [`client`] connects to a Mallard server the way `push_table` and the demo do.

pub mod auth;
pub mod authz;
pub mod client;
pub mod components;
pub mod config;
pub mod db;
pub mod error;
pub mod exchange;
pub mod flight;
pub mod flights;
pub mod gauges;
pub mod metrics;
pub mod polyglot;
pub mod sandbox;
pub mod server;
pub mod slots;
pub mod state;
pub mod transport;

pub use config::ServerConfig;
pub use error::{Error, Result};
pub use server::{RunningServer, start};
