//! A response stream whose client stopped reading is cut off: when the stream
//! has handed out an item and is not polled again for the stall timeout (the
//! client's HTTP/2 window is full and it reads nothing), its source is dropped,
//! which frees the source's thread, DuckDB connection and queued batches at
//! once, and the stream ends with DeadlineExceeded if it is ever read again.
//!
//! A stream waiting on its source (a slow query) is being polled, so it is not
//! stalled; the query timeout covers that case.

use futures::Stream;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tonic::Status;

struct State<S> {
    source: Option<Pin<Box<S>>>,
    /// When the last item went out, while no poll has followed it.
    awaiting_client_since: Option<Instant>,
    stalled: bool,
    reported: bool,
}

/// A stream cut off when its client stops reading; see the module docs.
pub struct StallGuarded<S> {
    state: Arc<Mutex<State<S>>>,
    stall: Duration,
    what: &'static str,
}

/// Resolves when a [`StallGuarded`] stream was cut off.
#[derive(Clone)]
pub struct StallSignal(watch::Receiver<bool>);

impl StallSignal {
    /// Waits until the stream is cut off (forever, if it never is).
    pub async fn stalled(mut self) {
        if self.0.wait_for(|stalled| *stalled).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Guards `source`; `what` names the stream in the error ("do_get", "push").
/// Call from inside the tokio runtime.
pub fn guard<S, T>(source: S, stall: Duration, what: &'static str) -> (StallGuarded<S>, StallSignal)
where
    S: Stream<Item = Result<T, Status>> + Send + 'static,
    T: Send + 'static,
{
    let state = Arc::new(Mutex::new(State {
        source: Some(Box::pin(source)),
        awaiting_client_since: None,
        stalled: false,
        reported: false,
    }));
    let (tx, rx) = watch::channel(false);
    tokio::spawn(watch_for_stall(Arc::downgrade(&state), stall, tx));
    (StallGuarded { state, stall, what }, StallSignal(rx))
}

async fn watch_for_stall<S>(
    state: Weak<Mutex<State<S>>>,
    stall: Duration,
    tx: watch::Sender<bool>,
) {
    let tick = (stall / 4).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(tick).await;
        let Some(state) = state.upgrade() else { return };
        let dropped = {
            let mut state = state.lock().expect("stall guard lock");
            if state.source.is_none() {
                return; // finished
            }
            match state.awaiting_client_since {
                Some(since) if since.elapsed() >= stall => {
                    state.stalled = true;
                    state.source.take()
                }
                _ => None,
            }
        };
        if dropped.is_some() {
            drop(dropped);
            let _ = tx.send(true);
            return;
        }
    }
}

impl<S, T> Stream for StallGuarded<S>
where
    S: Stream<Item = Result<T, Status>> + Send + 'static,
{
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut state = self.state.lock().expect("stall guard lock");
        state.awaiting_client_since = None;
        if state.stalled {
            if state.reported {
                return Poll::Ready(None);
            }
            state.reported = true;
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "the client read nothing of this {} for {:?}; the server stopped it",
                self.what, self.stall
            )))));
        }
        let Some(source) = state.source.as_mut() else {
            return Poll::Ready(None);
        };
        match source.as_mut().poll_next(cx) {
            Poll::Ready(Some(item)) => {
                state.awaiting_client_since = Some(Instant::now());
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => {
                state.source = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct DropFlag(Arc<AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn an_unread_stream_drops_its_source_and_then_fails() {
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = DropFlag(dropped.clone());
        let source = futures::stream::iter(0..10).map(move |i| {
            let _flag = &flag;
            Ok::<_, Status>(i)
        });
        let (mut guarded, signal) = guard(source, Duration::from_millis(50), "do_get");
        assert_eq!(guarded.next().await.unwrap().unwrap(), 0);
        tokio::time::timeout(Duration::from_secs(5), signal.stalled())
            .await
            .expect("stall detected");
        assert!(
            dropped.load(Ordering::SeqCst),
            "source dropped at the stall"
        );
        let err = guarded.next().await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
        assert!(guarded.next().await.is_none());
    }

    #[tokio::test]
    async fn a_stream_read_steadily_or_waiting_on_its_source_is_left_alone() {
        let source = futures::stream::iter(0..5).then(|i| async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok::<_, Status>(i)
        });
        let (guarded, _signal) = guard(source, Duration::from_millis(20), "do_get");
        let items: Vec<_> = guarded.collect().await;
        assert_eq!(items.len(), 5);
        assert!(items.iter().all(|i| i.is_ok()));
    }
}
