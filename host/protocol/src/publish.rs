//! The `publish_exchanger` body: an exchanger reference, or a JSON object that
//! names one and asks for the peers too.
//!
//! ```text
//! alice/classify@sha256:…
//! {"exchanger": "alice/classify@sha256:…", "to_peers": true}
//! ```
//!
//! A body is read as JSON when it parses as a JSON object, else as a
//! reference (an owner name may begin with `{`).

use crate::exchanger_ref::ExchangerRef;
use crate::{Result, invalid};
use serde::Deserialize;

/// A parsed `publish_exchanger`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// The user's version to copy into the shared namespace.
    pub exchanger: ExchangerRef,
    /// Publish the same version (by its sha256) on every peer too, as the caller.
    pub to_peers: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    exchanger: String,
    #[serde(default)]
    to_peers: bool,
}

impl PublishRequest {
    /// Parses a `publish_exchanger` body.
    pub fn parse(body: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(body)
            .map_err(|_| invalid("the exchanger reference is not UTF-8"))?;
        let trimmed = text.trim();
        if trimmed.starts_with('{')
            && let Ok(serde_json::Value::Object(_)) = serde_json::from_str(trimmed)
        {
            let json: JsonRequest = serde_json::from_str(trimmed)
                .map_err(|e| invalid(format!("publish_exchanger options: {e}")))?;
            return Ok(Self {
                exchanger: ExchangerRef::parse(&json.exchanger)?,
                to_peers: json.to_peers,
            });
        }
        // Else a reference (an owner's name may begin with '{').
        Ok(Self {
            exchanger: ExchangerRef::parse(trimmed)?,
            to_peers: false,
        })
    }

    /// The body that publishes `exchanger` (and on the peers, if `to_peers`).
    pub fn encode(exchanger: &ExchangerRef, to_peers: bool) -> String {
        if to_peers {
            serde_json::json!({ "exchanger": exchanger.to_string(), "to_peers": true }).to_string()
        } else {
            exchanger.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchanger_ref::{Namespace, Pin};

    #[test]
    fn a_reference_or_an_object_naming_one() {
        let plain = PublishRequest::parse(b" alice/classify ").unwrap();
        assert_eq!(plain.exchanger.namespace, Namespace::User("alice".into()));
        assert!(!plain.to_peers);
        let json =
            PublishRequest::parse(br#"{"exchanger": "alice/classify@1.0.0", "to_peers": true}"#)
                .unwrap();
        assert_eq!(json.exchanger.name, "classify");
        assert!(matches!(json.exchanger.pin, Pin::Version(_)));
        assert!(json.to_peers);
        assert!(
            !PublishRequest::parse(br#"{"exchanger": "classify"}"#)
                .unwrap()
                .to_peers
        );
    }

    #[test]
    fn an_owner_beginning_with_a_brace_is_still_a_reference() {
        let odd = PublishRequest::parse(b"{bob/classify").unwrap();
        assert_eq!(odd.exchanger.namespace, Namespace::User("{bob".into()));
    }

    #[test]
    fn bad_objects_are_refused_with_the_reason() {
        for (body, why) in [
            (
                &br#"{"exchanger": "a/b", "to_peer": true}"#[..],
                "unknown field",
            ),
            (br#"{"to_peers": true}"#, "missing field"),
            (br#"{"exchanger": "a/B!"}"#, "exchanger"),
            (br#"{"exchanger": 7}"#, "invalid type"),
            (b"\xff", "UTF-8"),
        ] {
            let e = PublishRequest::parse(body).unwrap_err().to_string();
            assert!(e.contains(why), "{body:?}: {e}");
        }
    }

    #[test]
    fn encoding_round_trips() {
        let reference =
            ExchangerRef::parse(&format!("alice/classify@sha256:{}", "0f".repeat(32))).unwrap();
        for to_peers in [false, true] {
            let body = PublishRequest::encode(&reference, to_peers);
            let back = PublishRequest::parse(body.as_bytes()).unwrap();
            assert_eq!(back.exchanger, reference);
            assert_eq!(back.to_peers, to_peers);
        }
    }
}
