//! The pooled HTTP client keyward forwards with, and the mapping of its failures to
//! 413/502/504. Connection and timeout errors are logged by kind, never with a URL or header.

use std::time::Duration;

use http::{Request, Response};
use http_body_util::{LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::ProxyError;

/// A client request body: the incoming stream, capped at the configured size.
pub type RequestBody = Limited<Incoming>;

/// A pooled client for one upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client<HttpConnector, RequestBody>,
    timeout: Duration,
}

impl Upstream {
    /// A plain-HTTP client (for the backend in the same pod) that gives up on response headers
    /// after `timeout`.
    pub fn http(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Self { client, timeout }
    }

    /// Sends `request` and waits for the response headers. The body streams afterwards; dropping
    /// the returned future or body cancels the exchange on the upstream connection.
    pub async fn send(
        &self,
        request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(classify(&err)),
            Err(_) => {
                tracing::warn!(
                    timeout_ms = self.timeout.as_millis() as u64,
                    "upstream timed out"
                );
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
        tracing::warn!(error = %err, "upstream connection failed");
    } else {
        tracing::warn!(error = %err, "upstream exchange failed");
    }
    ProxyError::UpstreamUnavailable
}
