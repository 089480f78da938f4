//! The accept loop every listener shares: connection cap, optional TLS, HTTP/1.1 and h2 (h2c
//! on plain TCP), header read timeout, and a bounded graceful drain.
//!
//! It never inspects requests; the handler does.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::error::json;
use crate::Body;

/// Connection-level limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections at most; the rest wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// Time to receive a request's headers (and to finish a TLS handshake).
    pub header_read_timeout: Duration,
    /// Request header bytes at most (HTTP/1.1 read buffer, h2 header list).
    pub max_header_bytes: usize,
    /// How long in-flight requests may run on once shutdown begins.
    pub shutdown_grace: Duration,
}

/// Serves `listener` until `shutdown` flips to true, then drains for up to the grace period.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ConnLimits,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper answers 431 itself when a header section cannot fit this buffer.
        .max_buf_size(limits.max_header_bytes.max(8192) + 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .keep_alive_interval(Duration::from_secs(30));
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();

    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("never closed"),
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service =
            service_fn(move |request| {
                // A panic in one request answers 500 and leaves the connection's other requests
                // and every other connection alone; its message was logged, redacted, by the hook.
                let response = AssertUnwindSafe(handler(request, peer)).catch_unwind();
                async move {
                    Ok::<_, Infallible>(response.await.unwrap_or_else(|_| {
                        json(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
                    }))
                }
            });
        let builder = builder.clone();
        match &tls {
            None => {
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(err) = conn.await {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                let timeout = limits.header_read_timeout;
                tokio::spawn(async move {
                    let _permit = permit;
                    let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => {
                            tracing::debug!(error = %err, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    if let Err(err) = watcher.watch(conn).await {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                });
            }
        }
    }

    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}
