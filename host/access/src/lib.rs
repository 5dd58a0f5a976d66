//! Who a caller is, what they may do, and how much of the server they may hold
//! at once — decided before any work starts, by every entry alike:
//!
//! - [`Principal`]: the authenticated caller (user and role).
//! - [`authz`]: the one place that says which role may do what, and the SQL
//!   policy each caller's statements run under.
//! - [`slots`]: per-user caps on concurrent streams, queued output and guest memory.

pub mod authz;
pub mod slots;

pub use mallard_protocol::users::Role;

/// The caller of a request, as authentication established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User name.
    pub user: String,
    /// The user's role.
    pub role: Role,
}
