//! One accept loop for both of the fake's servers (OpenID endpoints over TLS, the control API
//! in clear): HTTP/1.1 and h2, one task per connection, all owned by the accept task so that
//! aborting it closes every connection too. Bodies are read whole, up to a limit.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::fake_azure::wire::{self, Reply};

/// Answers one request whose body has been read.
pub(super) type Handler = Arc<dyn Fn(Request<Bytes>) -> Reply + Send + Sync>;

/// Largest request body read (control requests carry a few claims).
const MAX_BODY: usize = 64 * 1024;

pub(super) use crate::fake_azure::serve::bind;

/// Serves `handler` on `listener` until the returned task is aborted.
pub(super) fn spawn(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: Handler,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    connections.spawn(connection(stream, tls.clone(), handler.clone()));
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    })
}

async fn connection(stream: TcpStream, tls: Option<TlsAcceptor>, handler: Handler) {
    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
        let handler = handler.clone();
        async move {
            let (parts, body) = request.into_parts();
            let reply = match Limited::new(body, MAX_BODY).collect().await {
                Ok(body) => handler(Request::from_parts(parts, body.to_bytes())),
                Err(_) => wire::empty(StatusCode::PAYLOAD_TOO_LARGE),
            };
            Ok::<_, Infallible>(reply)
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let _ = match tls {
        None => builder.serve_connection(TokioIo::new(stream), service).await,
        Some(tls) => match tls.accept(stream).await {
            Ok(stream) => builder.serve_connection(TokioIo::new(stream), service).await,
            Err(_) => return,
        },
    };
}
