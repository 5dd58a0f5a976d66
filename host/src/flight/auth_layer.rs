//! Authentication as a layer around the Flight service: every call but
//! `Handshake` is authenticated from its headers before tonic decodes its body,
//! so an unauthenticated client cannot make the server buffer a 64 MiB unary
//! message or start any work. Handlers read the [`Authenticated`] caller from
//! the request's extensions.

use crate::auth::Authenticated;
use crate::state::ServerState;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::metadata::MetadataMap;
use tonic::transport::server::TcpConnectInfo;
use tower_layer::Layer;
use tower_service::Service;

/// The one method that authenticates itself (it may carry credentials in its body).
const HANDSHAKE_PATH: &str = "/arrow.flight.protocol.FlightService/Handshake";

/// Wraps a service in [`Authenticate`].
#[derive(Clone)]
pub struct AuthenticateLayer {
    state: Arc<ServerState>,
}

impl AuthenticateLayer {
    /// A layer authenticating against `state`'s users and tokens.
    pub fn new(state: Arc<ServerState>) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            state: self.state.clone(),
        }
    }
}

/// Authenticates each call from its headers; answers Unauthenticated itself.
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    state: Arc<ServerState>,
}

fn peer<B>(request: &http::Request<B>) -> Option<std::net::IpAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .or_else(|| {
            extensions
                .get::<tonic::transport::server::TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
        .map(|a| a.ip())
}

impl<S, B, R> Service<http::Request<B>> for Authenticate<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is not ready; the original is: keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            if request.uri().path() == HANDSHAKE_PATH {
                return inner.call(request).await;
            }
            let metadata = MetadataMap::from_headers(request.headers().clone());
            match state.auth.authenticate(&metadata, peer(&request)).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(e) => Ok(tonic::Status::from(e).into_http()),
            }
        })
    }
}

/// The caller the layer authenticated; Unauthenticated if the layer is missing.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Authenticated, tonic::Status> {
    request
        .extensions()
        .get::<Authenticated>()
        .cloned()
        .ok_or_else(|| tonic::Status::unauthenticated("the call was not authenticated"))
}
