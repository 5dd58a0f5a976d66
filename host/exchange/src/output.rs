//! An exchange's output queue: lets a session keep consuming input while its
//! client is not reading output yet.
//!
//! pyarrow's natural pattern (and the seeds' benchmark) writes the whole input,
//! calls `done_writing`, and only then reads. A session whose output could not
//! get past a few buffered messages would stop reading input, the client's writes
//! would stop at the HTTP/2 window, and both sides would wait forever.
//!
//! So the queue has two limits. While the client reads, at most [`SLOTS`] messages
//! wait, as with a plain bounded channel. When the slots stay full for
//! [`PATIENCE`] without the client taking anything, the session goes on past them
//! until the client reads again, up to a byte budget. When that budget is spent
//! too and the client reads nothing for the stall timeout, the exchange fails with
//! ResourceExhausted, delivered ahead of the queued output, rather than hang.

use crate::Outgoing;
use futures::Stream;
use mallard_core::Error;
use mallard_protocol::Receipt;
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tonic::Status;

/// How much output an exchange may hold for a client that is not reading it.
#[derive(Debug, Clone, Copy)]
pub struct OutputBudget {
    /// Bytes of encoded output (headers and bodies) queued at most.
    pub bytes: usize,
    /// How long a full queue may wait for the client to read before the exchange fails.
    pub stall: Duration,
}

/// Why output could not be queued.
#[derive(Debug)]
pub enum SendError {
    /// The client left; stop quietly.
    Gone,
    /// The budget is spent and the client read nothing for the stall timeout.
    Stalled(Error),
}

/// Messages that may wait for a client that is reading.
pub const SLOTS: usize = 4;
/// How long full slots wait for the client to take a message before the session
/// assumes it writes everything first and goes on into the byte budget.
pub const PATIENCE: Duration = Duration::from_millis(50);

/// What the network side receives: output messages, then the receipt of a
/// successful end.
#[derive(Debug)]
pub enum Output {
    /// One output message.
    Data(Outgoing),
    /// The exchange completed; nothing follows.
    Done(Receipt),
}

/// An entry of the queue: a message, or the explicit end with its receipt.
enum Entry {
    Message(Box<Queued>),
    End(Receipt),
}

struct Queued {
    data: Outgoing,
    /// Returns the message's slot, if it took one, once the network takes it.
    _slot: Option<OwnedSemaphorePermit>,
    /// Returns the message's bytes to the budget once the network takes it.
    _bytes: OwnedSemaphorePermit,
}

/// The session's end: queues output, blocking (on a blocking thread) while the limits say wait.
/// The stream ends cleanly only after [`OutputSender::finish`]; a sender dropped
/// without it or [`OutputSender::fail`] (a panicking worker) ends it with Internal.
pub struct OutputSender {
    /// Messages in order, then the explicit end.
    queue: mpsc::UnboundedSender<Entry>,
    failure: oneshot::Sender<Status>,
    slots: Arc<Semaphore>,
    budget: Arc<Semaphore>,
    /// Messages the network has taken so far.
    taken: Arc<AtomicU64>,
    /// `taken` when the slots last ran out of patience: while it is unchanged the
    /// client is still not reading, and waiting on the slots again is pointless.
    impatient_at: Cell<Option<u64>>,
    limits: OutputBudget,
    runtime: Handle,
}

/// The network's end: the response stream, a failure first, then the queue in order.
pub struct OutputStream {
    queue: mpsc::UnboundedReceiver<Entry>,
    failure: Option<oneshot::Receiver<Status>>,
    taken: Arc<AtomicU64>,
    failed: bool,
}

/// A queue with `limits`; call from inside the tokio runtime.
pub fn channel(limits: OutputBudget) -> (OutputSender, OutputStream) {
    let (queue_tx, queue_rx) = mpsc::unbounded_channel();
    let (failure_tx, failure_rx) = oneshot::channel();
    let permits = limits.bytes.clamp(1, Semaphore::MAX_PERMITS);
    let taken = Arc::new(AtomicU64::new(0));
    let sender = OutputSender {
        queue: queue_tx,
        failure: failure_tx,
        slots: Arc::new(Semaphore::new(SLOTS)),
        budget: Arc::new(Semaphore::new(permits)),
        taken: taken.clone(),
        impatient_at: Cell::new(None),
        limits,
        runtime: Handle::current(),
    };
    let stream = OutputStream {
        queue: queue_rx,
        failure: Some(failure_rx),
        taken,
        failed: false,
    };
    (sender, stream)
}

