//! Users files: TOML `[[user]]` tables with argon2 password hashes and roles.
//!
//! ```toml
//! [[user]]
//! name = "alice"
//! password_hash = "$argon2id$v=19$..."   # from `mallard hash-password`
//! role = "admin"                          # or "user", "reader"
//! ```

use crate::{Result, invalid};
use argon2::PasswordHash;

/// What a user may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-only queries, exchanges and listings.
    Reader,
    /// A reader that may also put into tables and push to allowed targets.
    User,
    /// Everything, including uploading/removing exchangers, dropping tables and `sql`.
    Admin,
}

/// One user of a users file, its hash checked to be a PHC string.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// Login name.
    pub name: String,
    /// PHC-format argon2 hash (`$argon2id$...`).
    pub password_hash: String,
    /// Role.
    pub role: Role,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<UserEntry>,
}

/// Checks that `hash` is a PHC password hash (`$argon2id$v=19$...`).
pub fn check_password_hash(hash: &str) -> Result<()> {
    PasswordHash::new(hash)
        .map(|_| ())
        .map_err(|e| invalid(format!("not an argon2 password hash: {e}")))
}

/// Parses a users file; every entry's hash is checked, names must be unique.
pub fn parse_users_file(text: &str) -> Result<Vec<UserEntry>> {
    let file: UsersFile = toml::from_str(text).map_err(|e| invalid(format!("users file: {e}")))?;
    let mut seen = std::collections::BTreeSet::new();
    for entry in &file.user {
        check_password_hash(&entry.password_hash)
            .map_err(|e| invalid(format!("user {:?}: {e}", entry.name)))?;
        if !seen.insert(entry.name.as_str()) {
            return Err(invalid(format!(
                "users file: user {:?} appears twice",
                entry.name
            )));
        }
    }
    Ok(file.user)
}
