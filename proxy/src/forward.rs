//! The pooled HTTP client keyward forwards with, and the mapping of its failures to
//! 413/502/504. Connection and timeout errors are logged by kind, never with a URL or header.

use std::path::Path;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::{LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::ProxyError;
use crate::trust::{self, TrustError};

/// A client request body: the incoming stream, capped at the configured size.
pub type RequestBody = Limited<Incoming>;

/// A pooled client over connector `C`.
#[derive(Debug, Clone)]
pub struct Upstream<C = HttpConnector> {
    client: Client<C, RequestBody>,
}

fn tcp() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.enforce_http(false);
    connector
}

fn builder() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder.pool_timer(TokioTimer::new()).pool_idle_timeout(Duration::from_secs(90));
    builder
}

impl Upstream<HttpConnector> {
    /// A plain-HTTP/1.1 client, for the backend in the same pod.
    pub fn http() -> Self {
        Self { client: builder().build(tcp()) }
    }
}

impl Upstream<HttpsConnector<HttpConnector>> {
    /// An HTTPS client (h2 or HTTP/1.1 by ALPN) trusting the public roots plus `extra_ca`,
    /// with SNI and hostname verification always on. Plain http is accepted too: config
    /// validation allows it only for loopback upstreams.
    pub fn https(extra_ca: Option<&Path>) -> Result<Self, TrustError> {
        let tls = trust::client_config(extra_ca)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp());
        Ok(Self { client: builder().build(connector) })
    }
}

impl<C> Upstream<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// Sends `request` and waits up to `timeout` for the response headers. The body streams
    /// afterwards; dropping the returned future or body cancels the upstream exchange.
    pub async fn send(
        &self,
        request: Request<RequestBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, ProxyError> {
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(classify(&err)),
            Err(_) => {
                tracing::warn!(timeout_ms = timeout.as_millis() as u64, "upstream timed out");
                Err(ProxyError::UpstreamTimeout)
            }
        }
    }
}

fn classify(err: &hyper_util::client::legacy::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if cause.is::<LengthLimitError>() {
            return ProxyError::BodyTooLarge;
        }
        source = cause.source();
    }
    if err.is_connect() {
        tracing::warn!(error = %ErrorChain(err), "upstream connection failed");
    } else {
        tracing::warn!(error = %ErrorChain(err), "upstream exchange failed");
    }
    ProxyError::UpstreamUnavailable
}

/// Displays an error with its causes (`a: b: c`). hyper's errors name kinds, not URLs.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
