//! The admin listener: liveness, readiness, metrics, and an on-demand secret reload.
//!
//! Readiness names missing secrets (names only). The reload endpoint answers loopback peers
//! only, so a pod's neighbours cannot make keyward hammer its secret source.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};

use crate::auth::Tokens;
use crate::error::json;
use crate::metrics::Metrics;
use crate::secrets::SecretStore;
use crate::Body;

/// State the admin endpoints read.
#[derive(Debug)]
pub(crate) struct Admin {
    store: Arc<SecretStore>,
    metrics: Arc<Metrics>,
    tokens: Option<Arc<Tokens>>,
}

impl Admin {
    /// The admin handler.
    pub(crate) fn new(
        store: Arc<SecretStore>,
        metrics: Arc<Metrics>,
        tokens: Option<Arc<Tokens>>,
    ) -> Self {
        Self { store, metrics, tokens }
    }

    /// Answers one admin request.
    pub(crate) fn handle<B>(&self, request: &Request<B>, peer: SocketAddr) -> Response<Body> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/livez") => {
                text(StatusCode::OK, "application/json", "{\"status\":\"ok\"}".into())
            }
            (&Method::GET, "/readyz") => self.readiness(),
            (&Method::GET, "/metrics") => {
                let body = self.metrics.render();
                text(StatusCode::OK, "text/plain; version=0.0.4", body)
            }
            (&Method::POST, "/refresh") if peer.ip().is_loopback() => {
                self.store.request_reload();
                text(StatusCode::ACCEPTED, "application/json", "{\"status\":\"reloading\"}".into())
            }
            (&Method::POST, "/refresh") => json(StatusCode::FORBIDDEN, "loopback_only"),
            (_, "/livez" | "/readyz" | "/metrics" | "/refresh") => {
                json(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            _ => json(StatusCode::NOT_FOUND, "not_found"),
        }
    }

    /// Ready when every secret and every issuer's signing keys are loaded (names only).
    fn readiness(&self) -> Response<Body> {
        let snapshot = self.store.snapshot();
        let unloaded = self.tokens.as_ref().map(|t| t.unloaded()).unwrap_or_default();
        let ready = snapshot.is_complete() && unloaded.is_empty();
        let mut body = serde_json::json!({
            "ready": ready,
            "missing_secrets": snapshot.missing(),
        });
        if self.tokens.is_some() {
            body["issuers_without_keys"] = unloaded.into();
        }
        let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        text(status, "application/json", body.to_string())
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Loaded;
    use crate::secrets::Secret;
    use std::time::{Duration, Instant};

    fn get(admin: &Admin, method: Method, path: &str, peer: &str) -> StatusCode {
        let request = Request::builder().method(method).uri(path).body(()).unwrap();
        admin.handle(&request, peer.parse().unwrap()).status()
    }

    #[test]
    fn readiness_follows_the_secrets() {
        let store = Arc::new(SecretStore::new(vec!["k".into()], Duration::ZERO));
        let admin = Admin::new(store.clone(), Arc::default(), None);
        let local = "127.0.0.1:1";
        assert_eq!(get(&admin, Method::GET, "/livez", local), 200);
        assert_eq!(get(&admin, Method::GET, "/readyz", local), 503);
        let value = Loaded::Value(Secret::from_string("v".into()));
        store.apply(vec![("k".into(), value)], Instant::now());
        assert_eq!(get(&admin, Method::GET, "/readyz", local), 200);
        assert_eq!(get(&admin, Method::GET, "/metrics", local), 200);
        assert_eq!(get(&admin, Method::GET, "/nope", local), 404);
    }

    #[test]
    fn reload_is_for_loopback_only() {
        let store = Arc::new(SecretStore::new(vec![], Duration::ZERO));
        let admin = Admin::new(store, Arc::default(), None);
        assert_eq!(get(&admin, Method::POST, "/refresh", "127.0.0.1:1"), 202);
        assert_eq!(get(&admin, Method::POST, "/refresh", "[::1]:1"), 202);
        assert_eq!(get(&admin, Method::POST, "/refresh", "10.0.0.7:1"), 403);
        assert_eq!(get(&admin, Method::GET, "/refresh", "127.0.0.1:1"), 405);
    }
}
