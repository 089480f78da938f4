//! A small streaming HTTP backend for tests: records what it receives and streams SSE events
//! the test hands it, so a test can see exactly what keyward forwarded and when.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// One request as the backend received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query (also for h2, whose request URIs are absolute).
    pub uri: String,
    /// HTTP version, e.g. `HTTP/2.0`.
    pub version: String,
    /// Every header, as received.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// A running test backend on `127.0.0.1:0`; it stops when dropped.
///
/// Paths (matched by their last segment, so a base path may precede them): `/sse` streams
/// events sent through the handle from [`TestBackend::next_stream`]; `/slow` answers after two
/// seconds; `/redirect` answers 302 to another host; `/close` answers with `Connection: close`
/// and closes the connection; `/session` answers with `Mcp-Session-Id: backend-session-1`;
/// `/echo` answers with the request's headers and body, as an httpbin-style debug endpoint
/// does (a credential it was sent comes back in the body);
/// `/gzip` answers with `Content-Encoding: gzip` (a body no proxy can read without decoding);
/// `/tools` answers a JSON-RPC `tools/list` result (three tools) for the request's `id`; every
/// other path records the request and answers `{"ok":true}`.
#[derive(Debug)]
pub struct TestBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    streams: tokio::sync::Mutex<mpsc::UnboundedReceiver<mpsc::Sender<Bytes>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestBackend {
    /// Starts a plain-HTTP backend (HTTP/1.1 and h2c).
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Starts a backend that speaks TLS (h2 or HTTP/1.1 by ALPN) with `tls`.
    pub async fn start_tls(tls: Arc<rustls::ServerConfig>) -> Self {
        Self::start_with(Some(TlsAcceptor::from(tls))).await
    }

    async fn start_with(tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (streams_tx, streams_rx) = mpsc::unbounded_channel();
        let state = (seen.clone(), streams_tx);
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(request, &state.0, &state.1).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        None => builder.serve_connection(TokioIo::new(stream), service).await,
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => {
                                builder.serve_connection(TokioIo::new(stream), service).await
                            }
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        let streams = tokio::sync::Mutex::new(streams_rx);
        Self { addr, seen, connections, streams, task }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Every request recorded so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The sender of the next `/sse` response: each `Bytes` sent is one body frame. The
    /// sender's `closed()` resolves when the response body is dropped (the client went away).
    pub async fn next_stream(&self) -> mpsc::Sender<Bytes> {
        let mut streams = self.streams.lock().await;
        let next = tokio::time::timeout(Duration::from_secs(10), streams.recv()).await;
        next.expect("an /sse request within 10 s").expect("backend running")
    }
}

type Reply = http_body_util::Either<Full<Bytes>, ChannelBody>;

async fn answer(
    request: Request<Incoming>,
    seen: &Mutex<Vec<Seen>>,
    streams: &mpsc::UnboundedSender<mpsc::Sender<Bytes>>,
) -> Response<Reply> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        version: format!("{:?}", parts.version),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let last = parts.uri.path().rsplit('/').next().unwrap_or_default();
    match last {
        "redirect" => Response::builder()
            .status(StatusCode::FOUND)
            .header("location", "https://elsewhere.example/steal")
            .body(http_body_util::Either::Left(Full::new(Bytes::new())))
            .unwrap(),
        "sse" => {
            let (tx, rx) = mpsc::channel(16);
            let _ = streams.send(tx);
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(http_body_util::Either::Right(ChannelBody(rx)))
                .unwrap()
        }
        "close" => {
            let mut response = json(StatusCode::OK, "{\"ok\":true}");
            response.headers_mut().insert("connection", "close".parse().unwrap());
            response
        }
        "echo" => {
            let headers: serde_json::Map<String, serde_json::Value> = parts
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect();
            let echoed = serde_json::json!({
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            });
            Response::builder()
                .header("content-type", "application/json")
                .body(http_body_util::Either::Left(Full::new(Bytes::from(echoed.to_string()))))
                .unwrap()
        }
        "gzip" => Response::builder()
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(http_body_util::Either::Left(Full::new(Bytes::from_static(b"\x1f\x8b\x08\0gz"))))
            .unwrap(),
        "session" => {
            let mut response = json(StatusCode::OK, "{\"ok\":true}");
            response.headers_mut().insert("mcp-session-id", "backend-session-1".parse().unwrap());
            response
        }
        "tools" => {
            let id = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("id").cloned())
                .unwrap_or_default();
            Response::builder()
                .header("content-type", "application/json")
                .body(http_body_util::Either::Left(Full::new(Bytes::from(tools_list(&id)))))
                .unwrap()
        }
        "slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            json(StatusCode::OK, "{\"ok\":true}")
        }
        _ => {
            let mut response = json(StatusCode::OK, "{\"ok\":true}");
            // Hop-by-hop headers a proxy must not pass back.
            response.headers_mut().insert("connection", "x-backend-private".parse().unwrap());
            response.headers_mut().insert("x-backend-private", "1".parse().unwrap());
            response
        }
    }
}

/// A `tools/list` result for `id`: `get_activity_by_date`, `get_sleep_by_date`,
/// `get_activity_records`, with a `nextCursor`.
pub fn tools_list(id: &serde_json::Value) -> String {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [
        {"name": "get_activity_by_date", "inputSchema": {"type": "object"}},
        {"name": "get_sleep_by_date", "inputSchema": {"type": "object"}},
        {"name": "get_activity_records", "inputSchema": {"type": "object"}}],
        "nextCursor": "page-2"}})
    .to_string()
}

fn json(status: StatusCode, body: &'static str) -> Response<Reply> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(http_body_util::Either::Left(Full::new(Bytes::from_static(body.as_bytes()))))
        .unwrap()
}

/// A response body fed frame by frame from a channel.
#[derive(Debug)]
pub struct ChannelBody(mpsc::Receiver<Bytes>);

impl ChannelBody {
    /// A body that yields each `Bytes` received as one data frame, and ends when the sender
    /// is dropped.
    pub fn new(frames: mpsc::Receiver<Bytes>) -> Self {
        Self(frames)
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}
