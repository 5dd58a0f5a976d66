//! The `authorization` header: Basic credentials in, bearer tokens out.

use crate::{ProtocolError, Result};
use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Decodes Basic credentials with or without `=` padding: RFC 7617 clients
/// differ (the Go Flight client, and so the ADBC driver, leaves it out).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

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

/// Reads an `authorization` header value (schemes are case-insensitive, any
/// whitespace may separate the scheme from its value). Authentication and
/// logout both read the header through this one function.
pub fn parse_authorization(header: &str) -> Result<Credentials<'_>> {
    let (scheme, rest) = header
        .trim()
        .split_once(|c: char| c.is_ascii_whitespace())
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
    let raw = LENIENT.decode(encoded).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (user, password) = text.split_once(':').ok_or_else(bad)?;
    Ok((user.to_owned(), password.to_owned()))
}

/// `Basic base64(user:password)`, for clients (push_table, the demo).
pub fn basic_header(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_and_unpadded_basic_decode_alike() {
        // "admin:password123" is 17 bytes: base64 needs one '=' of padding.
        let padded = basic_header("admin", "password123");
        assert!(padded.ends_with('='));
        let unpadded = padded.trim_end_matches('=');
        for header in [padded.as_str(), unpadded] {
            assert_eq!(
                parse_authorization(header).unwrap(),
                Credentials::Basic {
                    user: "admin".into(),
                    password: "password123".into()
                }
            );
        }
    }

    #[test]
    fn scheme_case_and_spacing_do_not_matter() {
        for header in ["Bearer abc", "bearer abc", "Bearer  abc", "BEARER\tabc "] {
            assert_eq!(
                parse_authorization(header).unwrap(),
                Credentials::Bearer("abc")
            );
        }
        assert!(parse_authorization("Token abc").is_err());
        assert!(parse_authorization("Basic !!!").is_err());
    }
}
