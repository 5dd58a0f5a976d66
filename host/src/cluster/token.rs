//! Cluster tokens: bearer tokens every node of one cluster can verify.
//!
//! Nodes that share a cluster key (`--cluster-key-file`) sign the tokens they
//! issue with HMAC-SHA256 over `user`, `expiry`, `issuer` and a random nonce. A
//! peer that receives one checks the signature and the expiry and then applies
//! *its own* configured role for that user, so a token never carries rights: a
//! user unknown to the peer is refused, and a reader there stays a reader. The
//! issuing node also keeps the token's digest, so logging out and the per-user
//! session cap still hold where it was issued; a peer cannot revoke it before
//! it expires (at most [`MAX_CLUSTER_TOKEN_TTL`]).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use mallard_core::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What every cluster token begins with (tokens without it are node-local).
pub const PREFIX: &str = "mallard-cluster1.";
/// Fewest bytes a cluster key file may hold.
pub const MIN_KEY_BYTES: usize = 32;
/// Longest lifetime a peer accepts on a cluster token, whatever the issuer says.
pub const MAX_CLUSTER_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest cluster token a node reads (a signed token is about 200 characters).
const MAX_TOKEN_CHARS: usize = 1024;

/// The key the nodes of one cluster share.
#[derive(Clone)]
pub struct ClusterKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// What a cluster token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The user the token was issued to.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// The issuing node's id (random per server start).
    pub iss: String,
    /// Random, so two tokens for one user in one second differ.
    pub jti: String,
}

impl ClusterKey {
    /// A key from the bytes of a key file (surrounding whitespace ignored);
    /// InvalidArgument below [`MIN_KEY_BYTES`].
    pub fn new(bytes: &[u8]) -> Result<Self> {
        let secret = bytes.trim_ascii().to_vec();
        if secret.len() < MIN_KEY_BYTES {
            return Err(Error::invalid_argument(format!(
                "a cluster key needs at least {MIN_KEY_BYTES} bytes, this one has {}; \
                 e.g. `head -c 48 /dev/urandom | base64 > cluster.key`",
                secret.len()
            )));
        }
        Ok(Self { secret })
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(payload);
        mac
    }

    /// Signs `claims` into a token.
    pub fn sign(&self, claims: &Claims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
        let tag = URL_SAFE_NO_PAD.encode(self.mac(payload.as_bytes()).finalize().into_bytes());
        format!("{PREFIX}{payload}.{tag}")
    }

    /// A token for `user` issued by `issuer`, valid for `ttl` from now.
    pub fn issue(&self, user: &str, issuer: &str, ttl: Duration) -> String {
        self.sign(&Claims {
            sub: user.to_owned(),
            exp: unix_now().saturating_add(ttl.as_secs().max(1)),
            iss: issuer.to_owned(),
            jti: format!("{:032x}", rand::random::<u128>()),
        })
    }

    /// The claims of a token this key signed that has not expired and does not
    /// claim more than [`MAX_CLUSTER_TOKEN_TTL`]; Unauthenticated otherwise.
    pub fn verify(&self, token: &str) -> Result<Claims> {
        self.verify_at(token, unix_now())
    }

    fn verify_at(&self, token: &str, now: u64) -> Result<Claims> {
        let invalid = || Error::unauthenticated("invalid bearer token");
        if token.len() > MAX_TOKEN_CHARS {
            return Err(invalid());
        }
        let body = token.strip_prefix(PREFIX).ok_or_else(invalid)?;
        let (payload, tag) = body.split_once('.').ok_or_else(invalid)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
        self.mac(payload.as_bytes())
            .verify_slice(&tag)
            .map_err(|_| invalid())?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| invalid())?;
        if claims.exp <= now {
            return Err(Error::unauthenticated(
                "bearer token expired; authenticate again",
            ));
        }
        if claims.exp - now > MAX_CLUSTER_TOKEN_TTL.as_secs() {
            return Err(invalid());
        }
        Ok(claims)
    }
}

/// Whether `token` has the shape of a cluster token (it may still be forged).
pub fn is_cluster_token(token: &str) -> bool {
    token.starts_with(PREFIX)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::new(&[byte; MIN_KEY_BYTES]).unwrap()
    }

    #[test]
    fn a_token_verifies_under_its_key_only() {
        let token = key(1).issue("alice", "node-a", Duration::from_secs(60));
        assert!(is_cluster_token(&token));
        let claims = key(1).verify(&token).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.iss.as_str()),
            ("alice", "node-a")
        );
        assert!(key(2).verify(&token).is_err());
    }

    #[test]
    fn a_changed_claim_breaks_the_signature() {
        let token = key(1).issue("alice", "node-a", Duration::from_secs(60));
        let (payload, tag) = token[PREFIX.len()..].split_once('.').unwrap();
        let mut claims: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        claims.sub = "admin".into();
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        let err = key(1)
            .verify(&format!("{PREFIX}{forged}.{tag}"))
            .unwrap_err();
        assert_eq!(err.kind(), mallard_core::ErrorKind::Unauthenticated);
    }

    #[test]
    fn expired_and_overlong_tokens_are_refused() {
        let k = key(1);
        let far = MAX_CLUSTER_TOKEN_TTL.as_secs();
        let exp = 10 * far;
        let token = k.sign(&Claims {
            sub: "alice".into(),
            exp,
            iss: "n".into(),
            jti: "j".into(),
        });
        assert!(k.verify_at(&token, exp - 1).is_ok());
        let err = k.verify_at(&token, exp).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        assert!(k.verify_at(&token, exp - far).is_ok(), "at the limit");
        assert!(
            k.verify_at(&token, exp - far - 1).is_err(),
            "beyond the limit"
        );
    }

    #[test]
    fn malformed_tokens_are_refused_without_panicking() {
        let k = key(1);
        for token in [
            "",
            PREFIX,
            "mallard-cluster1.x",
            "mallard-cluster1.a.b",
            "mallard-cluster1..",
            "mallard-cluster1.!!.!!",
            &format!("{PREFIX}{}", "a".repeat(4096)),
        ] {
            assert!(k.verify(token).is_err(), "{token:.40}");
        }
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(ClusterKey::new(&[7; MIN_KEY_BYTES - 1]).is_err());
        assert!(ClusterKey::new(b"  \n").is_err());
        let padded = [vec![b' '], vec![7; MIN_KEY_BYTES], vec![b'\n']].concat();
        assert!(ClusterKey::new(&padded).is_ok());
    }
}
