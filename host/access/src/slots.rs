//! Per-user caps on concurrent streams: each running stream holds a [`Slot`],
//! freed when the stream ends or its client goes away.

use mallard_core::{Error, Result};
use mallard_db::query::OutputBudget;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// Counts one kind of running stream per user against a cap.
pub struct UserSlots {
    what: &'static str,
    flag: &'static str,
    max_per_user: usize,
    in_use: Mutex<HashMap<String, usize>>,
}

/// One running stream; frees its slot when dropped.
pub struct Slot {
    slots: Arc<UserSlots>,
    user: String,
}

impl UserSlots {
    /// At most `max_per_user` concurrent `what` streams per user; `flag` names
    /// the setting that raises the cap, for the ResourceExhausted message.
    pub fn new(what: &'static str, flag: &'static str, max_per_user: usize) -> Arc<Self> {
        Arc::new(Self {
            what,
            flag,
            max_per_user,
            in_use: Mutex::new(HashMap::new()),
        })
    }

    /// Streams running now, all users together.
    pub fn total(&self) -> usize {
        self.in_use.lock().expect("slot lock").values().sum()
    }

    /// Takes a slot for `user`, or ResourceExhausted at the cap.
    pub fn acquire(self: &Arc<Self>, user: &str) -> Result<Slot> {
        let mut in_use = self.in_use.lock().expect("slot lock");
        let count = in_use.entry(user.to_owned()).or_default();
        if *count >= self.max_per_user {
            return Err(Error::resource_exhausted(format!(
                "user {user:?} already runs {} {}, the most allowed at once ({})",
                self.max_per_user, self.what, self.flag
            )));
        }
        *count += 1;
        Ok(Slot {
            slots: self.clone(),
            user: user.to_owned(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut in_use = self.slots.in_use.lock().expect("slot lock");
        if let Some(count) = in_use.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                in_use.remove(&self.user);
            }
        }
    }
}

/// Each user's [`OutputBudget`] for queued query output, made on first use
/// (one per configured user, so the table is bounded by the users file).
pub struct OutputBudgets {
    bytes: usize,
    by_user: Mutex<HashMap<String, OutputBudget>>,
}

impl OutputBudgets {
    /// Budgets of `bytes` each (clamped to what a semaphore can count).
    pub fn new(bytes: usize) -> Self {
        Self {
            bytes: bytes.clamp(1, u32::MAX as usize),
            by_user: Mutex::new(HashMap::new()),
        }
    }

    /// `user`'s budget.
    pub fn of(&self, user: &str) -> OutputBudget {
        let mut by_user = self.by_user.lock().expect("budget lock");
        by_user
            .entry(user.to_owned())
            .or_insert_with(|| OutputBudget {
                permits: Arc::new(Semaphore::new(self.bytes)),
                bytes: self.bytes,
            })
            .clone()
    }

    /// Bytes of query output queued now, all users together.
    pub fn in_use(&self) -> usize {
        let by_user = self.by_user.lock().expect("budget lock");
        by_user
            .values()
            .map(|b| b.bytes - b.permits.available_permits())
            .sum()
    }
}

/// Each user's guest-memory pool: every live instance of theirs draws on it.
pub struct MemoryPools {
    per_user_bytes: usize,
    pools: Mutex<HashMap<String, Arc<mallard_sandbox::store::MemoryPool>>>,
}

impl MemoryPools {
    /// Pools of `per_user_bytes` each.
    pub fn new(per_user_bytes: usize) -> Self {
        Self {
            per_user_bytes,
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// `user`'s pool (created on first use; one per authenticated user, so the
    /// map is bounded by the users file).
    pub fn of(&self, user: &str) -> Arc<mallard_sandbox::store::MemoryPool> {
        self.pools
            .lock()
            .expect("pool lock")
            .entry(user.to_owned())
            .or_insert_with(|| mallard_sandbox::store::MemoryPool::new(self.per_user_bytes))
            .clone()
    }

    /// Guest memory held now, all users together.
    pub fn in_use(&self) -> usize {
        self.pools
            .lock()
            .expect("pool lock")
            .values()
            .map(|p| p.used_bytes())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_per_user_and_slots_come_back() {
        let slots = UserSlots::new("queries", "--max-queries-per-user", 2);
        let a = slots.acquire("alice").unwrap();
        let _b = slots.acquire("alice").unwrap();
        let err = slots.acquire("alice").err().unwrap();
        assert_eq!(err.kind(), mallard_core::ErrorKind::ResourceExhausted);
        assert!(err.to_string().contains("--max-queries-per-user"), "{err}");
        let _c = slots.acquire("bob").unwrap();
        assert_eq!(slots.total(), 3);
        drop(a);
        let _d = slots.acquire("alice").unwrap();
        assert_eq!(slots.total(), 3);
    }
}
