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

    /// Takes as many of `wanted` slots for `user` as the cap leaves free (maybe
    /// none): for work that can run on fewer.
    pub fn acquire_up_to(self: &Arc<Self>, user: &str, wanted: usize) -> Vec<Slot> {
        let mut in_use = self.in_use.lock().expect("slot lock");
        let held = in_use.get(user).copied().unwrap_or(0);
        let granted = wanted.min(self.max_per_user.saturating_sub(held));
        if granted > 0 {
            *in_use.entry(user.to_owned()).or_default() += granted;
        }
        (0..granted)
            .map(|_| Slot {
                slots: self.clone(),
                user: user.to_owned(),
            })
            .collect()
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

    #[test]
    fn up_to_takes_what_the_cap_leaves_and_gives_it_back() {
        let slots = UserSlots::new("extra instances", "--max-extra-instances-per-user", 3);
        let first = slots.acquire_up_to("alice", 2);
        assert_eq!(first.len(), 2);
        let second = slots.acquire_up_to("alice", 5);
        assert_eq!(second.len(), 1, "one left under the cap");
        assert!(
            slots.acquire_up_to("alice", 1).is_empty(),
            "at the cap: none"
        );
        assert_eq!(
            slots.acquire_up_to("bob", 3).len(),
            3,
            "the cap is per user"
        );
        drop(first);
        assert_eq!(slots.acquire_up_to("alice", 9).len(), 2);
        drop(second);
        assert_eq!(slots.total(), 0, "every slot came back");
    }
}
