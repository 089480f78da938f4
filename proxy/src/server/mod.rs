//! The serving loop every listener shares: connection cap, optional TLS (the protocol ALPN chose,
//! and only that one), HTTP/1.1 and h2 (h2c on plain TCP), the connection timeouts (see
//! [`conn`]), and a bounded graceful drain; and the worker threads that run it for ingress and
//! egress, fed by one acceptor.
//!
//! It never inspects requests; the handler does.

mod conn;

pub(crate) use conn::{Peer, Tracked};

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::error::json;
use crate::Body;

/// Connection-level limits of one listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    /// Time to receive a request's headers, the first one counted from accept (after TLS).
    pub header_read_timeout: Duration,
    /// Time to finish a TLS handshake.
    pub handshake_timeout: Duration,
    /// A connection with no request in flight is drained after this long.
    pub idle_timeout: Duration,
    /// A connection none of whose requests was authenticated is closed after this long;
    /// `None` where nothing authenticates (egress, admin).
    pub unauthenticated_timeout: Option<Duration>,
    /// Request header bytes at most (HTTP/1.1 read buffer, h2 header list).
    pub max_header_bytes: usize,
    /// How long in-flight requests may run on once shutdown begins.
    pub shutdown_grace: Duration,
}

/// Where a serving loop gets its connections: its own listener, or the hand-offs of an
/// [`Acceptor`] when it runs on a worker thread.
#[derive(Debug)]
pub(crate) enum Connections {
    /// Accept here, at most `permits` open at once.
    Listener(TcpListener, Arc<Semaphore>),
    /// Connections accepted elsewhere, each with its admission.
    Handoff(mpsc::UnboundedReceiver<Handoff>),
}

/// One accepted connection on its way to a worker.
#[derive(Debug)]
pub(crate) struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    admission: Admission,
}

/// What an open connection holds until it closes: a slot under the connection cap, and one
/// unit of its worker's load.
#[derive(Debug)]
struct Admission {
    _permit: OwnedSemaphorePermit,
    load: Option<Arc<AtomicUsize>>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(load) = &self.load {
            load.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Accepts on one listening socket and hands each connection to the worker with the fewest
/// open ones.
///
/// One socket and one acceptor rather than a socket per worker with `SO_REUSEPORT`: the
/// containers of a pod share its network namespace and may share a uid, and any process of
/// that uid could join a reuse-port group and take a share of the clients (and their keys).
/// Accepting is rare next to requests on kept-alive connections, and a new connection goes to
/// the least busy worker instead of wherever a hash puts it.
#[derive(Debug)]
pub(crate) struct Acceptor {
    workers: Vec<(mpsc::UnboundedSender<Handoff>, Arc<AtomicUsize>)>,
}

impl Acceptor {
    /// An acceptor for `count` workers and each worker's end of it.
    pub(crate) fn new(count: usize) -> (Self, Vec<Connections>) {
        let (workers, ends) = (0..count.max(1))
            .map(|_| {
                let (sender, receiver) = mpsc::unbounded_channel();
                ((sender, Arc::default()), Connections::Handoff(receiver))
            })
            .unzip();
        (Self { workers }, ends)
    }

    /// Accepts until `shutdown` flips to true (or its sender is dropped) or every worker is
    /// gone; the workers then see their hand-offs end and drain.
    pub(crate) async fn run(
        self,
        listener: TcpListener,
        permits: Arc<Semaphore>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let Some((stream, peer, permit)) = accept(&listener, &permits, &mut shutdown).await
            else {
                return;
            };
            // Registered again by the worker's own runtime.
            let stream = match stream.into_std() {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot hand a connection over");
                    continue;
                }
            };
            let Some((queue, load)) =
                self.workers.iter().min_by_key(|(_, load)| load.load(Ordering::Relaxed))
            else {
                return;
            };
            load.fetch_add(1, Ordering::Relaxed);
            let admission = Admission { _permit: permit, load: Some(load.clone()) };
            if queue.send(Handoff { stream, peer, admission }).is_err() {
                tracing::error!("a worker is gone; its share of connections is refused");
            }
        }
    }
}

/// Waits for a slot under the cap, then for a connection; `None` once shutdown begins.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("never closed"),
            _ = shutdown.changed() => return None,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => return Some((stream, peer, permit)),
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return None,
        }
    }
}

