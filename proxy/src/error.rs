//! Every way a proxied request can fail and the response the client sees (one exhaustive
//! match decides the status: 4xx for what the client sent, 502/504 for the upstream, 503 for
//! keyward itself).
//!
//! The client gets a status and a short, fixed JSON body; nothing it sent and nothing the
//! upstream said is echoed. Detail goes to the log, through `tracing` fields that carry no
//! header value, query string or secret.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};

use crate::Body;

/// A request keyward answers itself instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Missing or wrong credential.
    #[error("unauthorized")]
    Unauthorized,
    /// Too many failed attempts from this peer.
    #[error("too many failed attempts; retry after {0} s")]
    RateLimited(u64),
    /// `Origin` not in `allowed_origins`.
    #[error("origin not allowed")]
    ForbiddenOrigin,
    /// A method keyward never forwards (CONNECT).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Request header section above the cap.
    #[error("request headers too large")]
    HeadersTooLarge,
    /// Request body above the cap.
    #[error("request body too large")]
    BodyTooLarge,
    /// No route for this path.
    #[error("not found")]
    NotFound,
    /// The client's request could not be forwarded as sent.
    #[error("bad request")]
    BadRequest,
    /// A transfer coding keyward does not decode (only `chunked` is).
    #[error("transfer coding not implemented")]
    UnsupportedCoding,
    /// No usable credential is loaded; keyward refuses until one is.
    #[error("no client key is loaded")]
    NotReady,
    /// The upstream did not answer in time.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The upstream could not be reached or broke the exchange.
    #[error("upstream unavailable")]
    UpstreamUnavailable,
}

impl ProxyError {
    /// The status and the fixed `error` code of the body.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ProxyError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            ProxyError::ForbiddenOrigin => (StatusCode::FORBIDDEN, "forbidden_origin"),
            ProxyError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ProxyError::HeadersTooLarge => {
                (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large")
            }
            ProxyError::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ProxyError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ProxyError::BadRequest => (StatusCode::BAD_REQUEST, "bad_request"),
            ProxyError::UnsupportedCoding => {
                (StatusCode::NOT_IMPLEMENTED, "unsupported_transfer_coding")
            }
            ProxyError::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ProxyError::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            ProxyError::UpstreamUnavailable => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
        }
    }

    /// A sentence a client can show its user: what is expected, never what was sent.
    pub fn message(&self) -> &'static str {
        match self {
            ProxyError::Unauthorized => "a valid X-Api-Key header is required",
            ProxyError::RateLimited(_) => {
                "too many failed authentication attempts from this address; retry later"
            }
            ProxyError::ForbiddenOrigin => "requests from this Origin are not allowed",
            ProxyError::MethodNotAllowed => "this method is not served",
            ProxyError::HeadersTooLarge => "the request headers are too large",
            ProxyError::BodyTooLarge => "the request body is too large",
            ProxyError::NotFound => "nothing is served at this path",
            ProxyError::BadRequest => "the request is malformed",
            ProxyError::UnsupportedCoding => "only the chunked transfer coding is supported",
            ProxyError::NotReady => "the server is starting or cannot load its keys; retry later",
            ProxyError::UpstreamTimeout => "the upstream server did not answer in time",
            ProxyError::UpstreamUnavailable => "the upstream server could not be reached",
        }
    }

    /// The response the client sees. `challenge` is the `WWW-Authenticate` value for 401s.
    pub fn into_response(self, challenge: Option<&HeaderValue>) -> Response<Body> {
        let (status, code) = self.status();
        let mut response = json_message(status, code, self.message());
        let headers = response.headers_mut();
        match self {
            ProxyError::Unauthorized => {
                if let Some(challenge) = challenge {
                    headers.insert(header::WWW_AUTHENTICATE, challenge.clone());
                }
            }
            ProxyError::RateLimited(seconds) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            ProxyError::NotReady => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}

impl From<crate::headers::Framing> for ProxyError {
    /// A client's (or the backend's, on egress) refused framing.
    fn from(framing: crate::headers::Framing) -> Self {
        match framing {
            crate::headers::Framing::Invalid => ProxyError::BadRequest,
            crate::headers::Framing::UnsupportedCoding => ProxyError::UnsupportedCoding,
        }
    }
}

/// A response with a body `{"error":"<code>"}`.
pub(crate) fn json(status: StatusCode, code: &'static str) -> Response<Body> {
    json_body(status, format!("{{\"error\":\"{code}\"}}"))
}

/// A response with a body `{"error":"<code>","message":"<message>"}`; both are keyward's own
/// fixed text, which needs no escaping.
pub(crate) fn json_message(
    status: StatusCode,
    code: &'static str,
    message: &'static str,
) -> Response<Body> {
    json_body(status, format!("{{\"error\":\"{code}\",\"message\":\"{message}\"}}"))
}

fn json_body(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn bodies_are_short_fixed_json() {
        let challenge = HeaderValue::from_static("ApiKey");
        let response = ProxyError::Unauthorized.into_response(Some(&challenge));
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "ApiKey");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            body,
            "{\"error\":\"unauthorized\",\"message\":\"a valid X-Api-Key header is required\"}"
        );
        for err in [ProxyError::RateLimited(1), ProxyError::UnsupportedCoding, ProxyError::NotReady]
        {
            let body = err.into_response(None).into_body().collect().await.unwrap().to_bytes();
            let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(parsed["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        let limited = ProxyError::RateLimited(7).into_response(None);
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()[header::RETRY_AFTER], "7");
    }

    #[test]
    fn causes_decide_status_classes() {
        assert_eq!(ProxyError::UpstreamTimeout.status().0, 504);
        assert_eq!(ProxyError::NotReady.status().0, 503);
    }
}
