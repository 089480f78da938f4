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

use crate::auth::TokenDenial;
use crate::Body;

/// A request keyward answers itself instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Missing or wrong credential.
    #[error("unauthorized")]
    Unauthorized,
    /// No credential where bearer tokens are accepted.
    #[error("bearer token required")]
    BearerRequired,
    /// A bearer token that was refused (401 `invalid_token`).
    #[error("invalid token")]
    InvalidToken(TokenDenial),
    /// A valid token without a required scope (403 `insufficient_scope`).
    #[error("insufficient scope")]
    InsufficientScope,
    /// A valid token of an agent no client lists.
    #[error("unknown agent")]
    UnknownAgent,
    /// Both a bearer token and an `X-Api-Key`.
    #[error("ambiguous credentials")]
    AmbiguousCredentials,
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
    /// A compressed answer the safety net cannot read.
    #[error("unscannable response")]
    Unscannable,
    /// An answer carrying a known secret, refused (safety net in block mode).
    #[error("secret in response")]
    SecretInResponse,
    /// A request to an upstream carrying a known secret (exfiltration through a tool).
    #[error("secret in request")]
    SecretInRequest,
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
            ProxyError::Unauthorized | ProxyError::BearerRequired => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            ProxyError::InvalidToken(_) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            ProxyError::InsufficientScope => (StatusCode::FORBIDDEN, "insufficient_scope"),
            ProxyError::UnknownAgent => (StatusCode::FORBIDDEN, "unknown_agent"),
            ProxyError::AmbiguousCredentials => (StatusCode::BAD_REQUEST, "ambiguous_credentials"),
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
            ProxyError::Unscannable => (StatusCode::BAD_GATEWAY, "unscannable_response"),
            ProxyError::SecretInResponse => (StatusCode::BAD_GATEWAY, "secret_in_response"),
            ProxyError::SecretInRequest => (StatusCode::FORBIDDEN, "secret_in_request"),
            ProxyError::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            ProxyError::UpstreamUnavailable => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
        }
    }

    /// A sentence a client can show its user: what is expected, never what was sent.
    pub fn message(&self) -> &'static str {
        match self {
            ProxyError::Unauthorized => "a valid X-Api-Key header is required",
            ProxyError::BearerRequired => {
                "a valid bearer token (Authorization: Bearer) or X-Api-Key header is required"
            }
            ProxyError::InvalidToken(denial) => denial.description(),
            ProxyError::InsufficientScope => "the token lacks a scope this server requires",
            ProxyError::UnknownAgent => "this token's client is not registered with this server",
            ProxyError::AmbiguousCredentials => {
                "send either an Authorization bearer token or an X-Api-Key header, not both"
            }
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
            ProxyError::Unscannable => {
                "the upstream answered with a compressed body, which cannot be checked"
            }
            ProxyError::SecretInResponse => "the upstream's answer carried a credential",
            ProxyError::SecretInRequest => "the request carried a credential and was not sent",
            ProxyError::UpstreamTimeout => "the upstream server did not answer in time",
            ProxyError::UpstreamUnavailable => "the upstream server could not be reached",
        }
    }

    /// The response the client sees. `challenges` are the `WWW-Authenticate` values of the
    /// ingress (none on egress).
    pub fn into_response(self, challenges: Option<&Challenges>) -> Response<Body> {
        let (status, code) = self.status();
        let mut response = json_message(status, code, self.message());
        let headers = response.headers_mut();
        if let Some(challenge) = challenges.and_then(|c| c.for_error(&self)) {
            headers.insert(header::WWW_AUTHENTICATE, challenge.clone());
        }
        match self {
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

/// The ingress's `WWW-Authenticate` values, built once: for a request without a credential,
/// and with bearer tokens for each way a token fails (RFC 6750 §3).
#[derive(Debug, Clone)]
pub struct Challenges {
    missing: HeaderValue,
    bearer: Option<Bearer>,
}

#[derive(Debug, Clone)]
struct Bearer {
    invalid: Vec<HeaderValue>,
    insufficient: HeaderValue,
}

impl Challenges {
    /// Only `challenge` (the API-key one, or a `resource_metadata` hosted elsewhere).
    pub fn fixed(challenge: HeaderValue) -> Self {
        Self { missing: challenge, bearer: None }
    }

    /// `Bearer resource_metadata="<metadata>"` with `scope` when there are scopes to ask for,
    /// and the `error=` forms; `required` is what an `insufficient_scope` names.
    pub fn bearer(metadata: &str, scopes: &str, required: &str) -> Result<Self, InvalidChallenge> {
        let base = format!("Bearer resource_metadata=\"{metadata}\"");
        let with_scope = |base: &str, scope: &str| match scope {
            "" => base.to_owned(),
            scope => format!("{base}, scope=\"{scope}\""),
        };
        let value = |text: String| HeaderValue::try_from(text).map_err(|_| InvalidChallenge);
        let invalid = TokenDenial::ALL
            .iter()
            .map(|denial| {
                value(format!(
                    "{base}, error=\"invalid_token\", error_description=\"{}\"",
                    denial.description()
                ))
            })
            .collect::<Result<_, _>>()?;
        let insufficient = value(with_scope(
            &format!("{base}, error=\"insufficient_scope\""),
            if required.is_empty() { scopes } else { required },
        ))?;
        Ok(Self {
            missing: value(with_scope(&base, scopes))?,
            bearer: Some(Bearer { invalid, insufficient }),
        })
    }

    fn for_error(&self, err: &ProxyError) -> Option<&HeaderValue> {
        match (err, &self.bearer) {
            (ProxyError::Unauthorized | ProxyError::BearerRequired, _) => Some(&self.missing),
            (ProxyError::InvalidToken(denial), Some(bearer)) => {
                Some(&bearer.invalid[denial.index()])
            }
            (ProxyError::InsufficientScope, Some(bearer)) => Some(&bearer.insufficient),
            _ => None,
        }
    }
}

/// A challenge that cannot be a header value (checked by the configuration first).
#[derive(Debug, thiserror::Error)]
#[error("the WWW-Authenticate challenge cannot be a header value")]
pub struct InvalidChallenge;

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
        let response = ProxyError::Unauthorized.into_response(Some(&Challenges::fixed(challenge)));
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
