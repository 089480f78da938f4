//! The RFC 9728 protected resource metadata keyward serves for itself with `[ingress.oauth]`:
//! at `/.well-known/oauth-protected-resource` and at that path followed by the resource's own
//! path, without authentication, so that an MCP client learns where to get a token.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{Either, Full};

use crate::config::OAuthConfig;
use crate::error::{self, ProxyError};
use crate::Body;

const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The document, rendered once, and the paths it is served on.
#[derive(Debug)]
pub(crate) struct ProtectedResource {
    document: Bytes,
    suffixed: String,
}

impl ProtectedResource {
    pub(crate) fn new(oauth: &OAuthConfig) -> Self {
        let mut document = serde_json::json!({
            "resource": oauth.resource.as_str(),
            "authorization_servers":
                oauth.issuers.iter().map(|i| i.issuer.as_str()).collect::<Vec<_>>(),
            "bearer_methods_supported": ["header"],
        });
        if !oauth.scopes.is_empty() {
            document["scopes_supported"] = oauth.scopes.clone().into();
        }
        if let Some(name) = &oauth.resource_name {
            document["resource_name"] = name.clone().into();
        }
        if let Some(docs) = &oauth.resource_documentation {
            document["resource_documentation"] = docs.as_str().into();
        }
        let suffixed = format!("{WELL_KNOWN}{}", oauth.resource.path().trim_end_matches('/'));
        Self { document: Bytes::from(document.to_string()), suffixed }
    }

    /// The answer for `path`, when it is one of the metadata paths.
    pub(crate) fn answer(&self, method: &Method, path: &str) -> Option<Response<Body>> {
        if path != WELL_KNOWN && path != self.suffixed {
            return None;
        }
        if method != Method::GET && method != Method::HEAD {
            let (status, code) = ProxyError::MethodNotAllowed.status();
            let mut refused =
                error::json_message(status, code, ProxyError::MethodNotAllowed.message());
            refused.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Some(refused);
        }
        let mut response = Response::new(Either::Right(Full::new(self.document.clone())));
        *response.status_mut() = StatusCode::OK;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
        Some(response)
    }
}
