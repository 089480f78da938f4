//! The backend-facing path: forward the backend's calls to allow-listed upstreams and add the
//! route's credential on the way out.
//!
//! keyward is never an open forward proxy here: a request reaches an upstream only through a
//! configured route prefix, CONNECT and absolute-form targets are refused, and a path that could
//! climb out of the route's base (`..`, encoded slashes) is refused before anything is sent.
//! The credential is a sensitive header value taken from the current snapshot; any credential
//! the backend set is removed first, and redirects are returned, never followed.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::config::EgressConfig;
use crate::error::ProxyError;
use crate::exchange::Exchange;
use crate::forward::{self, Upstream};
use crate::headers;
use crate::metrics::{Forward, Listener, Metrics};
use crate::safety::{KnownSecrets, Net, Place};
use crate::secrets::Snapshot;
use crate::telemetry;
use crate::trust::{self, TrustError};
use crate::Body;

/// One allow-listed upstream.
#[derive(Debug)]
struct Route {
    /// Position in the configuration (a metrics label index).
    position: usize,
    prefix: String,
    /// The prefix, for the safety net's reports.
    name: Arc<str>,
    scheme: Scheme,
    authority: Authority,
    host: HeaderValue,
    base_path: String,
    header: HeaderName,
    secret: String,
    timeout: Duration,
    static_headers: HeaderMap,
}

/// The egress handler: one per worker, shared by the worker's backend connections.
#[derive(Debug, Clone)]
pub struct Egress {
    routes: Arc<[Route]>,
    /// The credential of each route, by index, from the current snapshot (`None`: missing).
    /// Shared by every worker's copy.
    credentials: Arc<ArcSwap<Vec<Option<HeaderValue>>>>,
    tls: rustls::ClientConfig,
    client: Upstream<HttpsConnector<HttpConnector>>,
    max_header_bytes: usize,
    max_body_bytes: u64,
    net: Net,
    metrics: Arc<Metrics>,
}

impl Egress {
    /// Builds the handler from validated config.
    pub fn new(
        config: &EgressConfig,
        max_header_bytes: usize,
        max_body_bytes: u64,
        known: Arc<KnownSecrets>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, TrustError> {
        let mut routes: Vec<Route> = config
            .routes
            .iter()
            .enumerate()
            .map(|(position, route)| Route {
                position,
                prefix: route.prefix.clone(),
                name: route.prefix.as_str().into(),
                scheme: route.upstream.scheme().clone(),
                host: route.upstream.host_header().clone(),
                authority: route.upstream.authority().clone(),
                base_path: route.upstream.path().to_owned(),
                header: route.header.clone(),
                secret: route.secret.clone(),
                timeout: route.timeout,
                static_headers: route.static_headers(),
            })
            .collect();
        // Longest prefix first, so `/health/v2/` wins over `/health/`.
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        let tls = trust::client_config(config.extra_ca.as_deref())?;
        Ok(Self {
            net: Net::new(known, config.safety_net),
            credentials: Arc::new(ArcSwap::from_pointee(vec![None; routes.len()])),
            routes: routes.into(),
            client: Upstream::https(tls.clone()),
            tls,
            max_header_bytes,
            max_body_bytes,
            metrics,
        })
    }

    /// A copy for another worker: the same routes and credentials, and a connection pool of
    /// its own, so that an upstream connection is only ever used on the thread that opened it.
    pub fn for_worker(&self) -> Self {
        Self { client: Upstream::https(self.tls.clone()), ..self.clone() }
    }

    /// Answers one backend request: the upstream's response, or keyward's own refusal. Takes
    /// the `Arc` so that the future owns it and needs no wrapper.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let span = tracing::info_span!(
            "egress",
            otel.kind = "client",
            http.request.method = %method,
            url.path = %path,
            keyward.route = tracing::field::Empty,
            server.address = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        let exchange = Exchange::begin(Listener::Egress, span, request.headers());
        let serve = self.proxy(request, exchange.span());
        let (response, route) = exchange.serve(&self.metrics, None, serve).await;
        let status = response.status();
        let elapsed = exchange.end(status);
        let position = route.map(|r| self.routes[r].position);
        self.metrics.record_egress(&method, position, status, exchange.started());
        tracing::info!(
            target: "keyward::access",
            listener = "egress",
            %method,
            path,
            route = route.map_or("none", |r| self.routes[r].prefix.as_str()),
            upstream = route.map_or("none", |r| self.routes[r].authority.host()),
            status = status.as_u16(),
            latency_us = elapsed.as_micros() as u64,
        );
        response
    }

