//! The client-facing path: authenticate an MCP client and forward it to the backend.
//!
//! The steps of [`Ingress::proxy`] run in a fixed order, and the order is the security
//! argument: limits before any work, hop-by-hop and framing removal before anything reads or
//! adds a header, the few unauthenticated answers (CORS preflights, OAuth discovery when there
//! is no OAuth) before the key check, authentication before anything is forwarded, credential
//! stripping before the trusted identity is added. This path must never forward a client
//! credential or the client's framing, never buffer a body, and never echo client input in an
//! error.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;

use crate::auth::{Authenticator, Client, Denial, Scheme, TokenDenial};
use crate::client_addr::TrustedProxies;
use crate::config::IngressConfig;
use crate::error::{self, Challenges, InvalidChallenge, ProxyError};
use crate::exchange::Exchange;
use crate::forward::{self, Backend};
use crate::headers::{self, X_KEYWARD_CLIENT};
use crate::mcp::{self, session::Sessions};
use crate::metrics::{Forward, Listener, Metrics};
use crate::safety::{KnownSecrets, Net, Place};
use crate::server::Peer;
use crate::telemetry;
use crate::Body;

mod cors;
mod metadata;

use metadata::ProtectedResource;

/// The ingress handler: one per worker, shared by the worker's connections.
#[derive(Debug, Clone)]
pub(crate) struct Ingress {
    auth: Arc<Authenticator>,
    backend: Arc<Backend>,
    backend_timeout: Duration,
    backend_host: HeaderValue,
    allowed_origins: Vec<HeaderValue>,
    challenges: Challenges,
    /// The RFC 9728 document keyward serves, and the paths it answers on.
    metadata: Option<Arc<ProtectedResource>>,
    /// `ingress.resource_metadata` is set: discovery is someone else's, and is forwarded.
    external_metadata: bool,
    sessions: Arc<Sessions>,
    net: Net,
    trusted_proxies: TrustedProxies,
    max_header_bytes: usize,
    max_body_bytes: u64,
    metrics: Arc<Metrics>,
}

