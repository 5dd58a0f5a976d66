//! Mallard's server: DuckDB-backed Apache Arrow Flight and Flight SQL services
//! that run untrusted data transformations ("exchangers") as sandboxed
//! WebAssembly components. The layers below live in their own crates (see
//! `docs/architecture.md`); this crate is the wire and the process:
//!
//! - [`server`] starts a server ([`server::start`]) from a [`config::ServerConfig`].
//! - [`flight`] implements the Flight methods, Flight SQL and the actions.
//! - [`auth`] checks credentials and issues expiring bearer tokens.
//! - [`cluster`] lets several nodes accept each other's tokens and answer one
//!   FlightInfo with an endpoint per node.
//! - [`metrics`] serves the Prometheus exporter.
//! - [`transport`] is TLS and the HTTP/2 settings; [`client`] connects to a
//!   Mallard server the way `push_table` and the demo do.

pub mod auth;
pub mod client;
pub mod cluster;
pub mod config;
pub mod flight;
pub mod metrics;
pub mod server;
pub mod state;
pub mod transport;

pub use config::ServerConfig;
pub use mallard_core::{Error, ErrorKind, Result};
pub use server::{RunningServer, start};

/// The layers, re-exported for embedders and the binary.
pub use {
    mallard_access as access, mallard_db as db, mallard_exchange as exchange,
    mallard_sandbox as sandbox,
};