impl OutputSender {
    /// A slot for the next message, after waiting up to [`PATIENCE`] for one;
    /// `None` while the client is not reading.
    fn slot(&self) -> Result<Option<OwnedSemaphorePermit>, SendError> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Ok(Some(slot));
        }
        let taken = self.taken.load(Ordering::Relaxed);
        if self.impatient_at.get() == Some(taken) {
            return Ok(None);
        }
        let acquire = self.slots.clone().acquire_owned();
        match self
            .runtime
            .block_on(tokio::time::timeout(PATIENCE, acquire))
        {
            Ok(Ok(slot)) => Ok(Some(slot)),
            Ok(Err(_closed)) => Err(SendError::Gone),
            Err(_elapsed) => {
                self.impatient_at
                    .set(Some(self.taken.load(Ordering::Relaxed)));
                Ok(None)
            }
        }
    }

    /// Queues one message, waiting while the client reads and the slots are full,
    /// or while the queue holds the whole byte budget.
    pub fn send(&self, data: Outgoing) -> Result<(), SendError> {
        let slot = self.slot()?;
        let size = data.ipc_len() + data.fields.app_metadata.len();
        // A message larger than the whole budget waits for an empty queue.
        let permits = size
            .clamp(1, self.limits.bytes.max(1))
            .min(u32::MAX as usize) as u32;
        let acquire = self.budget.clone().acquire_many_owned(permits);
        let permit = match self
            .runtime
            .block_on(tokio::time::timeout(self.limits.stall, acquire))
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => return Err(SendError::Gone),
            Err(_elapsed) => {
                if self.queue.is_closed() {
                    return Err(SendError::Gone);
                }
                return Err(SendError::Stalled(Error::resource_exhausted(format!(
                    "the client read none of this exchange's output for {:?} while {} MiB of \
                     it waited (the server's output buffer); read the output while writing \
                     the input, or raise the server's --exchange-output-buffer-mib",
                    self.limits.stall,
                    self.limits.bytes >> 20
                ))));
            }
        };
        self.queue
            .send(Entry::Message(Box::new(Queued {
                data,
                _slot: slot,
                _bytes: permit,
            })))
            .map_err(|_| SendError::Gone)
    }

    /// Ends the stream cleanly after the output already queued, with its receipt.
    pub fn finish(self, receipt: Receipt) {
        let _ = self.queue.send(Entry::End(receipt));
    }

    /// Ends the stream with `status`, ahead of any output still queued.
    pub fn fail(self, status: Status) {
        let _ = self.failure.send(status);
    }
}

impl Stream for OutputStream {
    type Item = Result<Output, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        if let Some(failure) = self.failure.as_mut() {
            match Pin::new(failure).poll(cx) {
                Poll::Ready(Ok(status)) => {
                    self.failed = true;
                    self.failure = None;
                    return Poll::Ready(Some(Err(status)));
                }
                // The session ended without failing: drain the queue.
                Poll::Ready(Err(_)) => self.failure = None,
                Poll::Pending => {}
            }
        }
        let this = &mut *self;
        match this.queue.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Entry::Message(queued))) => {
                this.taken.fetch_add(1, Ordering::Relaxed);
                Poll::Ready(Some(Ok(Output::Data(queued.data))))
            }
            Poll::Ready(Some(Entry::End(receipt))) => {
                this.failed = true;
                Poll::Ready(Some(Ok(Output::Done(receipt))))
            }
            Poll::Ready(None) => {
                this.failed = true;
                Poll::Ready(Some(Err(Status::internal(
                    "the exchange worker ended without finishing the stream",
                ))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn budget() -> OutputBudget {
        OutputBudget {
            bytes: 1 << 20,
            stall: Duration::from_secs(1),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_that_dies_ends_the_stream_with_an_error() {
        let (sender, stream) = channel(budget());
        tokio::task::spawn_blocking(move || {
            sender.send(Outgoing::default()).unwrap();
            drop(sender); // as a panic unwinding the worker would
        })
        .await
        .unwrap();
        let items: Vec<_> = stream.collect().await;
        assert_eq!(items.len(), 2);
        assert!(matches!(items[0], Ok(Output::Data(_))));
        assert_eq!(items[1].as_ref().unwrap_err().code(), tonic::Code::Internal);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finish_ends_the_stream_cleanly_after_the_queue_with_the_receipt() {
        let (sender, stream) = channel(budget());
        let receipt = Receipt {
            wall_ms: 2.0,
            ..Default::default()
        };
        let sent = receipt.clone();
        tokio::task::spawn_blocking(move || {
            sender.send(Outgoing::default()).unwrap();
            sender.finish(sent);
        })
        .await
        .unwrap();
        let items: Vec<_> = stream.collect().await;
        assert_eq!(items.len(), 2);
        assert!(matches!(items[0], Ok(Output::Data(_))));
        assert!(matches!(&items[1], Ok(Output::Done(r)) if *r == receipt));
    }
}
