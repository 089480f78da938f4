//! The pooled HTTP clients keyward forwards with, and the mapping of their failures to
//! 413/502/504. Connection and timeout errors are logged by kind, never with a URL or header.
//!
//! [`Backend`] is the pod's MCP server (plain HTTP/1.1, one destination, the hot path);
//! [`Upstream`] is the general client egress uses (HTTPS, h2 or HTTP/1.1, many hosts). Both are
//! per worker: a connection is only ever used on the thread that opened it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body_util::{Either, Full, LengthLimitError, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::error::ProxyError;

/// A client request body: the incoming stream, capped at the configured size, or the bytes
/// keyward read and checked (an MCP message from a client with grants).
pub(crate) type RequestBody = Either<Limited<Incoming>, Full<Bytes>>;

/// A pooled client over connector `C`.
#[derive(Debug, Clone)]
pub(crate) struct Upstream<C> {
    client: Client<C, RequestBody>,
}

/// Time to open a TCP connection to the backend or an upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle backend connections kept per worker at most; more are closed when their exchange ends.
const MAX_IDLE: usize = 512;
/// What one upstream connection reads ahead at most, and so the largest body chunk it hands
/// on. hyper's default (about 400 KiB) let a client that stops reading hold a megabyte of
/// keyward's memory per connection: one such chunk queued on each side.
pub(crate) const MAX_READ_AHEAD: usize = 16 * 1024;

fn tcp() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.enforce_http(false);
    connector
}

fn builder() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .http1_max_buf_size(MAX_READ_AHEAD)
        .http2_max_send_buf_size(MAX_READ_AHEAD);
    builder
}

impl Upstream<HttpsConnector<HttpConnector>> {
    /// An HTTPS client (h2 or HTTP/1.1 by ALPN) over `tls` (see [`crate::trust::client_config`]),
    /// with SNI and hostname verification always on. Plain http is accepted too: config
    /// validation allows it only for loopback upstreams.
    pub(crate) fn https(tls: rustls::ClientConfig) -> Self {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp());
        Self { client: builder().build(connector) }
    }
}

impl<C> Upstream<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// Sends `request` and waits up to `timeout` for the response headers. The body streams
    /// afterwards; dropping the returned future or body cancels the upstream exchange.
    pub(crate) async fn send(
        &self,
        request: Request<RequestBody>,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response.map(UpstreamBody::unpooled)),
            Ok(Err(err)) => Err(classify(&err, err.is_connect())),
            Err(_) => {
                tracing::warn!(timeout_ms = timeout.as_millis() as u64, "upstream timed out");
                Err(ProxyError::UpstreamTimeout)
            }
        }
    }
}

/// A request as keyward sends it on: its body capped at `max_body` bytes and framed by keyward
/// (the sender's framing was taken off by [`crate::headers::take_framing`]).
pub(crate) fn outgoing(
    mut parts: http::request::Parts,
    body: Incoming,
    max_body: u64,
) -> Request<RequestBody> {
    let body = Limited::new(body, max_body as usize);
    crate::headers::frame_for(&mut parts.headers, &body);
    Request::from_parts(parts, Either::Left(body))
}

/// A body read whole, up to `max` bytes (413 above).
pub(crate) async fn read_body(body: Incoming, max: u64) -> Result<Bytes, ProxyError> {
    use http_body_util::BodyExt;
    match Limited::new(body, max as usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ProxyError::BodyTooLarge)
        }
        Err(_) => Err(ProxyError::BadRequest),
    }
}

/// A request as keyward sends it on with a body it has read: `Content-Length` framing.
pub(crate) fn outgoing_bytes(parts: http::request::Parts, body: Bytes) -> Request<RequestBody> {
    Request::from_parts(parts, Either::Right(Full::new(body)))
}