impl Connections {
    /// The next connection and its admission; `None` once shutdown begins or the acceptor
    /// has stopped.
    async fn next(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<(TcpStream, SocketAddr, Admission)> {
        loop {
            let (stream, peer, admission) = match self {
                Connections::Listener(listener, permits) => {
                    let (stream, peer, permit) = accept(listener, permits, shutdown).await?;
                    (stream, peer, Admission { _permit: permit, load: None })
                }
                Connections::Handoff(receiver) => {
                    let handoff = tokio::select! {
                        handoff = receiver.recv() => handoff?,
                        _ = shutdown.changed() => return None,
                    };
                    match TcpStream::from_std(handoff.stream) {
                        Ok(stream) => (stream, handoff.peer, handoff.admission),
                        Err(err) => {
                            tracing::warn!(error = %err, "cannot take a connection over");
                            continue;
                        }
                    }
                }
            };
            return Some((stream, peer, admission));
        }
    }
}

/// Runs `task` on a thread of its own under a single-threaded runtime. A connection, the tasks
/// it spawns and the backend connections it uses all stay on that thread: no work stealing and
/// no cross-thread wake-ups on the request path. The returned future completes once `task`
/// has, after the runtime has dropped whatever outlived it.
pub(crate) fn spawn_worker<T, F>(name: String, task: T) -> io::Result<impl Future<Output = ()>>
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

/// Serves `connections` until `shutdown` flips to true (or its sender is dropped) or they
/// end, then drains for up to the grace period.
pub(crate) async fn serve<H, F>(
    mut connections: Connections,
    tls: Option<TlsAcceptor>,
    limits: ConnLimits,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper answers 431 itself when a header section cannot fit this buffer.
        .max_buf_size(limits.max_header_bytes.max(8192) + 1024);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .keep_alive_interval(Duration::from_secs(30))
        // What one stream may queue toward a client that does not read (see MAX_READ_AHEAD).
        .max_send_buf_size(crate::forward::MAX_READ_AHEAD);
    let builders = Arc::new(Builders { h1, h2 });
    // Every connection task holds a clone; when all are gone, the drain is over.
    let (open, mut all_closed) = mpsc::channel::<()>(1);

    loop {
        let Some((stream, peer, permit)) = connections.next(&mut shutdown).await else {
            break;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let (builders, tls, shutdown, open) =
            (builders.clone(), tls.clone(), shutdown.clone(), open.clone());
        tokio::spawn(async move {
            let (_permit, _open) = (permit, open);
            let conn = Conn { builders: &builders, peer, limits, shutdown };
            match tls {
                None => conn.serve_plain(stream, handler).await,
                // Boxed: a TLS connection's state (the handshake, the session inside the
                // stream) would otherwise size every plaintext connection's task as well
                // (it had made each 8,896 bytes where plaintext needed 3,840).
                Some(acceptor) => Box::pin(conn.serve_tls(acceptor, stream, handler)).await,
            }
        });
    }

    drop((connections, open));
    if tokio::time::timeout(limits.shutdown_grace, all_closed.recv()).await.is_err() {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
}

/// One accepted connection, ready to serve.
struct Conn<'a> {
    builders: &'a Builders,
    peer: SocketAddr,
    limits: ConnLimits,
    shutdown: watch::Receiver<bool>,
}

impl<'a> Conn<'a> {
    /// Completes the TLS handshake within its timeout, then serves the protocol ALPN chose.
    async fn serve_tls<H, F>(self, acceptor: TlsAcceptor, stream: TcpStream, handler: H)
    where
        H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let handshake = acceptor.accept(stream);
        let stream = match tokio::time::timeout(self.limits.handshake_timeout, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        };
        // ALPN has chosen: the connection speaks that protocol only (an HTTP/1.1 request on
        // an h2 connection is a broken preface, answered with GOAWAY).
        let protocol = match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        };
        self.serve(stream, protocol, conn::State::new(), handler).await;
    }

