//! CORS for browser MCP clients from `ingress.allowed_origins`: preflights answered by keyward
//! itself (never forwarded, never authenticated: a browser sends no credential on them), and
//! the headers that let an allowed origin read the answers.
//!
//! Only origins the caller has checked against the allow-list reach these functions.

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::{Either, Full};

use crate::Body;

const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET, POST, DELETE, OPTIONS");
const ALLOW_HEADERS: HeaderValue = HeaderValue::from_static(
    "X-Api-Key, Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, \
     Mcp-Method, Mcp-Name, Last-Event-ID",
);
const EXPOSE_HEADERS: HeaderValue = HeaderValue::from_static("Mcp-Session-Id, WWW-Authenticate");
const MAX_AGE: HeaderValue = HeaderValue::from_static("600");

/// An `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub(super) fn is_preflight(parts: &Parts) -> bool {
    parts.method == Method::OPTIONS
        && parts.headers.contains_key(header::ORIGIN)
        && parts.headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight from an allowed `origin`.
pub(super) fn preflight(origin: HeaderValue) -> Response<Body> {
    let mut response = Response::new(Either::Right(Full::default()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    allow(headers, origin);
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE);
    response
}

/// Lets an allowed `origin` read a response.
pub(super) fn allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE_HEADERS);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}