/// The upstream's response as the next hop gets it: hop-by-hop headers and the upstream's
/// framing removed (hyper frames the body again as it sends it on). A transfer coding keyward
/// does not undo is the upstream's fault: 502. `head` says the request was a HEAD, whose
/// `Content-Length` describes a body that is not sent (as a 304's does).
pub(crate) fn response_hygiene<B>(
    response: &mut Response<B>,
    head: bool,
) -> Result<(), ProxyError> {
    let keep_length = head || response.status() == http::StatusCode::NOT_MODIFIED;
    let headers = response.headers_mut();
    crate::headers::remove_hop_by_hop(headers);
    crate::headers::take_framing(headers, keep_length).map_err(|_| {
        tracing::warn!("upstream answered with a transfer coding keyward does not decode");
        ProxyError::UpstreamUnavailable
    })
}

/// 413 when the request body went over its cap, else 502; logged by kind. `connect` tells a
/// failed connection from a failed exchange.
fn classify(err: &(dyn std::error::Error + 'static), connect: bool) -> ProxyError {
    let mut source = Some(err);
    while let Some(cause) = source {
        if cause.is::<LengthLimitError>() {
            return ProxyError::BodyTooLarge;
        }
        source = cause.source();
    }
    if connect {
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

/// Keep-alive HTTP/1.1 connections to the backend in the pod, for one worker.
///
/// Not the general-purpose pool: one plain-HTTP destination used from one thread needs no pool
/// key, boxed futures, connection-info extensions or per-connection watcher. A connection comes
/// back when its response body has been read to the end (see [`UpstreamBody`]), the most
/// recently used goes out first, and one idle for [`IDLE_TIMEOUT`] is closed.
#[derive(Debug)]
pub(crate) struct Backend {
    /// `host:port`.
    authority: Authority,
    /// Oldest first.
    idle: Mutex<VecDeque<Idle>>,
    sweeping: AtomicBool,
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

impl Backend {
    /// A pool for `authority` (`host:port`); it opens connections on demand.
    pub(crate) fn new(authority: Authority) -> Arc<Self> {
        Arc::new(Self { authority, idle: Mutex::default(), sweeping: AtomicBool::new(false) })
    }

    /// Where the connections go.
    pub(crate) fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Sends `request` (origin-form target, `Host` set) and waits up to `timeout` for the
    /// response headers. The body streams afterwards; dropping it cancels the exchange.
    pub(crate) async fn send(
        self: &Arc<Self>,
        request: Request<RequestBody>,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        match tokio::time::timeout(timeout, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(timeout_ms = timeout.as_millis() as u64, "upstream timed out");
                Err(ProxyError::UpstreamTimeout)
            }
        }
    }

    async fn exchange(
        self: &Arc<Self>,
        mut request: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            // A returned connection may still be finishing its last exchange, or have closed
            // (the backend said `Connection: close`, or timed it out): then take another.
            if reused && sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let slot = Some((self.clone(), sender));
                    return Ok(response.map(|inner| UpstreamBody {
                        inner,
                        slot,
                        rewrites: Vec::new(),
                        ended: false,
                    }));
                }
                Err(mut err) => match err.take_message() {
                    // Not written: a reused connection closed under us. Try another.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(classify(&err.into_error(), false)),
                },
            }
        }
    }

    fn checkout(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        expire(&mut idle);
        while let Some(entry) = idle.pop_back() {
            if !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    fn checkin(self: &Arc<Self>, sender: SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() >= MAX_IDLE {
                return;
            }
            idle.push_back(Idle { sender, since: Instant::now() });
        }
        // The first connection back starts the sweep, on the runtime that uses this pool.
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(sweep(Arc::downgrade(self)))),
                Err(_) => self.sweeping.store(false, Ordering::Relaxed),
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<RequestBody>, ProxyError> {
        let connect = tokio::net::TcpStream::connect(self.authority.as_str());
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "upstream connection failed");
                return Err(ProxyError::UpstreamUnavailable);
            }
            Err(_) => {
                tracing::warn!("upstream connection timed out");
                return Err(ProxyError::UpstreamUnavailable);
            }
        };
        let _ = stream.set_nodelay(true);
        let handshake =
            http1::Builder::new().max_buf_size(MAX_READ_AHEAD).handshake(TokioIo::new(stream));
        let (sender, conn) = handshake.await.map_err(|err| {
            tracing::warn!(error = %ErrorChain(&err), "upstream connection failed");
            ProxyError::UpstreamUnavailable
        })?;
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(error = %ErrorChain(&err), "backend connection ended");
            }
        });
        Ok(sender)
    }
}

