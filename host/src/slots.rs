//! Per-user caps on concurrent streams: each running stream holds a [`Slot`],
//! freed when the stream ends or its client goes away.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
            return Err(Error::ResourceExhausted(format!(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_per_user_and_slots_come_back() {
        let slots = UserSlots::new("queries", "--max-queries-per-user", 2);
        let a = slots.acquire("alice").unwrap();
        let _b = slots.acquire("alice").unwrap();
        let err = slots.acquire("alice").err().unwrap();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.to_string().contains("--max-queries-per-user"), "{err}");
        let _c = slots.acquire("bob").unwrap();
        assert_eq!(slots.total(), 3);
        drop(a);
        let _d = slots.acquire("alice").unwrap();
        assert_eq!(slots.total(), 3);
    }
}
