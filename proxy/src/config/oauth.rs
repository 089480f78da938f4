//! `[ingress.oauth]`: keyward as an OAuth 2.1 resource server (RFC 9728 metadata, bearer
//! tokens from the configured issuers, validated locally against their published keys).

use std::path::PathBuf;
use std::time::Duration;

use http::HeaderValue;
use serde::{Deserialize, Deserializer};

use super::{duration, invalid, url, ConfigError, ScopeGrant};
use crate::auth::token::Alg;

/// `[ingress.oauth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// The protected resource's identifier (RFC 8707), the public URL of the MCP endpoint;
    /// the default audience.
    #[serde(deserialize_with = "resource")]
    pub resource: url::CheckedUrl,
    /// Scopes advertised in the metadata and in the 401 challenge.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// A human-readable name for the metadata document.
    pub resource_name: Option<String>,
    /// A documentation URL for the metadata document.
    #[serde(default, deserialize_with = "documentation")]
    pub resource_documentation: Option<url::CheckedUrl>,
    /// How often each issuer's keys are fetched again.
    #[serde(default = "defaults::jwks_refresh_interval", with = "duration")]
    pub jwks_refresh_interval: Duration,
    /// At most one fetch per this, when a token names a key id not in the set.
    #[serde(default = "defaults::unknown_kid_interval", with = "duration")]
    pub unknown_kid_interval: Duration,
    /// Longest bearer token read, in bytes (longer ones are refused unread).
    #[serde(default = "defaults::max_token_bytes")]
    pub max_token_bytes: usize,
    /// The authorization servers whose tokens are accepted.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// What a token's scopes or roles grant beyond its client's grants.
    #[serde(default)]
    pub scope_grants: Vec<ScopeGrant>,
}

/// `[[ingress.oauth.issuers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` of its tokens, e.g. `https://login.microsoftonline.com/<tenant>/v2.0`.
    #[serde(deserialize_with = "issuer")]
    pub issuer: url::CheckedUrl,
    /// Its JWK Set; from `{issuer}/.well-known/openid-configuration` when absent.
    #[serde(default, deserialize_with = "jwks_uri")]
    pub jwks_uri: Option<url::CheckedUrl>,
    /// Accepted `aud` values; `[ingress.oauth.resource]` when empty.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// A PEM CA file trusted besides the public roots (a private or test issuer).
    pub ca_file: Option<PathBuf>,
    /// Leeway for `exp`, `nbf` and `iat`.
    #[serde(default = "defaults::clock_skew", with = "duration")]
    pub clock_skew: Duration,
    /// Scopes (`scp`, delegated tokens) or app roles (`roles`, app tokens) every token must
    /// carry.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Signature algorithms accepted; RS256, PS256 and ES256 when absent.
    #[serde(default = "defaults::algorithms", deserialize_with = "algorithms")]
    pub algorithms: Vec<Alg>,
}

impl OAuthConfig {
    /// The RFC 9728 metadata URL for the resource: its origin, the well-known path, then the
    /// resource's own path.
    pub fn metadata_url(&self) -> String {
        let resource = &self.resource;
        let path = resource.path().trim_end_matches('/');
        format!(
            "{}://{}/.well-known/oauth-protected-resource{path}",
            resource.scheme(),
            resource.authority()
        )
    }

