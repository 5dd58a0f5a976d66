//! A layer around the Flight service that counts every RPC by method and final
//! gRPC status and times it to the end of its response stream: the status is
//! read from the response headers (a call refused at once) or from the trailers
//! (a stream's end); a client that goes away first counts as CANCELLED. Calls
//! ending Unauthenticated (the handshake's included) are also counted as
//! authentication failures.

use crate::metrics::{MethodLabels, RpcLabels, ServerMetrics, method_label};
use http_body::{Body, Frame, SizeHint};
use mallard_exchange::metrics::code_name;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

/// Wraps a service in [`CountRpcs`].
#[derive(Clone)]
pub struct RpcMetricsLayer {
    metrics: Arc<ServerMetrics>,
}

impl RpcMetricsLayer {
    /// Counts into `metrics`.
    pub fn new(metrics: Arc<ServerMetrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = CountRpcs<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountRpcs {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Counts and times each call.
#[derive(Clone)]
pub struct CountRpcs<S> {
    inner: S,
    metrics: Arc<ServerMetrics>,
}

/// Records one call once, when its status is known.
struct Recorder {
    metrics: Arc<ServerMetrics>,
    method: &'static str,
    started: Instant,
}

impl Recorder {
    fn record(self, code: tonic::Code) {
        if code == tonic::Code::Unauthenticated {
            self.metrics.auth_failures.inc();
        }
        self.metrics
            .rpcs
            .get_or_create(&RpcLabels {
                method: self.method,
                code: code_name(code),
            })
            .inc();
        self.metrics
            .rpc_seconds
            .get_or_create(&MethodLabels {
                method: self.method,
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(tonic::Code::from(value.parse::<i32>().ok()?))
}

impl<S, B, R> Service<http::Request<B>> for CountRpcs<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Body + Unpin,
{
    type Response = http::Response<Counted<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let recorder = Recorder {
            metrics: self.metrics.clone(),
            method: method_label(request.uri().path()),
            started: Instant::now(),
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            let recorder = match status_of(response.headers()) {
                Some(code) => {
                    recorder.record(code);
                    None
                }
                None => Some(recorder),
            };
            Ok(response.map(|inner| Counted { inner, recorder }))
        })
    }
}

/// A response body that records its call's status when the trailers pass.
pub struct Counted<B> {
    inner: B,
    recorder: Option<Recorder>,
}

impl<B: Body + Unpin> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|t| status_of(t).unwrap_or(tonic::Code::Ok)),
            Poll::Ready(Some(Err(_))) => Some(tonic::Code::Unknown),
            Poll::Ready(None) => Some(tonic::Code::Ok),
            Poll::Pending => None,
        };
        if let Some(code) = code
            && let Some(recorder) = self.recorder.take()
        {
            recorder.record(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        if let Some(recorder) = self.recorder.take() {
            recorder.record(tonic::Code::Cancelled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_read_from_grpc_status() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_of(&headers), None);
        headers.insert("grpc-status", "7".parse().unwrap());
        assert_eq!(status_of(&headers), Some(tonic::Code::PermissionDenied));
        headers.insert("grpc-status", "x".parse().unwrap());
        assert_eq!(status_of(&headers), None);
    }
}
