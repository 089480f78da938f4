//! HTTP serving: rmcp's Streamable HTTP service mounted at `/mcp` on hyper-util, stateless by
//! default or, on request, with rmcp's in-memory sessions.
//!
//! This file must not relax rmcp's `Host` check: keyward rewrites `Host` to this backend's
//! loopback address, and anything else reaching the port is a DNS-rebinding attempt.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::TcpListener;

use crate::health_api::HealthApi;
use crate::tools::HealthTools;

/// The one path the MCP endpoint answers on (POST; GET and DELETE get 405 when stateless).
pub(crate) const MCP_PATH: &str = "/mcp";
/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The MCP endpoint in one of its two modes; rmcp types them apart by their session manager.
#[derive(Clone)]
pub(crate) enum McpService {
    /// No session ids, a fresh handler per request (the default).
    Stateless(StreamableHttpService<HealthTools, NeverSessionManager>),
    /// `initialize` opens a session (`Mcp-Session-Id`); GET streams it, DELETE ends it.
    Stateful(StreamableHttpService<HealthTools, LocalSessionManager>),
}

impl McpService {
    async fn handle(&self, request: Request<Incoming>) -> Response<BoxBody<Bytes, Infallible>> {
        match self {
            Self::Stateless(service) => service.handle(request).await,
            Self::Stateful(service) => service.handle(request).await,
        }
    }

    /// Ends open SSE responses and, when stateful, every session.
    fn cancel(&self) {
        match self {
            Self::Stateless(service) => service.config.cancellation_token.cancel(),
            Self::Stateful(service) => service.config.cancellation_token.cancel(),
        }
    }
}

/// Settings for the MCP endpoint.
#[derive(Debug, Clone, Default)]
pub(crate) struct McpOptions {
    /// Extra `Host` values to accept on top of rmcp's loopback defaults.
    pub(crate) extra_allowed_hosts: Vec<String>,
    /// Answer plain request/response calls with `application/json` instead of SSE (rmcp
    /// applies it to stateless requests only; session streams are always SSE).
    pub(crate) json_response: bool,
    /// Keep sessions in memory (rmcp's legacy session mode) instead of serving statelessly.
    pub(crate) stateful: bool,
}

/// Builds the MCP service: stateless unless `options.stateful`.
pub(crate) fn mcp_service(api: HealthApi, options: &McpOptions) -> McpService {
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(options.stateful)
        .with_json_response(options.json_response);
    // Extend, never replace: the loopback defaults are what keyward's rewritten Host matches.
    config.allowed_hosts.extend(options.extra_allowed_hosts.iter().cloned());
    let factory = HealthTools::factory(api);
    if options.stateful {
        McpService::Stateful(StreamableHttpService::new(
            factory,
            Arc::new(LocalSessionManager::default()),
            config,
        ))
    } else {
        McpService::Stateless(StreamableHttpService::new(
            factory,
            Arc::new(NeverSessionManager::default()),
            config,
        ))
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then drains for a bounded time.
pub(crate) async fn serve(
    listener: TcpListener,
    service: McpService,
    shutdown: impl Future<Output = ()>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = service.clone();
        let handler = hyper::service::service_fn(move |request| {
            let service = service.clone();
            async move { Ok::<_, Infallible>(route(&service, request).await) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), handler);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    // Ends open SSE responses, so the drain does not wait on keep-alive pings.
    service.cancel();
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("drain timed out; closing remaining connections");
    }
}

async fn route(
    service: &McpService,
    request: Request<Incoming>,
) -> Response<BoxBody<Bytes, Infallible>> {
    if request.uri().path() == MCP_PATH {
        service.handle(request).await
    } else {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(br#"{"error":"not found"}"#)).boxed())
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
    }
}