/// Drops connections idle for longer than [`IDLE_TIMEOUT`] and those the backend closed.
fn expire(idle: &mut VecDeque<Idle>) {
    while idle.front().is_some_and(|e| e.since.elapsed() > IDLE_TIMEOUT || e.sender.is_closed()) {
        idle.pop_front();
    }
}

/// Expires idle connections while no request comes to do it; ends with the pool.
async fn sweep(pool: Weak<Backend>) {
    let mut tick = tokio::time::interval(IDLE_TIMEOUT / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        expire(&mut pool.idle.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// The body of an upstream response. From the [`Backend`] pool, read to the end, it hands its
/// connection back; dropped before the end, the connection closes with it.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    slot: Option<(Arc<Backend>, SendRequest<RequestBody>)>,
    /// What the stream passes through on its way (a grants filter, the safety net), in order.
    rewrites: Vec<Box<dyn Rewrite>>,
    ended: bool,
}

/// An error a rewrite ends a stream with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A change to a streamed body, frame by frame: what to send for each chunk, and at the end.
pub(crate) trait Rewrite: Send + std::fmt::Debug {
    /// What to send for `chunk` (possibly nothing yet, or only its first part).
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, BoxError>;
    /// The rest of the last chunk, when [`Rewrite::data`] sent it in two parts: asked for
    /// before the next chunk is given, and before the end.
    fn pending(&mut self) -> Result<Option<Bytes>, BoxError> {
        Ok(None)
    }
    /// What is left to send at the end of the stream.
    fn end(&mut self) -> Result<Bytes, BoxError>;
}

/// The rest a rewrite still holds, through the ones after it: the last one's first, as what
/// it holds came before anything an earlier one does.
fn pending(rewrites: &mut [Box<dyn Rewrite>]) -> Result<Option<Bytes>, BoxError> {
    for i in (0..rewrites.len()).rev() {
        let (head, tail) = rewrites.split_at_mut(i + 1);
        if let Some(rest) = head[i].pending()? {
            return through(tail, rest).map(Some);
        }
    }
    Ok(None)
}

/// `chunk` through each of `rewrites` in turn.
fn through(rewrites: &mut [Box<dyn Rewrite>], mut chunk: Bytes) -> Result<Bytes, BoxError> {
    for rewrite in rewrites {
        if chunk.is_empty() {
            break;
        }
        chunk = rewrite.data(chunk)?;
    }
    Ok(chunk)
}

/// What each of `rewrites` has left at the end, passed through the ones after it.
fn finish(rewrites: &mut [Box<dyn Rewrite>]) -> Result<Bytes, BoxError> {
    let mut out = bytes::BytesMut::new();
    for i in 0..rewrites.len() {
        let (head, tail) = rewrites.split_at_mut(i + 1);
        let rest = head[i].end()?;
        out.extend_from_slice(&through(tail, rest)?);
        // What that left pending in the rewrites after it goes before their own ends.
        while let Some(more) = pending(tail)? {
            out.extend_from_slice(&more);
        }
    }
    Ok(out.freeze())
}

impl UpstreamBody {
    /// A body whose connection is managed elsewhere.
    pub fn unpooled(inner: Incoming) -> Self {
        Self { inner, slot: None, rewrites: Vec::new(), ended: false }
    }

    /// The same stream, passed through `rewrite` after the rewrites it already has.
    pub(crate) fn rewritten(mut self, rewrite: impl Rewrite + 'static) -> Self {
        self.rewrites.push(Box::new(rewrite));
        self
    }

    fn release(&mut self) {
        if let Some((pool, sender)) = self.slot.take() {
            pool.checkin(sender);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            if !self.rewrites.is_empty() {
                match pending(&mut self.rewrites) {
                    Ok(None) => {}
                    Ok(Some(out)) if out.is_empty() => continue,
                    Ok(Some(out)) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                    Err(err) => {
                        self.ended = true;
                        return Poll::Ready(Some(Err(err)));
                    }
                }
            }
            let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
            let this = &mut *self;
            if this.rewrites.is_empty() {
                if frame.is_none() {
                    this.release();
                }
                return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
            }
            match frame {
                None => {
                    let rest = finish(&mut this.rewrites);
                    this.release();
                    this.ended = true;
                    return Poll::Ready(match rest {
                        Ok(rest) if rest.is_empty() => None,
                        Ok(rest) => Some(Ok(Frame::data(rest))),
                        Err(err) => Some(Err(err)),
                    });
                }
                Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => match through(&mut this.rewrites, data) {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                        Err(err) => {
                            this.ended = true;
                            return Poll::Ready(Some(Err(err)));
                        }
                    },
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || (self.rewrites.is_empty() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.rewrites.is_empty() {
            self.inner.size_hint()
        } else {
            SizeHint::default()
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // The server stops polling once a sized body is complete, so the end is seen here.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holds everything until the end.
    #[derive(Debug, Default)]
    struct Hold(Vec<u8>);

    impl Rewrite for Hold {
        fn data(&mut self, chunk: Bytes) -> Result<Bytes, BoxError> {
            self.0.extend_from_slice(&chunk);
            Ok(Bytes::new())
        }
        fn end(&mut self) -> Result<Bytes, BoxError> {
            Ok(std::mem::take(&mut self.0).into())
        }
    }

    /// Sends each chunk in two parts, marking each, the second as pending.
    #[derive(Debug, Default)]
    struct Halves(Option<Bytes>);

    impl Rewrite for Halves {
        fn data(&mut self, chunk: Bytes) -> Result<Bytes, BoxError> {
            let half = chunk.len() / 2;
            self.0 = Some([&b"<"[..], &chunk[half..], b">"].concat().into());
            Ok([&b"["[..], &chunk[..half], b"]"].concat().into())
        }
        fn pending(&mut self) -> Result<Option<Bytes>, BoxError> {
            Ok(self.0.take())
        }
        fn end(&mut self) -> Result<Bytes, BoxError> {
            assert!(self.0.is_none(), "end before the pending rest was taken");
            Ok(Bytes::from_static(b"."))
        }
    }

    #[test]
    fn what_a_rewrite_leaves_pending_comes_in_order_before_the_ends_after_it() {
        let mut rewrites: Vec<Box<dyn Rewrite>> =
            vec![Box::new(Hold::default()), Box::new(Halves::default())];
        assert!(through(&mut rewrites, Bytes::from_static(b"abcd")).unwrap().is_empty());
        assert_eq!(pending(&mut rewrites).unwrap(), None);
        assert_eq!(finish(&mut rewrites).unwrap(), &b"[ab]<cd>."[..]);
        // The last rewrite's rest goes before an earlier one's.
        let mut rewrites: Vec<Box<dyn Rewrite>> =
            vec![Box::new(Halves::default()), Box::new(Halves::default())];
        assert_eq!(through(&mut rewrites, Bytes::from_static(b"abcd")).unwrap(), &b"[[a]"[..]);
        assert_eq!(pending(&mut rewrites).unwrap().unwrap(), &b"<b]>"[..]);
        assert_eq!(pending(&mut rewrites).unwrap().unwrap(), &b"[<c]"[..]);
        assert_eq!(pending(&mut rewrites).unwrap().unwrap(), &b"<d>>"[..]);
        assert_eq!(pending(&mut rewrites).unwrap(), None);
    }
}
