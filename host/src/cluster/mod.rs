//! Several Mallard nodes, with what exists: Flight is the wire, a shared key lets
//! each node accept the others' tokens (with its own roles), and a node answers
//! one `get_flight_info` with an endpoint per node. No membership protocol: the
//! operator lists each node's peers (`--peer`).

pub mod fan_out;
pub mod publish;
pub mod token;

pub use fan_out::NODES_HEADER;
pub use token::ClusterKey;
