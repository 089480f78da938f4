//! Entra ID's OpenID endpoints for one tenant, on the fake's origin
//! (`https://localhost:PORT` standing for `https://login.microsoftonline.com`):
//!
//! - `GET /{tenant}/v2.0/.well-known/openid-configuration`: the v2.0 discovery document;
//! - `GET /{tenant}/.well-known/openid-configuration`: the v1.0 one, whose issuer
//!   `https://localhost:PORT/{tenant}/` stands for `https://sts.windows.net/{tenant}/`;
//! - `GET /{tenant}/discovery/v2.0/keys` and `GET /{tenant}/discovery/keys`: the JWK Set
//!   (the same keys; the v2.0 entries also carry `issuer` and `cloud_instance_name`).
//!
//! Documents are sent with Entra's headers (`Cache-Control: max-age=86400, private`). Another
//! tenant gets 400 `invalid_tenant` AADSTS90002; while the fake is down, every one of these
//! paths gets 503 `temporarily_unavailable` AADSTS90033, Entra's transient error. Every
//! request to one of them is counted, answered or not. Every URL in a document is on the
//! fake's origin, so that nothing following one leaves loopback.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use super::Shared;
use crate::fake_azure::entra::failure;
use crate::fake_azure::wire::{self, Reply};

/// Which document a path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Document {
    DiscoveryV2,
    DiscoveryV1,
    KeysV2,
    KeysV1,
}

/// The algorithms the fake signs with. Entra itself lists only `RS256`.
const SIGNING_ALGS: [&str; 3] = ["RS256", "PS256", "ES256"];

/// Answers one request to the OpenID server.
pub(super) fn answer(shared: &Shared, request: &Request<Bytes>) -> Reply {
    let segments: Vec<&str> = request.uri().path().split('/').collect();
    let (tenant, document) = match segments.as_slice() {
        ["", t, "v2.0", ".well-known", "openid-configuration"] => (*t, Document::DiscoveryV2),
        ["", t, ".well-known", "openid-configuration"] => (*t, Document::DiscoveryV1),
        ["", t, "discovery", "v2.0", "keys"] => (*t, Document::KeysV2),
        ["", t, "discovery", "keys"] => (*t, Document::KeysV1),
        _ => return wire::empty(StatusCode::NOT_FOUND),
    };
    let counter = match document {
        Document::DiscoveryV2 | Document::DiscoveryV1 => &shared.discovery_fetches,
        Document::KeysV2 | Document::KeysV1 => &shared.jwks_fetches,
    };
    counter.fetch_add(1, Ordering::SeqCst);
    let now = wire::now();
    if request.method() != Method::GET {
        let mut reply = wire::empty(StatusCode::METHOD_NOT_ALLOWED);
        reply.headers_mut().insert(ALLOW, http::HeaderValue::from_static("GET"));
        return reply;
    }
    if shared.down.load(Ordering::SeqCst) {
        return failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
            now,
        );
    }
    if !tenant.eq_ignore_ascii_case(&shared.tenant) {
        return failure(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
            now,
        );
    }
    let body = match document {
        Document::DiscoveryV2 => discovery_v2(shared),
        Document::DiscoveryV1 => discovery_v1(shared),
        Document::KeysV2 => shared.keys.lock().unwrap().jwks(Some(&shared.issuer())),
        Document::KeysV1 => shared.keys.lock().unwrap().jwks(None),
    };
    published(&body)
}

/// A document with the headers Entra serves discovery and keys with.
fn published(body: &Value) -> Reply {
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/json; charset=utf-8")
        .header(CACHE_CONTROL, "max-age=86400, private")
        .header("access-control-allow-origin", "*")
        .header("x-ms-request-id", wire::random_guid())
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

/// Entra's v2.0 discovery document for the tenant, on the fake's origin.
fn discovery_v2(shared: &Shared) -> Value {
    let base = format!("{}/{}", shared.origin, shared.tenant);
    json!({
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported":
            ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": shared.jwks_uri(),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": SIGNING_ALGS,
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": shared.issuer(),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{}/oidc/userinfo", shared.origin),
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
        "claims_supported": [
            "sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
            "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr",
            "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email",
        ],
        "kerberos_endpoint": format!("{base}/kerberos"),
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
    })
}

/// Entra's v1.0 discovery document for the tenant, on the fake's origin.
fn discovery_v1(shared: &Shared) -> Value {
    let base = format!("{}/{}", shared.origin, shared.tenant);
    json!({
        "token_endpoint": format!("{base}/oauth2/token"),
        "token_endpoint_auth_methods_supported":
            ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": shared.jwks_uri_v1(),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": SIGNING_ALGS,
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/oauth2/logout"),
        "response_types_supported":
            ["code", "id_token", "code id_token", "token id_token", "token"],
        "scopes_supported": ["openid"],
        "issuer": shared.issuer_v1(),
        "claims_supported": [
            "sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
            "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr",
            "amr", "nonce", "email", "given_name", "family_name", "nickname",
        ],
        "microsoft_multi_refresh_token": true,
        "check_session_iframe": format!("{base}/oauth2/checksession"),
        "userinfo_endpoint": format!("{base}/openid/userinfo"),
        "kerberos_endpoint": format!("{base}/kerberos"),
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "authorization_endpoint": format!("{base}/oauth2/authorize"),
        "device_authorization_endpoint": format!("{base}/oauth2/devicecode"),
    })
}
