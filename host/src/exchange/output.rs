//! An exchange's output queue: lets a session keep consuming input while its
//! client is not reading output yet.
//!
//! pyarrow's natural pattern (and the seeds' benchmark) writes the whole input,
//! calls `done_writing`, and only then reads. A session whose output could not
//! get past a few buffered messages would stop reading input, the client's writes
//! would stop at the HTTP/2 window, and both sides would wait forever. The queue
//! holds output up to a byte budget instead; a client that reads while it writes
//! never has more than a few messages queued. When the budget is spent and the
//! client reads nothing for the stall timeout, the exchange fails with
//! ResourceExhausted, delivered ahead of the queued output, rather than hang.

use crate::error::Error;
use arrow_flight::FlightData;
use futures::Stream;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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

struct Queued {
    data: FlightData,
    /// Returns the message's bytes to the budget once the network takes it.
    _permit: OwnedSemaphorePermit,
}

/// The session's end: queues output, blocking (on a blocking thread) while the budget is spent.
pub struct OutputSender {
    queue: mpsc::UnboundedSender<Queued>,
    failure: oneshot::Sender<Status>,
    budget: Arc<Semaphore>,
    limits: OutputBudget,
    runtime: Handle,
}

/// The network's end: the response stream, a failure first, then the queue in order.
pub struct OutputStream {
    queue: mpsc::UnboundedReceiver<Queued>,
    failure: Option<oneshot::Receiver<Status>>,
    failed: bool,
}

/// A queue with `limits`; call from inside the tokio runtime.
pub fn channel(limits: OutputBudget) -> (OutputSender, OutputStream) {
    let (queue_tx, queue_rx) = mpsc::unbounded_channel();
    let (failure_tx, failure_rx) = oneshot::channel();
    let permits = limits.bytes.clamp(1, Semaphore::MAX_PERMITS);
    let sender = OutputSender {
        queue: queue_tx,
        failure: failure_tx,
        budget: Arc::new(Semaphore::new(permits)),
        limits,
        runtime: Handle::current(),
    };
    let stream = OutputStream {
        queue: queue_rx,
        failure: Some(failure_rx),
        failed: false,
    };
    (sender, stream)
}

impl OutputSender {
    /// Queues one message, waiting while the queue holds the whole budget.
    pub fn send(&self, data: FlightData) -> Result<(), SendError> {
        let size = data.data_header.len() + data.data_body.len() + data.app_metadata.len();
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
                return Err(SendError::Stalled(Error::ResourceExhausted(format!(
                    "the client read none of this exchange's output for {:?} while {} MiB of \
                     it waited (the server's output buffer); read the output while writing \
                     the input, or raise the server's --exchange-output-buffer-mib",
                    self.limits.stall,
                    self.limits.bytes >> 20
                ))));
            }
        };
        self.queue
            .send(Queued {
                data,
                _permit: permit,
            })
            .map_err(|_| SendError::Gone)
    }

    /// Ends the stream with `status`, ahead of any output still queued.
    pub fn fail(self, status: Status) {
        let _ = self.failure.send(status);
    }
}

impl Stream for OutputStream {
    type Item = Result<FlightData, Status>;

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
        self.queue
            .poll_recv(cx)
            .map(|queued| queued.map(|q| Ok(q.data)))
    }
}