    /// Tells h2c from HTTP/1.1 by the first bytes (within the time the first request has),
    /// then serves it.
    async fn serve_plain<H, F>(mut self, stream: TcpStream, handler: H)
    where
        H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let state = conn::State::new();
        let first_request_by = state.first_request_deadline(&self.limits);
        let protocol = tokio::select! {
            protocol = sniff(&stream) => protocol,
            () = tokio::time::sleep_until(first_request_by) => None,
            _ = self.shutdown.wait_for(|down| *down) => None,
        };
        if let Some(protocol) = protocol {
            self.serve(stream, protocol, state, handler).await;
        }
    }

    /// Serves `io` (after any TLS handshake: the timeouts count from here) until it ends.
    async fn serve<I, H, F>(self, io: I, protocol: Protocol, state: Arc<conn::State>, handler: H)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<Incoming>, Peer) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let (requests, peer) = (state.clone(), self.peer);
        let service = service_fn(move |request| {
            let (peer, in_flight) = requests.begin(peer);
            // A panic in one request answers 500 and leaves the connection's other requests
            // and every other connection alone; its message was logged, redacted, by the
            // hook. Combinators, not an async block: a block would store the handler's future
            // twice, and hyper keeps a slot of that size for every connection.
            let answer = AssertUnwindSafe(handler(request, peer)).catch_unwind();
            futures::future::join(futures::future::ready(in_flight), answer).map(answer_panics)
        });
        let (io, limits, shutdown) = (TokioIo::new(io), &self.limits, self.shutdown);
        match protocol {
            Protocol::Http1 => {
                let conn = self.builders.h1.serve_connection(io, service);
                let drain = http1::Connection::graceful_shutdown;
                conn::supervise(conn, drain, &state, limits, shutdown).await;
            }
            Protocol::Http2 => {
                let conn = self.builders.h2.serve_connection(io, service);
                let drain = http2::Connection::graceful_shutdown;
                conn::supervise(conn, drain, &state, limits, shutdown).await;
            }
        }
    }
}

/// The connection builders of one listener.
struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

/// What a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// The connection preface every h2 client sends first (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol of a plaintext connection, told from its first bytes without reading them:
/// hyper's first read then gets the whole request, and its read buffer stays at 8 KiB (a
/// prefix read beforehand, and handed back, left it a partial request and made it double to
/// 16 KiB on every connection). `None` if the connection ends before its first byte; one that
/// stops inside the preface is left to the first request's deadline, like any slow client.
async fn sniff(stream: &TcpStream) -> Option<Protocol> {
    let mut first = [0u8; H2_PREFACE.len()];
    let mut pause = Duration::from_millis(5);
    loop {
        let n = stream.peek(&mut first).await.ok().filter(|&n| n > 0)?;
        if first[..n] != H2_PREFACE[..n] {
            return Some(Protocol::Http1);
        }
        if n == H2_PREFACE.len() {
            return Some(Protocol::Http2);
        }
        // A strict prefix of the preface ("P" may begin a POST too): the rest is on its way,
        // and the socket stays readable meanwhile, so wait before looking again.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The handler's response, or 500 when it panicked, its body holding the request in flight.
/// (A function rather than a closure capturing `in_flight`: such a closure is inferred for one
/// lifetime of the panic payload only, and the connection task is then not `Send`.)
fn answer_panics(
    (in_flight, response): (conn::InFlight, std::thread::Result<Response<Body>>),
) -> Result<Response<Tracked<Body>>, Infallible> {
    let response =
        response.unwrap_or_else(|_| json(StatusCode::INTERNAL_SERVER_ERROR, "internal_error"));
    Ok(response.map(|body| Tracked::new(body, in_flight)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A loopback pair: what the client end sends, and the server end to sniff.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        (client, listener.accept().await.unwrap().0)
    }

    /// Sends `parts` 30 ms apart, closes, and tells what the server end speaks.
    async fn sniffed(parts: &[&'static [u8]]) -> Option<Protocol> {
        let (mut client, server) = pair().await;
        let parts = parts.to_vec();
        let sender = tokio::spawn(async move {
            for part in parts {
                client.write_all(part).await.unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        });
        let protocol = tokio::time::timeout(Duration::from_secs(5), sniff(&server)).await.unwrap();
        sender.await.unwrap();
        protocol
    }

    #[tokio::test]
    async fn the_first_bytes_tell_the_protocol_and_stay_unread() {
        let (mut client, server) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(sniff(&server).await, Some(Protocol::Http1));
        let mut still = [0u8; 16];
        assert_eq!(server.peek(&mut still).await.unwrap(), 16, "nothing was consumed");
        assert_eq!(sniffed(&[H2_PREFACE]).await, Some(Protocol::Http2));
    }

    #[tokio::test]
    async fn a_preface_or_a_post_in_pieces_is_waited_for() {
        assert_eq!(
            sniffed(&[b"PRI * HT", b"TP/2.0\r\n\r\nSM\r\n\r\n"]).await,
            Some(Protocol::Http2)
        );
        assert_eq!(sniffed(&[b"P", b"OST / HTTP/1.1\r\n"]).await, Some(Protocol::Http1));
    }

    #[tokio::test]
    async fn a_connection_closed_before_its_first_byte_is_none() {
        assert_eq!(sniffed(&[]).await, None);
    }
}