impl Ingress {
    /// Builds the handler from validated config.
    pub(crate) fn new(
        config: &IngressConfig,
        auth: Arc<Authenticator>,
        sessions: Arc<Sessions>,
        known: Arc<KnownSecrets>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, InvalidChallenge> {
        let challenges = match (&config.resource_metadata, &config.oauth, auth.tokens()) {
            (Some(elsewhere), _, None) => Challenges::fixed(elsewhere.challenge.clone()),
            (elsewhere, Some(oauth), Some(tokens)) => {
                let url = elsewhere
                    .as_ref()
                    .map_or_else(|| oauth.metadata_url(), |m| m.url.as_str().to_owned());
                Challenges::bearer(&url, &oauth.scopes.join(" "), &tokens.required_scopes())?
            }
            _ => Challenges::fixed(HeaderValue::from_static("ApiKey header=\"X-Api-Key\"")),
        };
        let metadata = config.oauth.as_ref().map(|oauth| Arc::new(ProtectedResource::new(oauth)));
        Ok(Self {
            auth,
            backend_host: config.backend.host_header().clone(),
            backend: Backend::new(config.backend.authority().clone()),
            backend_timeout: config.backend_timeout,
            allowed_origins: config.allowed_origins.iter().map(|o| o.0.clone()).collect(),
            challenges,
            metadata,
            trusted_proxies: TrustedProxies::new(config.trusted_proxies.clone()),
            max_header_bytes: config.max_header_bytes,
            max_body_bytes: config.max_body_bytes,
            external_metadata: config.resource_metadata.is_some(),
            sessions,
            net: Net::new(known, config.safety_net),
            metrics,
        })
    }

    /// A copy for another worker: the same keyring, limits and metrics, and a backend pool of
    /// its own, so that a backend connection is only ever used on the thread that opened it.
    pub(crate) fn for_worker(&self) -> Self {
        Self { backend: Backend::new(self.backend.authority().clone()), ..self.clone() }
    }

    /// Answers one request: the backend's response, or keyward's own refusal. Takes the `Arc`
    /// so that the future owns it and needs no wrapper.
    pub(crate) async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: Peer,
    ) -> Response<Body> {
        let method = request.method().clone();
        // The path only: a query string can carry a credential and is never logged. A clone of
        // the parsed URI shares its bytes: nothing is allocated unless a line is written.
        let uri = request.uri().clone();
        let path = uri.path();
        // Who the client is: the TCP peer, or behind a trusted front proxy the address it
        // forwarded. Read before hop-by-hop removal: only a trusted nearest hop is believed, and
        // its `Connection` header could only have removed these headers, never added them.
        let addr = self.trusted_proxies.client_addr(peer.addr.ip(), request.headers());
        // An allowed browser origin may read every answer, keyward's own refusals included.
        let origin = request.headers().get(header::ORIGIN).filter(|o| self.allows(o)).cloned();
        let span = tracing::info_span!(
            "ingress",
            otel.kind = "server",
            http.request.method = %method,
            url.path = %path,
            network.peer.address = %peer.addr.ip(),
            client.address = %addr,
            keyward.client = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            // What keyward read of the MCP message (see `mcp::span`).
            mcp.method.name = tracing::field::Empty,
            mcp.session.id = tracing::field::Empty,
            jsonrpc.request.id = tracing::field::Empty,
            gen_ai.operation.name = tracing::field::Empty,
            gen_ai.tool.name = tracing::field::Empty,
            gen_ai.prompt.name = tracing::field::Empty,
            rpc.response.status_code = tracing::field::Empty,
            rpc.jsonrpc.error_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let exchange = Exchange::begin(Listener::Ingress, span, request.headers());
        let serve = self.proxy(request, addr, &peer, exchange.span());
        let (mut response, client) =
            exchange.serve(&self.metrics, Some(&self.challenges), serve).await;
        let client = client.flatten();
        if let Some(origin) = origin {
            cors::allow(response.headers_mut(), origin);
        }
        let status = response.status();
        let elapsed = exchange.end(status);
        let index = client.as_ref().map(|c| c.index);
        self.metrics.record_ingress(&method, index, status, exchange.started());
        tracing::info!(
            target: "keyward::access",
            listener = "ingress",
            %method,
            path,
            status = status.as_u16(),
            client = client.as_ref().map_or("unknown", |c| &*c.id),
            peer = %addr,
            latency_us = elapsed.as_micros() as u64,
        );
        response
    }

    /// What a client is told when it was not authenticated.
    fn refusal(&self, denial: Denial) -> ProxyError {
        match denial {
            Denial::RateLimited(seconds) => ProxyError::RateLimited(seconds),
            Denial::NoKeys | Denial::Token(TokenDenial::KeysNotLoaded) => ProxyError::NotReady,
            Denial::BothSchemes => ProxyError::AmbiguousCredentials,
            Denial::Token(TokenDenial::UnknownAgent) => ProxyError::UnknownAgent,
            Denial::Token(TokenDenial::InsufficientScope) => ProxyError::InsufficientScope,
            Denial::Token(denial) => ProxyError::InvalidToken(denial),
            _ if self.metadata.is_some() => ProxyError::BearerRequired,
            _ => ProxyError::Unauthorized,
        }
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        self.allowed_origins.iter().any(|allowed| allowed == origin)
    }

    /// The client's request, forwarded; or keyward's own answer, with the client when the
    /// request was authenticated.
    async fn proxy(
        &self,
        request: Request<Incoming>,
        addr: IpAddr,
        peer: &Peer,
        span: &tracing::Span,
    ) -> Result<(Response<Body>, Option<Client>), ProxyError> {
        let (mut parts, body) = request.into_parts();

        // 1. Limits, before any other work. CONNECT never reaches the backend.
        if parts.method == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed);
        }
        if headers::section_size(&parts.headers) > self.max_header_bytes {
            return Err(ProxyError::HeadersTooLarge);
        }
        if !headers::host_is_sound(&parts) {
            return Err(ProxyError::BadRequest);
        }
        let declared = parts.headers.get(header::CONTENT_LENGTH);
        if declared
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|len| len > self.max_body_bytes)
        {
            return Err(ProxyError::BodyTooLarge);
        }

        // 2. Hop-by-hop and Connection-named headers go before anything reads headers, and the
        //    client's framing with them: the backend gets keyward's framing of the body.
        headers::remove_hop_by_hop(&mut parts.headers);
        headers::take_framing(&mut parts.headers, false)?;

        // 3. What keyward answers without a key: CORS preflights (a browser sends no
        //    credential on them), and OAuth discovery when there is no OAuth to discover, so
        //    that a client stops there instead of registering with a server that has none.
        if cors::is_preflight(&parts) {
            let origin = parts.headers.get(header::ORIGIN).filter(|o| self.allows(o));
            return match origin {
                Some(origin) => Ok((cors::preflight(origin.clone()), None)),
                None => Err(ProxyError::ForbiddenOrigin),
            };
        }
        if let Some(metadata) = &self.metadata {
            if let Some(response) = metadata.answer(&parts.method, parts.uri.path()) {
                return Ok((response, None));
            }
        }
        if !self.external_metadata && is_oauth_discovery(parts.uri.path()) {
            let message = match self.metadata {
                Some(_) => "this server is an OAuth resource server, not an authorization server",
                None => "this server has no OAuth metadata; send an X-Api-Key header",
            };
            return Ok((error::json_message(StatusCode::NOT_FOUND, "not_found", message), None));
        }

        // 4. Authenticate, by the one scheme the request uses.
        let authenticated =
            self.auth.check(&parts.headers, &parts.uri, addr).await.map_err(|denial| {
                self.metrics.record_auth_failure(denial);
                let scheme = match denial {
                    Denial::Token(_) | Denial::BothSchemes => "bearer",
                    Denial::Missing | Denial::RateLimited(_) | Denial::NoKeys => "none",
                    _ => "api_key",
                };
                tracing::info!(
                    target: "keyward::audit",
                    decision = "deny",
                    client = "unknown",
                    scheme,
                    reason = denial.reason(),
                    path = parts.uri.path(),
                    peer = %addr,
                );
                self.refusal(denial)
            })?;
        let authenticated_grants = authenticated.grants().clone();
        let client = authenticated.client;
        peer.authenticated();
        span.record("keyward.client", &*client.id);
        let token = authenticated.token.as_ref();
        tracing::info!(
            target: "keyward::audit",
            decision = "allow",
            client = %client.id,
            scheme = authenticated.scheme.label(),
            issuer = token.map(|t| &*t.issuer),
            kid = token.map(|t| t.kid.as_str()),
            reason = match authenticated.scheme {
                Scheme::ApiKey => "valid_key",
                Scheme::Bearer => "valid_token",
            },
            path = parts.uri.path(),
            peer = %addr,
        );

        // 5. No client credential or address claim leaves; the only identity the backend sees
        //    is ours.
        headers::strip_client_credentials(&mut parts.headers);
        parts.headers.insert(X_KEYWARD_CLIENT, client.header.clone());

        // 6. Browsers may only call from an allowed origin.
        if let Some(origin) = parts.headers.get(header::ORIGIN) {
            if !self.allows(origin) {
                return Err(ProxyError::ForbiddenOrigin);
            }
        }

        // 7. A session id is the client's own: unwrap it, or the session is unknown to it.
        if let Some(presented) = parts.headers.get(MCP_SESSION_ID) {
            let Some(id) = self
                .sessions
                .unwrap(&client.id, presented.as_bytes())
                .and_then(|id| HeaderValue::from_bytes(id).ok())
            else {
                return Ok((session_not_found(), Some(client)));
            };
            if !span.is_disabled() {
                span.record("mcp.session.id", mcp::session::digest(presented.as_bytes()));
            }
            parts.headers.insert(MCP_SESSION_ID, id);
        }

        // 8. The MCP messages of a client with grants are read and checked (see `mcp`); so is
        //    every body that comes with `Mcp-Method` or `Mcp-Name`.
        let grants = authenticated_grants;
        let inspect = parts.method == Method::POST
            && (grants.restricts()
                || parts.headers.contains_key(mcp::MCP_METHOD)
                || parts.headers.contains_key(mcp::MCP_NAME));
        let mut answers = None;
        let body = if inspect {
            let bytes = forward::read_body(body, self.max_body_bytes).await?;
            let (decision, denied) = mcp::decide(&parts.headers, bytes, &grants);
            for (kind, name) in denied {
                self.metrics.record_grant_denial(client.index, kind.label(), &name);
                tracing::info!(
                    target: "keyward::audit",
                    decision = "deny",
                    client = %client.id,
                    reason = kind.label(),
                    name = %name,
                    path = parts.uri.path(),
                    peer = %addr,
                );
            }
            match decision {
                mcp::Decision::Answer { status, body } => {
                    return Ok((jsonrpc_answer(status, body), Some(client)));
                }
                mcp::Decision::Forward { body, answers: wanted } => {
                    answers = (!wanted.is_empty()).then_some(wanted);
                    Either::Right(body)
                }
            }
        } else {
            Either::Left(body)
        };

        // 9. Forward to the backend over a pooled HTTP/1.1 connection, streaming both ways;
        //    its answers come uncompressed, so that the safety net can read them.
        if self.net.is_on() {
            parts.headers.remove(header::ACCEPT_ENCODING);
        }
        parts.uri = origin_form(&parts.uri)?;
        parts.version = Version::HTTP_11;
        parts.headers.insert(header::HOST, self.backend_host.clone());
        telemetry::propagate(span, &mut parts.headers);
        let request = match body {
            Either::Left(body) => forward::outgoing(parts, body, self.max_body_bytes),
            Either::Right(bytes) => forward::outgoing_bytes(parts, bytes),
        };
        let head = request.method() == Method::HEAD;
        let forward = Forward::start(request.method());
        let sent = self.backend.send(request, self.backend_timeout).await;
        self.metrics.record_forward(forward, Listener::Ingress, None, &sent);
        let mut response = sent?;
        forward::response_hygiene(&mut response, head)?;
        if let Some(id) = response.headers().get(MCP_SESSION_ID) {
            let wrapped =
                self.sessions.wrap(&client.id, id.as_bytes()).ok_or(ProxyError::NotReady)?;
            response.headers_mut().insert(MCP_SESSION_ID, wrapped);
        }
        let place = Place {
            listener: Listener::Ingress,
            name: client.id.clone(),
            metrics: self.metrics.clone(),
        };
        let response = match answers {
            Some(answers) => self.rewrite(response, answers, place, head).await?,
            None => self.net.response(response, place, head).await?,
        };
        Ok((response, Some(client)))
    }

    /// The backend's answer to a client with grants: list results filtered, keyward's errors
    /// for denied calls of a batch added. JSON is read whole; SSE is rewritten as it streams.
    async fn rewrite(
        &self,
        response: Response<forward::UpstreamBody>,
        answers: mcp::filter::Answers,
        place: Place,
        head: bool,
    ) -> Result<Response<Body>, ProxyError> {
        let content_type =
            response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let essence = content_type.map(|t| t.split(';').next().unwrap_or_default().trim());
        match essence {
            Some("text/event-stream") => {
                let max_event = self.max_body_bytes as usize;
                let filtered = response.map(|body| body.rewritten(answers.sse(max_event)));
                self.net.response(filtered, place, head).await
            }
            Some("application/json") => {
                // The net sees the headers and the coding first; the body is read whole.
                let (mut parts, body) = response.into_parts();
                self.net.check_head(&mut parts, &place, head)?;
                let limited = http_body_util::Limited::new(body, self.max_body_bytes as usize);
                let bytes = limited
                    .collect()
                    .await
                    .map_err(|_| ProxyError::UpstreamUnavailable)?
                    .to_bytes();
                let body = self.net.bytes(answers.json(&bytes).unwrap_or(bytes), &place)?;
                Ok(Response::from_parts(parts, Either::Right(Full::new(body))))
            }
            _ => self.net.response(response, place, head).await,
        }
    }
}

