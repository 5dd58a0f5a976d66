//! Authentication: Basic credentials, random expiring bearer tokens, roles.
//!
//! Passwords are kept only as argon2id hashes (PHC strings, as `mallard
//! hash-password` prints them). Tokens are 256 random bits, handed out by `Handshake`
//! or in answer to any call carrying Basic credentials; the server keeps only their
//! SHA-256 digests and compares digests in constant time. Neither tokens nor
//! passwords are ever logged.

use crate::error::{Error, Result};
use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;

pub use mallard_protocol::credentials::basic_header;
use mallard_protocol::credentials::{Credentials, parse_authorization};
pub use mallard_protocol::users::Role;

/// The seeds' development credentials, used when no users are configured.
pub const DEFAULT_USER: &str = "admin";
/// See [`DEFAULT_USER`].
pub const DEFAULT_PASSWORD: &str = "password123";
/// How long a bearer token stays valid unless configured otherwise.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// A named right, reported in PermissionDenied messages.
#[derive(Debug, Clone, Copy)]
pub enum Right {
    /// Upload or remove exchangers.
    ManageExchangers,
    /// DDL/DML through the `sql` and `drop_table` actions.
    ManageTables,
}

/// The caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User name.
    pub user: String,
    /// The user's role.
    pub role: Role,
}

impl Principal {
    /// PermissionDenied unless this principal holds `right`.
    pub fn require(&self, right: Right) -> Result<()> {
        match (self.role, right) {
            (Role::Admin, _) => Ok(()),
            (Role::User, right) => Err(Error::PermissionDenied(format!(
                "user {:?} (role user) lacks the right {right:?}; it needs role admin",
                self.user
            ))),
        }
    }
}

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

/// Checks credentials and issues tokens.
pub struct Authenticator {
    users: HashMap<String, User>,
    token_ttl: Duration,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
}

/// The outcome of authenticating one call.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Who is calling.
    pub principal: Principal,
    /// A token issued because the call carried Basic credentials; sent back as
    /// `authorization: Bearer <token>`.
    pub issued_token: Option<String>,
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
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the development default credentials are in effect.
    pub fn uses_default_credentials(&self) -> bool {
        self.users.len() == 1
            && self
                .users
                .get(DEFAULT_USER)
                .is_some_and(|u| u.verify(DEFAULT_PASSWORD))
    }

    /// Checks a user name and password.
    pub fn check_password(&self, user: &str, password: &str) -> Result<Principal> {
        // Verify against a dummy when the user is unknown so timing does not tell.
        let (known, entry) = match self.users.get(user) {
            Some(u) => (true, u),
            None => (false, &*DUMMY_USER),
        };
        if entry.verify(password) && known {
            Ok(Principal {
                user: user.to_owned(),
                role: entry.role,
            })
        } else {
            Err(Error::Unauthenticated(
                "invalid user name or password".into(),
            ))
        }
    }

    /// Issues a new bearer token for `principal`.
    pub fn issue_token(&self, principal: Principal) -> String {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let token = URL_SAFE_NO_PAD.encode(raw);
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut sessions = self.sessions.lock().expect("session table lock");
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            key,
            Session {
                principal,
                expires: now + self.token_ttl,
            },
        );
        token
    }

    /// Revokes a token (logout). Unknown tokens are ignored.
    pub fn revoke(&self, token: &str) {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.sessions
            .lock()
            .expect("session table lock")
            .remove(&key);
    }

    /// Checks a bearer token.
    pub fn check_token(&self, token: &str) -> Result<Principal> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let sessions = self.sessions.lock().expect("session table lock");
        // Lookup is by digest; a digest prefix says nothing about the token.
        match sessions.iter().find(|(k, _)| bool::from(k.ct_eq(&key))) {
            Some((_, s)) if s.expires > Instant::now() => Ok(s.principal.clone()),
            Some(_) => Err(Error::Unauthenticated(
                "bearer token expired; authenticate again".into(),
            )),
            None => Err(Error::Unauthenticated("invalid bearer token".into())),
        }
    }

    /// Authenticates a call from its `authorization` header (Basic or Bearer).
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Authenticated> {
        let header = metadata
            .get("authorization")
            .ok_or_else(|| {
                Error::Unauthenticated("no authorization header; use Basic or Bearer".into())
            })?
            .to_str()
            .map_err(|_| Error::Unauthenticated("authorization header is not ASCII".into()))?;
        match parse_authorization(header)? {
            Credentials::Bearer(token) => Ok(Authenticated {
                principal: self.check_token(token)?,
                issued_token: None,
            }),
            Credentials::Basic { user, password } => {
                let principal = self.check_password(&user, &password)?;
                let token = self.issue_token(principal.clone());
                Ok(Authenticated {
                    principal,
                    issued_token: Some(token),
                })
            }
        }
    }
}
