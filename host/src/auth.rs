//! Authentication: Basic credentials, random expiring bearer tokens, roles.
//!
//! Passwords are kept only as argon2id hashes (PHC strings, as `mallard
//! hash-password` prints them). Tokens are 256 random bits, handed out by `Handshake`
//! or in answer to any call carrying Basic credentials; the server keeps only their
//! SHA-256 digests, looked up by digest. With a cluster key the token is signed
//! instead (see [`crate::cluster::token`]) so the cluster's other nodes accept it
//! too, each with its own role for the user; the digest is kept all the same.
//! Password checks run off the async runtime, a few at a time, and an address
//! that keeps failing is refused unverified for a while. Neither tokens nor passwords are ever logged.

use crate::cluster::{self, token::ClusterKey};
use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mallard_core::{Error, Result};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tonic::metadata::MetadataMap;

pub use mallard_access::{Principal, Role};
pub use mallard_protocol::credentials::basic_header;
use mallard_protocol::credentials::{Credentials, parse_authorization};

/// How long a token a node mints to call its peers for a caller stays valid.
pub const ACTING_FOR_CALLER_TTL: Duration = Duration::from_secs(60);

/// The seeds' development credentials, used when no users are configured.
pub const DEFAULT_USER: &str = "admin";
/// See [`DEFAULT_USER`].
pub const DEFAULT_PASSWORD: &str = "password123";
/// How long a bearer token stays valid unless configured otherwise.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// A configured user: an argon2id password hash and a role.
#[derive(Clone)]
pub struct User {
    password_hash: String,
    role: Role,
}

impl User {
    /// A user with a plain-text password (hashed with argon2id on the spot).
    pub fn new(password: &str, role: Role) -> Self {
        Self {
            password_hash: hash_password(password),
            role,
        }
    }

    /// A user from a stored PHC hash (`$argon2id$...`); InvalidArgument if malformed.
    pub fn from_hash(password_hash: &str, role: Role) -> Result<Self> {
        mallard_protocol::users::check_password_hash(password_hash)?;
        Ok(Self {
            password_hash: password_hash.to_owned(),
            role,
        })
    }

    fn verify(&self, password: &str) -> bool {
        PasswordHash::new(&self.password_hash).is_ok_and(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
    }
}

/// Hashes a password with argon2id and a random salt, as a PHC string.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

/// Verified against when the user name is unknown, so timing does not tell.
static DUMMY_USER: std::sync::LazyLock<User> =
    std::sync::LazyLock::new(|| User::new("mallard-dummy-password", Role::User));

/// Parses a users file (see [`mallard_protocol::users`]) into users by name.
pub fn parse_users_file(text: &str) -> Result<HashMap<String, User>> {
    mallard_protocol::users::parse_users_file(text)?
        .into_iter()
        .map(|u| Ok((u.name, User::from_hash(&u.password_hash, u.role)?)))
        .collect()
}

struct Session {
    principal: Principal,
    expires: Instant,
}

/// Most live bearer tokens one user holds; issuing one more retires the oldest.
/// Each costs ~150 bytes; a load of 32 clients with two connections each as one
/// user needs 64, so there is ample room for honest fan-out.
pub const MAX_SESSIONS_PER_USER: usize = 1024;
/// Concurrent argon2 verifications (each takes ~20 ms of one core and 19 MiB).
pub const MAX_CONCURRENT_PASSWORD_CHECKS: usize = 2;
/// Failed password checks one client address may make per [`FAILURE_WINDOW`];
/// beyond it Basic credentials from that address are refused unverified.
pub const MAX_FAILURES_PER_WINDOW: u32 = 20;
/// The window of [`MAX_FAILURES_PER_WINDOW`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses whose failures are remembered at once (the oldest window is
/// forgotten first beyond this, so the table stays bounded under a spray).
pub const MAX_TRACKED_ADDRESSES: usize = 10_000;

#[derive(Default)]
struct Sessions {
    by_digest: HashMap<[u8; 32], Session>,
    /// Each user's token digests, oldest first (tokens of one server share a TTL,
    /// so this is also expiry order).
    by_user: HashMap<String, VecDeque<[u8; 32]>>,
}

impl Sessions {
    fn remove(&mut self, key: &[u8; 32]) -> bool {
        let Some(session) = self.by_digest.remove(key) else {
            return false;
        };
        if let Some(keys) = self.by_user.get_mut(&session.principal.user) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.by_user.remove(&session.principal.user);
            }
        }
        true
    }

    fn insert(&mut self, key: [u8; 32], session: Session, now: Instant) {
        let user = session.principal.user.clone();
        let keys = self.by_user.entry(user).or_default();
        let mut retired = Vec::new();
        while let Some(oldest) = keys.front() {
            let expired = self.by_digest.get(oldest).is_none_or(|s| s.expires <= now);
            if expired || keys.len() >= MAX_SESSIONS_PER_USER {
                retired.push(keys.pop_front().expect("front exists"));
            } else {
                break;
            }
        }
        keys.push_back(key);
        for k in retired {
            self.by_digest.remove(&k);
        }
        self.by_digest.insert(key, session);
    }
}

