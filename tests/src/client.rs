//! A plain HTTP/1.1 and h2c client for tests, with full control over repeated headers.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// A finished response.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error` code of keyward's own JSON answer (`{"error":"...","message":"..."}`),
    /// checking that it has exactly those two fields and a message.
    ///
    /// # Panics
    /// If the body is not such an answer.
    pub fn error(&self) -> String {
        let value: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", self.text()));
        let object = value.as_object().unwrap_or_else(|| panic!("not an object: {value}"));
        let message = object.get("message").and_then(|m| m.as_str()).unwrap_or_default();
        assert!(object.len() == 2 && !message.is_empty(), "not keyward's answer: {value}");
        object["error"].as_str().unwrap_or_else(|| panic!("no error code: {value}")).to_owned()
    }
}

/// An HTTP/1.1 client.
pub fn http1() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// An HTTP/2 client with prior knowledge (h2c).
pub fn h2c() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).http2_only(true).build(HttpConnector::new())
}

/// A request to `addr` + `path` with `headers` appended in order (repeats kept).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::copy_from_slice(body.as_bytes()))).expect("valid request")
}

/// Sends and collects the whole response.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Reply {
    let response = client.request(request).await.expect("response");
    collect(response).await
}

/// Collects a streaming response.
pub async fn collect(response: Response<Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply { status: parts.status, headers: parts.headers, body }
}

/// A GET with one `X-Api-Key`.
pub async fn get_with_key(addr: SocketAddr, path: &str, key: &str) -> Reply {
    send(&http1(), request(addr, "GET", path, &[("x-api-key", key)], "")).await
}

/// A body-less client for streaming requests.
pub fn streaming() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}
