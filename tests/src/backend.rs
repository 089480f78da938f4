//! A small streaming HTTP backend for tests: records what it receives and streams SSE events
//! the test hands it, so a test can see exactly what keyward forwarded and when.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
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

/// One request as the backend received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Every header, as received.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// A running test backend on `127.0.0.1:0`; it stops when dropped.
///
/// Paths: `/sse` streams events sent through the handle from [`TestBackend::next_stream`];
/// `/slow` answers after two seconds; every other path records the request and answers
/// `{"ok":true}`.
#[derive(Debug)]
pub struct TestBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    streams: tokio::sync::Mutex<mpsc::UnboundedReceiver<mpsc::Sender<Bytes>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestBackend {
    /// Starts the backend.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (streams_tx, streams_rx) = mpsc::unbounded_channel();
        let state = (seen.clone(), streams_tx);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(request, &state.0, &state.1).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            streams: tokio::sync::Mutex::new(streams_rx),
            task,
        }
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
        next.expect("an /sse request within 10 s")
            .expect("backend running")
    }
}

type Reply = http_body_util::Either<Full<Bytes>, ChannelBody>;

async fn answer(
    request: Request<Incoming>,
    seen: &Mutex<Vec<Seen>>,
    streams: &mpsc::UnboundedSender<mpsc::Sender<Bytes>>,
) -> Response<Reply> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body,
    });
    match parts.uri.path() {
        "/sse" => {
            let (tx, rx) = mpsc::channel(16);
            let _ = streams.send(tx);
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(http_body_util::Either::Right(ChannelBody(rx)))
                .unwrap()
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            json(StatusCode::OK, "{\"ok\":true}")
        }
        _ => {
            let mut response = json(StatusCode::OK, "{\"ok\":true}");
            // Hop-by-hop headers a proxy must not pass back.
            response
                .headers_mut()
                .insert("connection", "x-backend-private".parse().unwrap());
            response
                .headers_mut()
                .insert("x-backend-private", "1".parse().unwrap());
            response
        }
    }
}

fn json(status: StatusCode, body: &'static str) -> Response<Reply> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(http_body_util::Either::Left(Full::new(Bytes::from_static(
            body.as_bytes(),
        ))))
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
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}
