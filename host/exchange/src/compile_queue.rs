//! Turns at the server's one compiler, shared fairly between users.
//!
//! Compiling a component takes every core (wasmtime compiles functions in
//! parallel), so uploads compile one at a time. Waiting uploads queue per user and
//! the turn goes to the user served least recently, so one user's burst of slow
//! uploads delays another user's by at most the one compile already running. A
//! user may have [`MAX_QUEUED_PER_USER`] uploads waiting, the server
//! [`MAX_QUEUED_TOTAL`], and none waits longer than the configured wait limit:
//! beyond any of these the upload is refused (ResourceExhausted) without compiling.

use mallard_core::{Error, Result};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Uploads one user may have waiting for the compiler (beside the one compiling).
pub const MAX_QUEUED_PER_USER: usize = 2;
/// Uploads all users together may have waiting.
pub const MAX_QUEUED_TOTAL: usize = 64;
/// Default longest wait for a turn (`--max-compile-wait-secs`): about six
/// 18 MB Python components compiled back to back.
pub const DEFAULT_MAX_COMPILE_WAIT: Duration = Duration::from_secs(30);
/// The flag that sets the wait limit, for messages.
pub const WAIT_FLAG: &str = "--max-compile-wait-secs";

#[derive(Default)]
struct State {
    compiling: bool,
    /// Waiting uploads in arrival order: (ticket, user).
    waiting: VecDeque<(u64, String)>,
    /// The ticket granted the turn, not yet taken by its waiter.
    granted: Option<u64>,
    next_ticket: u64,
    /// When each user with waiting uploads was last served (a turn counter).
    last_served: HashMap<String, u64>,
    turns: u64,
}

impl State {
    /// Hands the free compiler to the waiting upload whose user was served least
    /// recently (earliest arrival among equals).
    fn grant_next(&mut self) {
        if self.compiling || self.granted.is_some() {
            return;
        }
        let next = self
            .waiting
            .iter()
            .enumerate()
            .min_by_key(|(at, (_, user))| (self.last_served.get(user).copied().unwrap_or(0), *at))
            .map(|(at, _)| at);
        if let Some(at) = next {
            let (ticket, user) = self.waiting.remove(at).expect("index from the queue");
            self.turns += 1;
            self.last_served.insert(user, self.turns);
            self.granted = Some(ticket);
            self.compiling = true;
        }
        // Forget users with nothing waiting, beyond the one just served: the
        // table stays as small as the queue.
        let waiting: std::collections::HashSet<&String> =
            self.waiting.iter().map(|(_, u)| u).collect();
        let newest = self.turns;
        self.last_served
            .retain(|user, served| *served == newest || waiting.contains(user));
    }
}

/// The queue for one server's compiler.
pub struct CompileQueue {
    state: Mutex<State>,
    changed: Condvar,
    max_wait: Duration,
}

/// The compiler, held until dropped (by the compiling thread, even when its
/// caller gave up on it).
pub struct CompileTurn {
    queue: Arc<CompileQueue>,
}

impl Drop for CompileTurn {
    fn drop(&mut self) {
        let mut state = self.queue.state.lock().unwrap_or_else(|p| p.into_inner());
        state.compiling = false;
        state.grant_next();
        drop(state);
        self.queue.changed.notify_all();
    }
}

