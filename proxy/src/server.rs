//! The accept loop every listener shares: connection cap, optional TLS, HTTP/1.1 and h2 (h2c
//! on plain TCP), header read timeout, and a bounded graceful drain; and the workers that run
//! it, one thread per core.
//!
//! It never inspects requests; the handler does.

use std::convert::Infallible;
use std::future::Future;
use std::io;
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
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::error::json;
use crate::Body;

/// Connection-level limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Time to receive a request's headers (and to finish a TLS handshake).
    pub header_read_timeout: Duration,
    /// Request header bytes at most (HTTP/1.1 read buffer, h2 header list).
    pub max_header_bytes: usize,
    /// How long in-flight requests may run on once shutdown begins.
    pub shutdown_grace: Duration,
}

/// Binds `count` listening sockets to one address with `SO_REUSEPORT`, one per worker: the
/// kernel spreads new connections over them, and each worker accepts only its own. With port 0
/// the first socket picks the port and the others join it.
///
/// Call from within a Tokio runtime; a worker takes its socket with [`TcpListener::from_std`].
pub fn bind_shared(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut addr = addr;
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        addr = listener.local_addr()?;
        listeners.push(listener.into_std()?);
    }
    Ok(listeners)
}

/// Runs `task` on a thread of its own under a single-threaded runtime. A connection, the tasks
/// it spawns and the backend connections it uses all stay on that thread: no work stealing and
/// no cross-thread wake-ups on the request path. The returned future completes once `task`
/// has, after the runtime has dropped whatever outlived it.
pub fn spawn_worker<T, F>(name: String, task: T) -> io::Result<impl Future<Output = ()>>
where
    T: FnOnce() -> F + Send + 'static,
    F: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (done, finished) = oneshot::channel::<()>();
    std::thread::Builder::new().name(name).spawn(move || {
        runtime.block_on(task());
        drop(runtime);
        let _ = done.send(());
    })?;
    Ok(async move {
        if finished.await.is_err() {
            tracing::error!("a worker thread panicked");
        }
    })
}

/// Serves `listener` until `shutdown` flips to true (or its sender is dropped), then drains for
/// up to the grace period. `permits` caps open connections, and may be shared by the workers of
/// one listener.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ConnLimits,
    permits: Arc<Semaphore>,
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
    let graceful = GracefulShutdown::new();

    loop {
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
        // At the cap, the accepted connection waits here unserved (and this worker accepts no
        // other) until one closes. Taking the permit before accepting would let a worker hold
        // the freed slot while the waiting connection sits in another worker's queue.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("never closed"),
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