    async fn proxy(
        &self,
        request: Request<Incoming>,
        span: &tracing::Span,
    ) -> Result<(Response<Body>, usize), ProxyError> {
        let (mut parts, body) = request.into_parts();

        // 1. Never a forward proxy: no CONNECT, no absolute-form target on HTTP/1.
        if parts.method == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed);
        }
        if parts.version < Version::HTTP_2 && parts.uri.scheme().is_some() {
            return Err(ProxyError::BadRequest);
        }
        if headers::section_size(&parts.headers) > self.max_header_bytes {
            return Err(ProxyError::HeadersTooLarge);
        }

        // 2. Only allow-listed routes, and only paths that stay under the route's base.
        let path = parts.uri.path();
        let index = self
            .routes
            .iter()
            .position(|r| path.starts_with(&r.prefix))
            .ok_or(ProxyError::NotFound)?;
        let route = &self.routes[index];
        span.record("keyward.route", route.prefix.as_str());
        span.record("server.address", route.authority.host());
        let rest = &path[route.prefix.len()..];
        if !stays_below(rest) {
            return Err(ProxyError::BadRequest);
        }
        let credential = self.credentials.load()[index].clone().ok_or_else(|| {
            tracing::warn!(secret = %route.secret, "route credential not loaded; refusing");
            ProxyError::NotReady
        })?;

        // 3. Hop-by-hop and framing first, then every credential the backend set.
        headers::remove_hop_by_hop(&mut parts.headers);
        headers::take_framing(&mut parts.headers, false)?;
        headers::strip_credentials(&mut parts.headers);

        // 4. The backend holds no secret: one in its target, headers or body is exfiltration
        //    through a tool, refused before anything is sent. The body is read for that (up to
        //    the limit); answers come uncompressed, so that the net can read them.
        let body = if self.net.is_on() {
            parts.headers.remove(header::ACCEPT_ENCODING);
            let bytes = match http_body::Body::is_end_stream(&body) {
                true => bytes::Bytes::new(),
                false => forward::read_body(body, self.max_body_bytes).await?,
            };
            let hits = self.net.request_hits(&parts, &bytes);
            if !hits.is_empty() {
                for hit in &hits {
                    self.metrics.record_leak(Listener::Egress, &hit.secret);
                    tracing::warn!(target: "keyward::audit", decision = "deny",
                        reason = "secret_in_request", secret = &*hit.secret,
                        route = route.prefix.as_str(),
                        "the backend's request carried a known secret value; not sent");
                }
                return Err(ProxyError::SecretInRequest);
            }
            Either::Right(bytes)
        } else {
            Either::Left(body)
        };

        // 5. Then ours.
        parts.headers.remove(&route.header);
        for (name, value) in &route.static_headers {
            parts.headers.insert(name.clone(), value.clone());
        }
        parts.headers.insert(route.header.clone(), credential);
        parts.headers.insert(header::HOST, route.host.clone());
        telemetry::propagate(span, &mut parts.headers);

        // 6. The upstream URL: the route's base, the rest of the path, the query as sent.
        let mut target = String::with_capacity(route.base_path.len() + rest.len() + 64);
        target.push_str(&route.base_path);
        target.push_str(rest);
        if let Some(query) = parts.uri.query() {
            target.push('?');
            target.push_str(query);
        }
        parts.uri = Uri::builder()
            .scheme(route.scheme.clone())
            .authority(route.authority.clone())
            .path_and_query(PathAndQuery::try_from(target).map_err(|_| ProxyError::BadRequest)?)
            .build()
            .map_err(|_| ProxyError::BadRequest)?;
        // The connector negotiates h2 or HTTP/1.1 by ALPN; it needs a neutral version.
        parts.version = Version::HTTP_11;

        let request = match body {
            Either::Left(body) => forward::outgoing(parts, body, self.max_body_bytes),
            Either::Right(bytes) => forward::outgoing_bytes(parts, bytes),
        };
        let head = request.method() == Method::HEAD;
        let forward = Forward::start(request.method());
        let sent = self.client.send(request, route.timeout).await;
        self.metrics.record_forward(forward, Listener::Egress, Some(route.position), &sent);
        let mut response = sent?;
        forward::response_hygiene(&mut response, head)?;
        let place = Place {
            listener: Listener::Egress,
            name: route.name.clone(),
            metrics: self.metrics.clone(),
        };
        Ok((self.net.response(response, place, head).await?, index))
    }
}

impl crate::secrets::Consumer for Egress {
    /// Takes each route's credential from a new snapshot, as a sensitive header value.
    fn rebuild(&self, snapshot: &Snapshot) {
        let credentials = self
            .routes
            .iter()
            .map(|route| {
                let value = snapshot.get(&route.secret)?.current.to_header_value();
                if value.is_none() {
                    tracing::warn!(secret = %route.secret, "secret has bytes no header can carry");
                }
                value
            })
            .collect();
        self.credentials.store(Arc::new(credentials));
    }
}

/// True when a path remainder cannot climb out of the route's base: no `.` or `..` segment
/// (also percent-encoded), no encoded slash or backslash, no NUL. Public for the fuzz targets.
pub fn stays_below(rest: &str) -> bool {
    let lower = rest.to_ascii_lowercase();
    if ["%2f", "%5c", "%00", "\\", "\0"].iter().any(|bad| lower.contains(bad)) {
        return false;
    }
    lower.split('/').all(|segment| {
        let decoded = segment.replace("%2e", ".");
        decoded != "." && decoded != ".."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remainders_that_climb_out_are_refused() {
        for ok in ["activity/2025-02-02", "", "sleep/range/2025-01-01/2025-01-31", "a.b/c..d"] {
            assert!(stays_below(ok), "{ok}");
        }
        for bad in [
            "../admin",
            "a/../../x",
            "%2e%2e/x",
            "a/%2E%2e",
            "./x",
            "a%2fb",
            "a%5Cb",
            "a\\b",
            "x%00",
            "x\0",
        ] {
            assert!(!stays_below(bad), "{bad}");
        }
    }
}
