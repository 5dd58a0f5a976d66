//! Server-side handles Flight SQL clients hold between calls (prepared
//! statements, transactions): owned by one user, bounded per user and in all,
//! and forgotten after an idle time.
//!
//! A handle is 128 random bits, so it cannot be guessed, and every lookup
//! checks the owner as well: another user's handle is NotFound, exactly like a
//! handle that never existed.

use mallard_core::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many entries of one kind a registry holds, per user and in all, and how
/// long an entry may sit unused.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entries one user may hold.
    pub per_user: usize,
    /// Entries all users together may hold.
    pub total: usize,
    /// An entry unused this long is dropped (a transaction's is rolled back).
    pub idle: Duration,
}

struct Entry<T> {
    owner: String,
    value: Arc<T>,
    used: Instant,
}

/// A bounded table of `T` by handle.
pub struct Registry<T> {
    what: &'static str,
    limits: Limits,
    entries: Mutex<HashMap<String, Entry<T>>>,
}

impl<T> Registry<T> {
    /// An empty registry of `what` (for messages: "prepared statements").
    pub fn new(what: &'static str, limits: Limits) -> Self {
        Self {
            what,
            limits,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The limits it enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<T>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops entries idle for longer than the limit; returns them, so the
    /// caller can release what they hold off the lock.
    pub fn expire(&self, now: Instant) -> Vec<Arc<T>> {
        let idle = self.limits.idle;
        let mut entries = self.lock();
        let stale: Vec<String> = entries
            .iter()
            .filter(|(_, e)| now.duration_since(e.used) > idle)
            .map(|(k, _)| k.clone())
            .collect();
        stale
            .into_iter()
            .filter_map(|k| entries.remove(&k).map(|e| e.value))
            .collect()
    }

    /// Adds `value` for `owner` under a new random handle; ResourceExhausted at
    /// either limit.
    pub fn insert(&self, owner: &str, value: T) -> Result<String> {
        drop(self.expire(Instant::now()));
        let mut entries = self.lock();
        let mine = entries.values().filter(|e| e.owner == owner).count();
        if mine >= self.limits.per_user {
            return Err(Error::resource_exhausted(format!(
                "user {owner:?} holds {mine} open {what}, the most allowed; close one first",
                what = self.what
            )));
        }
        if entries.len() >= self.limits.total {
            return Err(Error::resource_exhausted(format!(
                "the server holds {} open {}, the most allowed; try again later",
                entries.len(),
                self.what
            )));
        }
        let handle = format!("{:032x}", rand::random::<u128>());
        entries.insert(
            handle.clone(),
            Entry {
                owner: owner.to_owned(),
                value: Arc::new(value),
                used: Instant::now(),
            },
        );
        Ok(handle)
    }

    /// `owner`'s entry `handle`, marked as used now.
    pub fn get(&self, owner: &str, handle: &[u8]) -> Result<Arc<T>> {
        let mut entries = self.lock();
        match std::str::from_utf8(handle)
            .ok()
            .and_then(|h| entries.get_mut(h))
        {
            Some(entry) if entry.owner == owner => {
                entry.used = Instant::now();
                Ok(entry.value.clone())
            }
            _ => Err(self.not_found(handle)),
        }
    }

    /// Removes and returns `owner`'s entry `handle`.
    pub fn remove(&self, owner: &str, handle: &[u8]) -> Result<Arc<T>> {
        let mut entries = self.lock();
        let key = std::str::from_utf8(handle).unwrap_or_default();
        match entries.get(key) {
            Some(entry) if entry.owner == owner => Ok(entries.remove(key).expect("present").value),
            _ => Err(self.not_found(handle)),
        }
    }

    /// How many entries are held (all users).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn not_found(&self, handle: &[u8]) -> Error {
        let shown: String = String::from_utf8_lossy(handle).chars().take(40).collect();
        Error::not_found(format!(
            "no open {} with handle {shown:?} (closed, expired after {:?} idle, or not yours)",
            self.what, self.limits.idle
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(per_user: usize, total: usize) -> Registry<u32> {
        Registry::new(
            "things",
            Limits {
                per_user,
                total,
                idle: Duration::from_secs(60),
            },
        )
    }

    #[test]
    fn owners_are_checked_and_handles_unguessable() {
        let r = registry(4, 8);
        let h = r.insert("alice", 7).unwrap();
        assert_eq!(h.len(), 32);
        assert_eq!(*r.get("alice", h.as_bytes()).unwrap(), 7);
        let e = r.get("bob", h.as_bytes()).err().unwrap();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert_eq!(
            r.remove("bob", h.as_bytes()).err().unwrap().code(),
            tonic::Code::NotFound
        );
        assert_eq!(*r.remove("alice", h.as_bytes()).unwrap(), 7);
        assert!(r.get("alice", h.as_bytes()).is_err());
        assert!(r.get("alice", &[0xff, 0xfe]).is_err());
    }

    #[test]
    fn limits_hold_at_their_edge() {
        let r = registry(2, 3);
        r.insert("alice", 1).unwrap();
        r.insert("alice", 2).unwrap();
        let e = r.insert("alice", 3).err().unwrap();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        r.insert("bob", 1).unwrap();
        let e = r.insert("carol", 1).err().unwrap();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn idle_entries_expire() {
        let r = registry(2, 3);
        let h = r.insert("alice", 1).unwrap();
        assert!(r.expire(Instant::now()).is_empty());
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(r.expire(later).len(), 1);
        assert!(r.get("alice", h.as_bytes()).is_err());
    }
}
