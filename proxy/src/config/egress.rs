//! `[egress]`: the allow-list of upstreams the backend may reach through keyward, and the
//! credential each one gets. Anything not listed here is never forwarded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer};

use super::url::CheckedUrl;
use super::{check_secret_name, duration, invalid, ConfigError};

/// `[egress]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Where the backend connects; loopback only unless the option below says otherwise.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Lets the egress listener bind beyond loopback, where any neighbour could borrow the
    /// injected credentials. Off by default; keyward warns at every start when it is on.
    #[serde(default)]
    pub unsafe_listen_beyond_loopback: bool,
    /// PEM CA certificates trusted in addition to the public roots (private upstreams).
    pub extra_ca: Option<PathBuf>,
    /// Largest request header section from the backend (431 above); `ingress.max_header_bytes`
    /// when absent.
    pub max_header_bytes: Option<usize>,
    /// Largest request body from the backend (413 above); `ingress.max_body_bytes` when absent.
    pub max_body_bytes: Option<u64>,
    /// Open backend connections at most; `ingress.max_connections` when absent.
    pub max_connections: Option<usize>,
    /// The allow-listed routes.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// What a known secret in an upstream's answer (or the backend's request) meets.
    #[serde(default)]
    pub safety_net: crate::safety::Mode,
}

/// `[[egress.routes]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix on the egress listener, `/name/`.
    pub prefix: String,
    /// Upstream base URL ending in `/`; https, or http for a loopback host only.
    #[serde(deserialize_with = "upstream")]
    pub upstream: CheckedUrl,
    /// The credential header to inject.
    #[serde(default = "default_header", deserialize_with = "header_name")]
    pub header: HeaderName,
    /// Name of the secret holding the credential.
    pub secret: String,
    /// Time to the upstream's response headers (504 after).
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Extra static, non-secret headers, by name as written (for errors) and as parsed.
    #[serde(default)]
    pub headers: BTreeMap<String, StaticValue>,
}

/// A static header value (`egress.routes[].headers`), checked once.
#[derive(Debug, Clone)]
pub struct StaticValue(pub HeaderValue);

impl<'de> Deserialize<'de> for StaticValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HeaderValue::from_str(&text)
            .map(StaticValue)
            .map_err(|_| serde::de::Error::custom("not a valid header value"))
    }
}

fn upstream<'de, D: Deserializer<'de>>(d: D) -> Result<CheckedUrl, D::Error> {
    super::url::deserialize(d, &super::url::UPSTREAM)
}

fn header_name<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderName, D::Error> {
    let text = String::deserialize(d)?;
    HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| serde::de::Error::custom("not a valid header name"))
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8090))
}