/// `Mcp-Session-Id`.
const MCP_SESSION_ID: http::HeaderName = http::HeaderName::from_static("mcp-session-id");

/// keyward's own JSON-RPC answer (none: 202 Accepted).
fn jsonrpc_answer(status: StatusCode, body: Option<serde_json::Value>) -> Response<Body> {
    let bytes = body.map(|b| bytes::Bytes::from(b.to_string())).unwrap_or_default();
    let mut response = Response::new(Either::Right(Full::new(bytes)));
    *response.status_mut() = status;
    if status != StatusCode::ACCEPTED {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    response
}

/// 404 for a session this client was not given (the spec's answer for an unknown session).
fn session_not_found() -> Response<Body> {
    error::json_message(
        StatusCode::NOT_FOUND,
        "session_not_found",
        "no such session for this client",
    )
}

/// The paths OAuth clients probe for metadata (RFC 8414, RFC 9728, OpenID discovery), with or
/// without a path suffix naming the resource.
fn is_oauth_discovery(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/.well-known/") else { return false };
    ["oauth-protected-resource", "oauth-authorization-server", "openid-configuration"].iter().any(
        |name| rest.strip_prefix(name).is_some_and(|tail| tail.is_empty() || tail.starts_with('/')),
    )
}

/// The request target as the backend gets it: path and query only (the backend's address is
/// in `Host`). A client's absolute-form target loses its scheme and authority here.
fn origin_form(uri: &Uri) -> Result<Uri, ProxyError> {
    let path = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    if !path.as_str().starts_with('/') {
        // `*` (OPTIONS) or an authority form: nothing the backend serves.
        return Err(ProxyError::BadRequest);
    }
    Ok(Uri::from(path))
}