/// Failed password checks per client address, in fixed windows.
#[derive(Default)]
struct Failures {
    by_address: HashMap<IpAddr, (Instant, u32)>,
}

impl Failures {
    fn blocked(&self, address: IpAddr, now: Instant) -> bool {
        self.by_address.get(&address).is_some_and(|(start, n)| {
            now.duration_since(*start) < FAILURE_WINDOW && *n >= MAX_FAILURES_PER_WINDOW
        })
    }

    fn record(&mut self, address: IpAddr, now: Instant) {
        if self.by_address.len() >= MAX_TRACKED_ADDRESSES && !self.by_address.contains_key(&address)
        {
            self.by_address
                .retain(|_, (start, _)| now.duration_since(*start) < FAILURE_WINDOW);
            if self.by_address.len() >= MAX_TRACKED_ADDRESSES {
                self.by_address.clear();
            }
        }
        let entry = self.by_address.entry(address).or_insert((now, 0));
        if now.duration_since(entry.0) >= FAILURE_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

/// Checks credentials and issues tokens.
pub struct Authenticator {
    users: HashMap<String, User>,
    token_ttl: Duration,
    /// The cluster's shared key, when this node is one of several.
    cluster: Option<ClusterKey>,
    /// This server's id in the tokens it signs (random per start).
    node_id: String,
    sessions: Mutex<Sessions>,
    failures: Mutex<Failures>,
    password_checks: Arc<Semaphore>,
}

/// The outcome of authenticating one call.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Who is calling.
    pub principal: Principal,
    /// A token issued because the call carried Basic credentials; sent back as
    /// `authorization: Bearer <token>`.
    pub issued_token: Option<String>,
    /// The bearer token the call presented, if it presented one.
    pub presented_token: Option<String>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Authenticator {
    /// An authenticator over `users`; empty means the seeds' `admin`/`password123`.
    pub fn new(mut users: HashMap<String, User>, token_ttl: Duration) -> Self {
        if users.is_empty() {
            users.insert(
                DEFAULT_USER.into(),
                User::new(DEFAULT_PASSWORD, Role::Admin),
            );
        }
        Self {
            users,
            token_ttl,
            cluster: None,
            node_id: format!("{:032x}", rand::random::<u128>()),
            sessions: Mutex::new(Sessions::default()),
            failures: Mutex::new(Failures::default()),
            password_checks: Arc::new(Semaphore::new(MAX_CONCURRENT_PASSWORD_CHECKS)),
        }
    }

    /// Signs the tokens this server issues with the cluster's key, and accepts
    /// the ones its peers issued (see [`crate::cluster::token`]).
    pub fn with_cluster_key(mut self, key: Option<ClusterKey>) -> Self {
        self.cluster = key;
        self
    }

    /// A short-lived cluster token for `principal`, to call a peer as that user
    /// (the peer applies its own role for the user). It is not valid on this
    /// server; `None` without a cluster key.
    pub fn token_for_peers(&self, principal: &Principal) -> Option<String> {
        self.cluster
            .as_ref()
            .map(|key| key.issue(&principal.user, &self.node_id, ACTING_FOR_CALLER_TTL))
    }

    /// Whether the development default credentials are in effect.
    pub fn uses_default_credentials(&self) -> bool {
        self.users.len() == 1
            && self
                .users
                .get(DEFAULT_USER)
                .is_some_and(|u| u.verify(DEFAULT_PASSWORD))
    }

    /// Checks a user name and password on a blocking thread, at most
    /// [`MAX_CONCURRENT_PASSWORD_CHECKS`] at once, and refuses unverified an
    /// address that failed [`MAX_FAILURES_PER_WINDOW`] times in the window.
    pub async fn check_password(
        &self,
        user: &str,
        password: &str,
        peer: Option<IpAddr>,
    ) -> Result<Principal> {
        if let Some(address) = peer
            && self
                .failures
                .lock()
                .expect("failure table lock")
                .blocked(address, Instant::now())
        {
            return Err(Error::unauthenticated(format!(
                "too many failed logins from {address}; wait up to {} s",
                FAILURE_WINDOW.as_secs()
            )));
        }
        // Verify against a dummy when the user is unknown so timing does not tell.
        let (known, entry) = match self.users.get(user) {
            Some(u) => (true, u.clone()),
            None => (false, DUMMY_USER.clone()),
        };
        let _permit = self
            .password_checks
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::unavailable("server is shutting down"))?;
        let password = password.to_owned();
        let verified = tokio::task::spawn_blocking(move || entry.verify(&password))
            .await
            .map_err(|e| Error::internal(format!("password check failed: {e}")))?;
        if verified && known {
            Ok(Principal {
                user: user.to_owned(),
                role: self.users[user].role,
            })
        } else {
            if let Some(address) = peer {
                self.failures
                    .lock()
                    .expect("failure table lock")
                    .record(address, Instant::now());
            }
            Err(Error::unauthenticated("invalid user name or password"))
        }
    }

    /// Issues a new bearer token for `principal`, retiring the user's oldest
    /// beyond [`MAX_SESSIONS_PER_USER`].
    pub fn issue_token(&self, principal: Principal) -> String {
        let token = match &self.cluster {
            Some(key) => key.issue(&principal.user, &self.node_id, self.token_ttl),
            None => {
                let mut raw = [0u8; 32];
                rand::rng().fill_bytes(&mut raw);
                URL_SAFE_NO_PAD.encode(raw)
            }
        };
        let now = Instant::now();
        self.sessions.lock().expect("session table lock").insert(
            digest(&token),
            Session {
                principal,
                expires: now + self.token_ttl,
            },
            now,
        );
        token
    }

    /// Revokes a token (logout); whether it was live.
    pub fn revoke(&self, token: &str) -> bool {
        self.sessions
            .lock()
            .expect("session table lock")
            .remove(&digest(token))
    }

    /// Live tokens, all users together.
    pub fn live_sessions(&self) -> usize {
        self.sessions
            .lock()
            .expect("session table lock")
            .by_digest
            .len()
    }

    /// Checks a bearer token (one hash-map lookup by the token's SHA-256 digest).
    pub fn check_token(&self, token: &str) -> Result<Principal> {
        let key = digest(token);
        let mut sessions = self.sessions.lock().expect("session table lock");
        match sessions.by_digest.get(&key) {
            Some(s) if s.expires > Instant::now() => Ok(s.principal.clone()),
            Some(_) => {
                sessions.remove(&key);
                Err(Error::unauthenticated(
                    "bearer token expired; authenticate again",
                ))
            }
            None => {
                drop(sessions);
                self.check_peer_token(token)
            }
        }
    }

    /// A token another node of the cluster signed: the user's role *here*.
    fn check_peer_token(&self, token: &str) -> Result<Principal> {
        let invalid = || Error::unauthenticated("invalid bearer token");
        let key = match &self.cluster {
            Some(key) if cluster::token::is_cluster_token(token) => key,
            _ => return Err(invalid()),
        };
        let claims = key.verify(token)?;
        if claims.iss == self.node_id {
            // Issued here and since revoked or retired (or a token meant for peers).
            return Err(invalid());
        }
        let user = self.users.get(&claims.sub).ok_or_else(|| {
            Error::unauthenticated(format!(
                "the cluster token's user {:?} is not known on this node",
                claims.sub
            ))
        })?;
        Ok(Principal {
            user: claims.sub,
            role: user.role,
        })
    }

    /// Authenticates a call from its `authorization` header (Basic or Bearer).
    pub async fn authenticate(
        &self,
        metadata: &MetadataMap,
        peer: Option<IpAddr>,
    ) -> Result<Authenticated> {
        let header = metadata
            .get("authorization")
            .ok_or_else(|| Error::unauthenticated("no authorization header; use Basic or Bearer"))?
            .to_str()
            .map_err(|_| Error::unauthenticated("authorization header is not ASCII"))?;
        match parse_authorization(header)? {
            Credentials::Bearer(token) => Ok(Authenticated {
                principal: self.check_token(token)?,
                issued_token: None,
                presented_token: Some(token.to_owned()),
            }),
            Credentials::Basic { user, password } => {
                let principal = self.check_password(&user, &password, peer).await?;
                let token = self.issue_token(principal.clone());
                Ok(Authenticated {
                    principal,
                    issued_token: Some(token),
                    presented_token: None,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Principal {
        Principal {
            user: "alice".into(),
            role: Role::User,
        }
    }

    #[test]
    fn a_user_holds_at_most_the_session_cap_and_loses_the_oldest() {
        let auth = Authenticator::new(HashMap::new(), Duration::from_secs(60));
        let first = auth.issue_token(alice());
        let mut last = String::new();
        for _ in 0..MAX_SESSIONS_PER_USER {
            last = auth.issue_token(alice());
        }
        assert_eq!(auth.live_sessions(), MAX_SESSIONS_PER_USER);
        assert!(auth.check_token(&first).is_err(), "oldest retired");
        assert!(auth.check_token(&last).is_ok());
        assert!(auth.revoke(&last));
        assert!(!auth.revoke(&last));
        assert_eq!(auth.live_sessions(), MAX_SESSIONS_PER_USER - 1);
    }

    #[test]
    fn expired_tokens_are_refused_and_forgotten() {
        let auth = Authenticator::new(HashMap::new(), Duration::ZERO);
        let token = auth.issue_token(alice());
        let err = auth.check_token(&token).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        assert_eq!(auth.live_sessions(), 0);
    }

    fn node(alice_role: Option<Role>) -> Authenticator {
        let mut users = HashMap::new();
        if let Some(role) = alice_role {
            // A hash computed once would do; argon2 per node keeps the test honest.
            users.insert("alice".to_owned(), User::new("pw", role));
        }
        users.insert("admin".to_owned(), User::new("pw", Role::Admin));
        Authenticator::new(users, Duration::from_secs(60))
            .with_cluster_key(Some(ClusterKey::new(&[b'k'; 32]).unwrap()))
    }

    #[test]
    fn a_peer_accepts_a_cluster_token_with_its_own_role_for_the_user() {
        let (a, b, c) = (
            node(Some(Role::Admin)),
            node(Some(Role::Reader)),
            node(None),
        );
        let token = a.issue_token(Principal {
            user: "alice".into(),
            role: Role::Admin,
        });
        assert_eq!(a.check_token(&token).unwrap().role, Role::Admin);
        assert_eq!(b.check_token(&token).unwrap().role, Role::Reader);
        let err = c.check_token(&token).unwrap_err();
        assert!(err.to_string().contains("not known on this node"), "{err}");
        // Logged out where it was issued: refused there, though its signature holds.
        assert!(a.revoke(&token));
        assert!(a.check_token(&token).is_err());
        // A token minted to call peers is not valid where it was minted.
        let for_peers = a.token_for_peers(&alice()).unwrap();
        assert!(a.check_token(&for_peers).is_err());
        assert!(b.check_token(&for_peers).is_ok());
        // Without a key, a node takes no cluster token at all.
        let keyless = Authenticator::new(HashMap::new(), Duration::from_secs(60));
        assert!(keyless.check_token(&for_peers).is_err());
        assert!(keyless.token_for_peers(&alice()).is_none());
    }

    #[test]
    fn failures_block_an_address_for_the_window_only() {
        let mut failures = Failures::default();
        let address: IpAddr = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        for _ in 0..MAX_FAILURES_PER_WINDOW {
            assert!(!failures.blocked(address, now));
            failures.record(address, now);
        }
        assert!(failures.blocked(address, now));
        assert!(!failures.blocked("10.0.0.2".parse().unwrap(), now));
        assert!(!failures.blocked(address, now + FAILURE_WINDOW));
    }

    #[test]
    fn the_failure_table_stays_bounded() {
        let mut failures = Failures::default();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 10) {
            failures.record(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(failures.by_address.len() <= MAX_TRACKED_ADDRESSES);
    }
}