    /// Checks what serde could not.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.issuers.is_empty() {
            return Err(invalid(
                "ingress.oauth.issuers",
                "at least one issuer is required for bearer tokens",
            ));
        }
        for (i, scope) in self.scopes.iter().enumerate() {
            check_scope(&format!("ingress.oauth.scopes[{i}]"), scope)?;
        }
        for (i, grant) in self.scope_grants.iter().enumerate() {
            check_scope(&format!("ingress.oauth.scope_grants[{i}].scope"), &grant.scope)?;
        }
        if let Some(name) = &self.resource_name {
            if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
                return Err(invalid(
                    "ingress.oauth.resource_name",
                    "must be 1-200 printable characters",
                ));
            }
        }
        if !(256..=65_536).contains(&self.max_token_bytes) {
            return Err(invalid("ingress.oauth.max_token_bytes", "must be 256 to 65536"));
        }
        for (key, value) in [
            ("ingress.oauth.jwks_refresh_interval", self.jwks_refresh_interval),
            ("ingress.oauth.unknown_kid_interval", self.unknown_kid_interval),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be longer than zero"));
            }
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            let key = |name: &str| format!("ingress.oauth.issuers[{i}].{name}");
            if self.issuers[..i].iter().any(|other| other.issuer.as_str() == issuer.issuer.as_str())
            {
                return Err(invalid(key("issuer"), "is listed twice"));
            }
            for (j, audience) in issuer.audiences.iter().enumerate() {
                if audience.is_empty() || audience.chars().any(|c| c.is_control() || c == ' ') {
                    return Err(invalid(
                        format!("{}[{j}]", key("audiences")),
                        "must be a non-empty string without spaces",
                    ));
                }
            }
            for (j, scope) in issuer.required_scopes.iter().enumerate() {
                check_scope(&format!("{}[{j}]", key("required_scopes")), scope)?;
            }
            if issuer.algorithms.is_empty() {
                return Err(invalid(key("algorithms"), "at least one algorithm is required"));
            }
        }
        // The challenge carries the metadata URL and the scopes: it must be a header value.
        HeaderValue::try_from(format!("{} {}", self.metadata_url(), self.scopes.join(" ")))
            .map_err(|_| invalid("ingress.oauth.resource", "cannot be carried in a header"))?;
        Ok(())
    }
}

impl IssuerConfig {
    /// The audiences accepted: the configured ones, or the resource.
    pub fn audiences_or<'a>(&'a self, resource: &'a str) -> Vec<String> {
        if self.audiences.is_empty() {
            vec![resource.to_owned()]
        } else {
            self.audiences.clone()
        }
    }

    /// Where the OpenID configuration is, when `jwks_uri` is not given.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer.as_str().trim_end_matches('/'))
    }
}

/// A scope token (RFC 6749 §3.3): printable ASCII without space, `"` or `\`.
fn check_scope(key: &str, scope: &str) -> Result<(), ConfigError> {
    let ok = !scope.is_empty()
        && scope.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\');
    if ok {
        Ok(())
    } else {
        Err(invalid(key, "must be a scope token: printable ASCII, no spaces or quotes"))
    }
}

fn resource<'de, D: Deserializer<'de>>(d: D) -> Result<url::CheckedUrl, D::Error> {
    url::deserialize(d, &url::RESOURCE)
}

fn issuer<'de, D: Deserializer<'de>>(d: D) -> Result<url::CheckedUrl, D::Error> {
    url::deserialize(d, &url::ISSUER)
}

fn jwks_uri<'de, D: Deserializer<'de>>(d: D) -> Result<Option<url::CheckedUrl>, D::Error> {
    url::deserialize(d, &url::ISSUER).map(Some)
}

fn documentation<'de, D: Deserializer<'de>>(d: D) -> Result<Option<url::CheckedUrl>, D::Error> {
    url::deserialize(d, &url::METADATA).map(Some)
}

fn algorithms<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Alg>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|name| {
            Alg::from_name(name).ok_or_else(|| {
                serde::de::Error::custom(
                    "expected RS256, RS384, RS512, PS256, PS384, PS512, ES256 or ES384",
                )
            })
        })
        .collect()
}

mod defaults {
    use super::*;

    pub(super) fn jwks_refresh_interval() -> Duration {
        Duration::from_secs(3600)
    }
    pub(super) fn unknown_kid_interval() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn max_token_bytes() -> usize {
        8192
    }
    pub(super) fn clock_skew() -> Duration {
        Duration::from_secs(60)
    }
    pub(super) fn algorithms() -> Vec<Alg> {
        Alg::DEFAULT.to_vec()
    }
}