impl CompileQueue {
    /// A queue whose uploads wait at most `max_wait` for their turn.
    pub fn new(max_wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            max_wait,
        })
    }

    /// Waits (blocking) for `user`'s turn at the compiler.
    pub fn turn(self: &Arc<Self>, user: &str) -> Result<CompileTurn> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let queued_by_user = state.waiting.iter().filter(|(_, u)| u == user).count();
        if queued_by_user >= MAX_QUEUED_PER_USER {
            return Err(Error::resource_exhausted(format!(
                "user {user:?} already has {queued_by_user} uploads waiting to compile, the most \
                 allowed ({MAX_QUEUED_PER_USER}); upload again when they are done"
            )));
        }
        if state.waiting.len() >= MAX_QUEUED_TOTAL {
            return Err(Error::resource_exhausted(format!(
                "{MAX_QUEUED_TOTAL} uploads are waiting to compile; try again later"
            )));
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push_back((ticket, user.to_owned()));
        state.grant_next();
        let deadline = Instant::now() + self.max_wait;
        loop {
            if state.granted == Some(ticket) {
                state.granted = None;
                return Ok(CompileTurn {
                    queue: self.clone(),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                state.waiting.retain(|(t, _)| *t != ticket);
                return Err(Error::resource_exhausted(format!(
                    "the upload waited {:?} for the compiler, the longest allowed ({WAIT_FLAG}); \
                     other uploads are compiling, try again later",
                    self.max_wait
                )));
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Uploads waiting now, all users together.
    pub fn waiting(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waiting
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Queues `user`'s upload on a thread; its turn is sent back (and kept until
    /// the returned sender is dropped).
    fn queue_upload(
        queue: &Arc<CompileQueue>,
        user: &'static str,
        served: mpsc::Sender<(&'static str, Result<()>)>,
    ) -> mpsc::Sender<()> {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let queue = queue.clone();
        std::thread::spawn(move || match queue.turn(user) {
            Ok(turn) => {
                served.send((user, Ok(()))).unwrap();
                let _ = release_rx.recv();
                drop(turn);
            }
            Err(e) => served.send((user, Err(e))).unwrap(),
        });
        release_tx
    }

    fn wait_until_queued(queue: &CompileQueue, n: usize) {
        let until = Instant::now() + Duration::from_secs(5);
        while queue.waiting() < n {
            assert!(Instant::now() < until, "never queued {n}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn a_burst_from_one_user_delays_another_by_one_compile_at_most() {
        let queue = CompileQueue::new(Duration::from_secs(10));
        let (tx, rx) = mpsc::channel();
        let first = queue_upload(&queue, "alice", tx.clone());
        assert_eq!(rx.recv().unwrap().0, "alice");
        let a2 = queue_upload(&queue, "alice", tx.clone());
        wait_until_queued(&queue, 1);
        let a3 = queue_upload(&queue, "alice", tx.clone());
        wait_until_queued(&queue, 2);
        // Alice's fourth is refused: two of hers wait already.
        let refused = queue.turn("alice").err().unwrap();
        assert!(refused.to_string().contains("uploads waiting"), "{refused}");
        let b1 = queue_upload(&queue, "bob", tx.clone());
        wait_until_queued(&queue, 3);
        drop(first);
        // Bob arrived last but alice was just served: bob goes next.
        assert_eq!(rx.recv().unwrap().0, "bob");
        drop(b1);
        assert_eq!(rx.recv().unwrap().0, "alice");
        drop(a2);
        assert_eq!(rx.recv().unwrap().0, "alice");
        drop(a3);
        assert_eq!(queue.waiting(), 0);
    }

    #[test]
    fn a_wait_beyond_the_limit_is_refused_and_leaves_the_queue() {
        let queue = CompileQueue::new(Duration::from_millis(100));
        let (tx, rx) = mpsc::channel();
        let held = queue_upload(&queue, "alice", tx);
        rx.recv().unwrap().1.unwrap();
        let started = Instant::now();
        let err = queue.turn("bob").err().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(err.to_string().contains(WAIT_FLAG), "{err}");
        assert_eq!(queue.waiting(), 0);
        drop(held);
        // The compiler is free again.
        let _turn = queue.turn("bob").unwrap();
    }

    #[test]
    fn the_server_wide_queue_is_bounded() {
        let queue = CompileQueue::new(Duration::from_secs(10));
        let (tx, rx) = mpsc::channel();
        let mut held = vec![queue_upload(&queue, "u-running", tx.clone())];
        rx.recv().unwrap().1.unwrap();
        let users: Vec<&'static str> = (0..MAX_QUEUED_TOTAL)
            .map(|i| &*Box::leak(format!("u{i}").into_boxed_str()))
            .collect();
        for (i, user) in users.iter().enumerate() {
            held.push(queue_upload(&queue, user, tx.clone()));
            wait_until_queued(&queue, i + 1);
        }
        let err = queue.turn("late").err().unwrap();
        assert!(err.to_string().contains("are waiting"), "{err}");
        drop(held);
    }
}
