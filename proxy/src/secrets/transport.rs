//! The HTTP transport the Azure SDK runs on: keyward's own hyper + rustls client, so the whole
//! process has one HTTP stack and one TLS provider (ring).
//!
//! It trusts the public roots plus an optional extra CA (emulators, TLS-inspecting proxies),
//! and can connect to a fixed address for the vault's host (private endpoints without DNS,
//! loopback test doubles) while SNI and hostname verification still use the vault's name.
//! It logs methods and hosts only: request URLs can carry query strings, bodies carry secrets.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use azure_core::error::ErrorKind;
use azure_core::http::{AsyncRawResponse, Body, HttpClient, Method, Request};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use crate::trust::{self, TrustError};

/// Largest response body accepted from Azure (secrets are at most 25 KiB; pages are small).
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Time for one Azure request, connection included; the SDK's retry policy runs around it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves names with the system resolver, except one host pinned to a fixed address.
#[derive(Debug, Clone)]
pub(super) struct PinnedResolver {
    pinned: Option<(String, IpAddr)>,
    system: GaiResolver,
}

type Addrs = std::vec::IntoIter<SocketAddr>;

impl Service<Name> for PinnedResolver {
    type Response = Addrs;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Addrs, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.system.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        if let Some((host, ip)) = &self.pinned {
            if name.as_str().eq_ignore_ascii_case(host) {
                let addrs = vec![SocketAddr::new(*ip, 0)].into_iter();
                return Box::pin(std::future::ready(Ok(addrs)));
            }
        }
        let lookup = self.system.call(name);
        Box::pin(async move { Ok(lookup.await?.collect::<Vec<_>>().into_iter()) })
    }
}

/// An azure_core `HttpClient` on hyper-util and hyper-rustls.
#[derive(Debug, Clone)]
pub(super) struct AzureTransport {
    client: Client<HttpsConnector<HttpConnector<PinnedResolver>>, Full<Bytes>>,
}

impl AzureTransport {
    /// A transport trusting the public roots and `extra_ca`, connecting `pin`'s host to its
    /// address when given.
    pub(super) fn new(
        extra_ca: Option<&Path>,
        pin: Option<(String, IpAddr)>,
    ) -> Result<Self, TrustError> {
        let tls = trust::client_config(extra_ca)?;
        let resolver = PinnedResolver { pinned: pin, system: GaiResolver::new() };
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        http.set_nodelay(true);
        // http is allowed for the identity endpoint, which is loopback in Container Apps; the
        // SDK itself refuses to send a bearer token over anything but https.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Self { client })
    }

    async fn send(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let method = match request.method() {
            Method::Get => http::Method::GET,
            Method::Post => http::Method::POST,
            Method::Put => http::Method::PUT,
            Method::Patch => http::Method::PATCH,
            Method::Delete => http::Method::DELETE,
            Method::Head => http::Method::HEAD,
            _ => return Err(other("unsupported method")),
        };
        let body = match request.body() {
            Body::Bytes(bytes) => bytes.clone(),
            _ => return Err(other("streamed request bodies are not supported")),
        };
        let mut builder = http::Request::builder().method(method).uri(request.url().as_str());
        for (name, value) in request.headers().iter() {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let outgoing = builder.body(Full::new(body)).map_err(|_| other("invalid request"))?;
        let host = request.url().host_str().unwrap_or_default().to_owned();
        tracing::debug!(%host, method = %outgoing.method(), "azure request");

        let response = self.client.request(outgoing).await.map_err(|err| {
            let kind = if err.is_connect() { ErrorKind::Connection } else { ErrorKind::Io };
            tracing::debug!(%host, connect = err.is_connect(), "azure request failed");
            azure_core::Error::with_error(kind, err, "request to Azure failed")
        })?;
        let (parts, incoming) = response.into_parts();
        let bytes = Limited::new(incoming, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|err| azure_core::Error::with_message(ErrorKind::Io, err.to_string()))?
            .to_bytes();
        let mut headers = azure_core::http::headers::Headers::new();
        for (name, value) in &parts.headers {
            if let Ok(value) = value.to_str() {
                headers.insert(name.as_str().to_owned(), value.to_owned());
            }
        }
        Ok(AsyncRawResponse::from_bytes(parts.status.as_u16().into(), headers, bytes))
    }
}

fn other(message: &'static str) -> azure_core::Error {
    azure_core::Error::with_message(ErrorKind::Other, message)
}

#[async_trait::async_trait]
impl HttpClient for AzureTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.send(request)).await {
            Ok(result) => result,
            Err(_) => {
                Err(azure_core::Error::with_message(ErrorKind::Io, "request to Azure timed out"))
            }
        }
    }
}
