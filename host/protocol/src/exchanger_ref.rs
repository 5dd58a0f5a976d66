//! Naming an exchanger: `[OWNER/]NAME[@VERSION | @sha256:HEX]`.
//!
//! - `classify` runs the caller's own `classify` if they have one, else the shared
//!   one; the latest version of it.
//! - `alice/classify` names alice's (only alice and admins see it);
//!   `shared/classify` names the shared one even when the caller has their own.
//! - `classify@1.2.0` pins the latest upload that declared version `1.2.0`;
//!   `classify@sha256:3f2a…` pins one upload by its hash (a unique prefix of at
//!   least [`MIN_SHA_PREFIX`] hex digits will do).

use crate::{Result, invalid};

/// The owner segment that names the shared namespace.
pub const SHARED_OWNER: &str = "shared";
/// Shortest sha256 prefix accepted in a pin (32 bits: collisions among one
/// owner's few versions are out of reach, and it is still typeable).
pub const MIN_SHA_PREFIX: usize = 8;
/// Longest reference accepted, in bytes.
pub const MAX_REF_BYTES: usize = 512;

/// Which namespace a reference points into.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Namespace {
    /// No owner given: the caller's own first, then shared.
    Any,
    /// `shared/NAME`.
    Shared,
    /// `OWNER/NAME`.
    User(String),
}

/// Which version a reference pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// The latest upload.
    Latest,
    /// The latest upload whose `describe()` declared this version.
    Version(String),
    /// The upload whose sha256 (lowercase hex) starts with this.
    Sha256(String),
}

/// A parsed exchanger reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangerRef {
    /// Where to look.
    pub namespace: Namespace,
    /// The exchanger's name (`[a-z0-9_]`, 1–64).
    pub name: String,
    /// Which version.
    pub pin: Pin,
}

impl ExchangerRef {
    /// Parses `[OWNER/]NAME[@VERSION | @sha256:HEX]`.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.len() > MAX_REF_BYTES {
            return Err(invalid(format!(
                "exchanger reference is {} bytes, more than {MAX_REF_BYTES}",
                text.len()
            )));
        }
        let (path, pin) = match text.split_once('@') {
            None => (text, Pin::Latest),
            Some((path, pin)) => (path, parse_pin(pin)?),
        };
        let (namespace, name) = match path.split_once('/') {
            None => (Namespace::Any, path),
            Some(("", _)) => {
                return Err(invalid(format!(
                    "exchanger reference {text:?} has an empty owner before '/'"
                )));
            }
            Some((SHARED_OWNER, name)) => (Namespace::Shared, name),
            Some((owner, name)) => (Namespace::User(owner.to_owned()), name),
        };
        validate_name(name)?;
        Ok(Self {
            namespace,
            name: name.to_owned(),
            pin,
        })
    }
}

impl std::fmt::Display for ExchangerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Namespace::Any => {}
            Namespace::Shared => write!(f, "{SHARED_OWNER}/")?,
            Namespace::User(owner) => write!(f, "{owner}/")?,
        }
        f.write_str(&self.name)?;
        match &self.pin {
            Pin::Latest => Ok(()),
            Pin::Version(v) => write!(f, "@{v}"),
            Pin::Sha256(h) => write!(f, "@sha256:{h}"),
        }
    }
}

fn parse_pin(pin: &str) -> Result<Pin> {
    if let Some(hex) = pin.strip_prefix("sha256:") {
        let hex = hex.to_ascii_lowercase();
        if hex.len() < MIN_SHA_PREFIX
            || hex.len() > 64
            || !hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(invalid(format!(
                "sha256 pin {pin:?} must be {MIN_SHA_PREFIX} to 64 hex digits"
            )));
        }
        return Ok(Pin::Sha256(hex));
    }
    let ok = !pin.is_empty()
        && pin.len() <= 64
        && pin
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-+_".contains(&b));
    if ok {
        Ok(Pin::Version(pin.to_owned()))
    } else {
        Err(invalid(format!(
            "version pin {pin:?} must be 1-64 characters of [A-Za-z0-9.+_-], or sha256:HEX"
        )))
    }
}

/// Exchanger names: 1 to 64 of `[a-z0-9_]`, so they are safe as file names too.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "exchanger name {name:?} must be 1-64 characters of [a-z0-9_]"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_qualified_and_pinned_references_parse() {
        let r = ExchangerRef::parse("classify").unwrap();
        assert_eq!((r.namespace, r.pin), (Namespace::Any, Pin::Latest));
        let r = ExchangerRef::parse("alice/classify@1.2.0").unwrap();
        assert_eq!(r.namespace, Namespace::User("alice".into()));
        assert_eq!(r.name, "classify");
        assert_eq!(r.pin, Pin::Version("1.2.0".into()));
        let r = ExchangerRef::parse("shared/classify@sha256:ABCDEF0123").unwrap();
        assert_eq!(r.namespace, Namespace::Shared);
        assert_eq!(r.pin, Pin::Sha256("abcdef0123".into()));
        assert_eq!(r.to_string(), "shared/classify@sha256:abcdef0123");
    }

    #[test]
    fn owners_may_hold_any_character_but_slash_and_at() {
        let r = ExchangerRef::parse("o'brien.x/classify").unwrap();
        assert_eq!(r.namespace, Namespace::User("o'brien.x".into()));
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "",
            "/classify",
            "Classify",
            "a/b/c",
            "classify@",
            "classify@sha256:abc",
            "classify@sha256:zzzzzzzzzz",
            "classify@1 2",
            &format!("classify@sha256:{}", "a".repeat(65)),
            &"x".repeat(MAX_REF_BYTES + 1),
            &"x".repeat(65),
            "../etc/passwd",
        ] {
            assert!(ExchangerRef::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn names_at_their_limits() {
        assert!(validate_name(&"a".repeat(64)).is_ok());
        assert!(validate_name(&"a".repeat(65)).is_err());
        assert!(validate_name("a-b").is_err());
    }
}
