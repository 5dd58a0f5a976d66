//! Whether a call's request stream ended cleanly or was reset by the client.
//!
//! tonic reports a request stream that the client cancels (HTTP/2
//! `RST_STREAM(CANCEL)`) as a clean end of stream on the server side, exactly
//! like a client that finished sending. For a put that would commit whatever
//! arrived before the cancel. This layer watches each request body and records
//! any error it ends with; handlers that commit ([`ensure_complete`]) check it
//! first, so a cancelled put writes nothing.

use futures::future::BoxFuture;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tonic::body::Body;
use tower_layer::Layer;
use tower_service::Service;

/// Set once the request body of a call ended in an error (reset, cancel).
#[derive(Clone, Default, Debug)]
pub struct BodyOutcome(Arc<AtomicBool>);

impl BodyOutcome {
    /// Whether the body ended in an error.
    pub fn failed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Cancelled unless the request stream of `request` ended cleanly (checked
/// after it ended, before anything is committed).
pub fn ensure_complete(outcome: &BodyOutcome, what: &str) -> crate::Result<()> {
    if outcome.failed() {
        return Err(crate::Error::cancelled(format!(
            "the client cancelled its {what} stream before finishing it; nothing was written"
        )));
    }
    Ok(())
}

/// The outcome tracker of a call (a fresh, never-failed one if the layer is absent).
pub fn of<T>(request: &tonic::Request<T>) -> BodyOutcome {
    request
        .extensions()
        .get::<BodyOutcome>()
        .cloned()
        .unwrap_or_default()
}

/// A request body that records whether it ended in an error.
struct Watched {
    inner: Body,
    outcome: BodyOutcome,
}

impl http_body::Body for Watched {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.outcome.0.store(true, Ordering::SeqCst);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps a service in [`WatchBody`].
#[derive(Clone, Default)]
pub struct WatchBodyLayer;

impl<S> Layer<S> for WatchBodyLayer {
    type Service = WatchBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WatchBody { inner }
    }
}

/// Puts a [`BodyOutcome`] into each call's extensions and watches its body.
#[derive(Clone)]
pub struct WatchBody<S> {
    inner: S,
}

impl<S> Service<http::Request<Body>> for WatchBody<S>
where
    S: Service<http::Request<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let outcome = BodyOutcome::default();
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(outcome.clone());
        let body = Body::new(Watched {
            inner: body,
            outcome,
        });
        Box::pin(inner.call(http::Request::from_parts(parts, body)))
    }
}