fn default_header() -> HeaderName {
    crate::headers::OCP_APIM_SUBSCRIPTION_KEY
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Words in header names that carry credentials: such a header is never static config.
const CREDENTIAL_HINTS: [&str; 6] = ["key", "token", "secret", "auth", "password", "cookie"];

impl EgressConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.ip().is_loopback() && !self.unsafe_listen_beyond_loopback {
            return Err(invalid(
                "egress.listen",
                "must be a loopback address (127.0.0.0/8 or ::1): anything that reaches it \
                 borrows the injected credentials; set unsafe_listen_beyond_loopback = true \
                 only if a network policy confines it",
            ));
        }
        for (key, value) in [
            ("egress.max_header_bytes", self.max_header_bytes.map(|n| n as u64)),
            ("egress.max_body_bytes", self.max_body_bytes),
            ("egress.max_connections", self.max_connections.map(|n| n as u64)),
        ] {
            if value == Some(0) {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        if self.routes.is_empty() {
            return Err(invalid("egress.routes", "at least one route is required"));
        }
        let mut prefixes = std::collections::HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let key = |field: &str| format!("egress.routes[{i}].{field}");
            let prefix_ok = route.prefix.len() >= 3
                && route.prefix.starts_with('/')
                && route.prefix.ends_with('/')
                && route.prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
                && !route.prefix.split('/').any(|s| s == "." || s == "..");
            if !prefix_ok {
                return Err(invalid(
                    key("prefix"),
                    "must look like /name/ (letters, digits, - _ .)",
                ));
            }
            if !prefixes.insert(route.prefix.as_str()) {
                return Err(invalid(key("prefix"), "another route has the same prefix"));
            }
            let header = &route.header;
            if matches!(
                header.as_str(),
                "host" | "connection" | "content-length" | "transfer-encoding" | "te" | "upgrade"
            ) {
                return Err(invalid(key("header"), "cannot carry a credential"));
            }
            check_secret_name(&key("secret"), &route.secret)?;
            if route.timeout.is_zero() {
                return Err(invalid(key("timeout"), "must be longer than zero"));
            }
            for name in route.headers.keys() {
                let field = key(&format!("headers.{name}"));
                let parsed = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| invalid(field.clone(), "not a valid header name"))?;
                if CREDENTIAL_HINTS.iter().any(|hint| parsed.as_str().contains(hint))
                    || parsed == header
                {
                    return Err(invalid(
                        field,
                        "looks like a credential; credentials come from the secret store, never the config",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl RouteConfig {
    /// The static headers, parsed (their names were checked by [`EgressConfig::validate`]).
    pub fn static_headers(&self) -> http::HeaderMap {
        self.headers
            .iter()
            .filter_map(|(name, value)| {
                Some((HeaderName::from_bytes(name.as_bytes()).ok()?, value.0.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn with_egress(egress: &str) -> Result<Config, String> {
        let text = format!(
            "[ingress]\n[[ingress.clients]]\nid = \"c\"\nsecret = \"client\"\n{egress}\n\
             [secrets]\nsource = \"file\"\ndir = \"/s\"\n"
        );
        Config::parse(&text).map_err(|e| e.to_string())
    }

    const ROUTE: &str = "[[egress.routes]]\nprefix = \"/health/\"\n\
                         upstream = \"https://apim.example.net/b/\"\nsecret = \"apim\"\n";

    #[test]
    fn a_valid_route_is_referenced_for_readiness() {
        let config = with_egress(&format!("[egress]\n{ROUTE}")).unwrap();
        assert_eq!(config.referenced_secrets(), ["apim", "client"]);
        let egress = config.egress.unwrap();
        assert_eq!(egress.listen, default_listen());
        assert_eq!(egress.routes[0].header, "Ocp-Apim-Subscription-Key");
    }

    #[test]
    fn egress_stays_on_loopback_unless_loudly_allowed() {
        let err =
            with_egress(&format!("[egress]\nlisten = \"0.0.0.0:8090\"\n{ROUTE}")).unwrap_err();
        assert!(err.starts_with("egress.listen: must be a loopback address"), "{err}");
        let allowed = "[egress]\nlisten = \"0.0.0.0:8090\"\nunsafe_listen_beyond_loopback = true\n";
        assert!(with_egress(&format!("{allowed}{ROUTE}")).is_ok());
        assert!(with_egress(&format!("[egress]\nlisten = \"[::1]:8090\"\n{ROUTE}")).is_ok());
    }

    #[test]
    fn routes_are_checked_key_by_key() {
        let cases = [
            ("prefix = \"/health/\"", "prefix = \"health\"", "egress.routes[0].prefix:"),
            ("prefix = \"/health/\"", "prefix = \"/../\"", "egress.routes[0].prefix:"),
            (
                "https://apim.example.net/b/",
                "http://apim.example.net/b/",
                "egress.routes[0].upstream:",
            ),
            (
                "secret = \"apim\"",
                "secret = \"client\"",
                "egress.routes[0].secret: is also a client key",
            ),
            (
                "secret = \"apim\"",
                "secret = \"apim\"\nheader = \"Host\"",
                "egress.routes[0].header:",
            ),
            (
                "secret = \"apim\"",
                "secret = \"apim\"\ntimeout = \"0s\"",
                "egress.routes[0].timeout:",
            ),
            (
                "secret = \"apim\"",
                "secret = \"apim\"\nheaders = { \"X-Api-Token\" = \"sk-live-1\" }",
                "egress.routes[0].headers.X-Api-Token: looks like a credential",
            ),
        ];
        for (from, to, expected) in cases {
            let err = with_egress(&format!("[egress]\n{}", ROUTE.replace(from, to))).unwrap_err();
            assert!(err.starts_with(expected), "{to}: {err}");
            assert!(!err.contains("sk-live-1"), "{err}");
        }
        let twice = format!("[egress]\n{ROUTE}{ROUTE}");
        assert!(with_egress(&twice).unwrap_err().starts_with("egress.routes[1].prefix:"));
        assert!(with_egress("[egress]\n").unwrap_err().starts_with("egress.routes:"));
    }
}
