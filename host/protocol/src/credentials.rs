//! The `authorization` header: Basic credentials in, bearer tokens out.

use crate::{ProtocolError, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// What an `authorization` header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// `Basic base64(user:password)`, decoded.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// `Bearer <token>`.
    Bearer(&'a str),
}

const SCHEMES: &str = "authorization must be `Basic ...` or `Bearer ...`";

fn malformed(message: &str) -> ProtocolError {
    ProtocolError::BadCredentials(message.to_owned())
}

/// Reads an `authorization` header value (schemes are case-insensitive).
pub fn parse_authorization(header: &str) -> Result<Credentials<'_>> {
    let (scheme, rest) = header
        .trim()
        .split_once(' ')
        .ok_or_else(|| malformed(SCHEMES))?;
    if scheme.eq_ignore_ascii_case("basic") {
        let (user, password) = decode_basic(rest.trim())?;
        Ok(Credentials::Basic { user, password })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Ok(Credentials::Bearer(rest.trim()))
    } else {
        Err(malformed(SCHEMES))
    }
}

/// Decodes `base64(user:password)`.
pub fn decode_basic(encoded: &str) -> Result<(String, String)> {
    let bad = || malformed("malformed Basic credentials");
    let raw = STANDARD.decode(encoded).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (user, password) = text.split_once(':').ok_or_else(bad)?;
    Ok((user.to_owned(), password.to_owned()))
}

/// `Basic base64(user:password)`, for clients (push_table, the demo).
pub fn basic_header(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}
