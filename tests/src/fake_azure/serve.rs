//! Accept loops for the three servers: HTTP/1.1 and h2 (by ALPN over TLS, by preface in clear),
//! one task per connection, all of them owned by the accept task so aborting it closes
//! every connection too.
//!
//! While the fake is marked unavailable, a new connection is closed as soon as it is
//! accepted and an open one is closed where it stands, mid-request or idle.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::wire::{self, Reply};
use super::{Endpoint, RecordedRequest, Shared};

/// Binds `127.0.0.1:port`. A fixed port may still be held for a moment by a fake dropped
/// just before (its listener closes when its aborted task is next polled), so `AddrInUse`
/// is retried for up to two seconds.
pub(crate) async fn bind(port: u16) -> std::io::Result<TcpListener> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut attempts = 0;
    loop {
        match TcpListener::bind(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && port != 0 && attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            result => return result,
        }
    }
}

/// Serves `endpoint` on `listener` until the returned task is aborted.
pub(super) fn spawn(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    endpoint: Endpoint,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    if !*shared.up.borrow() {
                        shared.dropped.fetch_add(1, Ordering::SeqCst);
                        drop(stream);
                        continue;
                    }
                    connections.spawn(connection(stream, tls.clone(), shared.clone(), endpoint));
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    })
}

/// Serves one connection until it ends or the fake goes down.
async fn connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    endpoint: Endpoint,
) {
    let mut up = shared.up.subscribe();
    let service = {
        let shared = shared.clone();
        service_fn(move |request| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(answer(&shared, endpoint, request).await) }
        })
    };
    let serve = async move {
        let builder = auto::Builder::new(TokioExecutor::new());
        let _ = match tls {
            None => builder.serve_connection(TokioIo::new(stream), service).await,
            Some(tls) => match tls.accept(stream).await {
                Ok(stream) => builder.serve_connection(TokioIo::new(stream), service).await,
                Err(_) => return,
            },
        };
    };
    tokio::select! {
        () = serve => {}
        _ = up.wait_for(|up| !*up) => {
            shared.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Largest request body read (the Entra token endpoint's form; the others take none).
const MAX_BODY: usize = 64 * 1024;

/// Answers one request and records it (method, path, whether it carried Authorization, the
/// status: never a header value or a body).
async fn answer(shared: &Shared, endpoint: Endpoint, request: http::Request<Incoming>) -> Reply {
    let now = wire::now();
    let path = request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let method = request.method().to_string();
    let version = request.version();
    let authorization = request.headers().contains_key(http::header::AUTHORIZATION);
    let reply = match endpoint {
        Endpoint::Vault => shared.vault.handle(&shared.identity, &request, now),
        Endpoint::Identity => shared.identity.handle(&request, now),
        Endpoint::Entra => {
            let (parts, body) = request.into_parts();
            match Limited::new(body, MAX_BODY).collect().await {
                Ok(body) => {
                    let request = http::Request::from_parts(parts, body.to_bytes());
                    shared.entra.handle(&shared.identity, &request, now)
                }
                Err(_) => wire::empty(http::StatusCode::PAYLOAD_TOO_LARGE),
            }
        }
    };
    shared.requests.lock().unwrap().push(RecordedRequest {
        endpoint,
        method,
        path,
        version,
        authorization,
        status: reply.status().as_u16(),
    });
    reply
}
