//! `[ingress]`: the client-facing listener, its clients, limits and timeouts.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderValue;
use serde::Deserialize;

use super::{check_secret_name, duration, invalid, url, ConfigError, Glob, Grants, OAuthConfig};

/// `[ingress]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressConfig {
    /// Address the MCP clients connect to.
    #[serde(default = "defaults::ingress_listen")]
    pub listen: SocketAddr,
    /// The MCP server in the same pod, `http://host:port`.
    #[serde(default = "defaults::backend", deserialize_with = "typed::backend")]
    pub backend: url::CheckedUrl,
    /// Browser origins allowed to call; any other `Origin` gets 403.
    #[serde(default)]
    pub allowed_origins: Vec<Origin>,
    /// Named clients and the secret holding each one's key.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// TLS termination; plain HTTP (and h2c) when absent.
    pub tls: Option<TlsConfig>,
    /// What a known secret in a response to a client meets.
    #[serde(default)]
    pub safety_net: crate::safety::Mode,
    /// Bearer tokens: keyward as an OAuth resource server.
    pub oauth: Option<OAuthConfig>,
    /// The secret holding the key that binds MCP sessions to their client (shared by every
    /// replica); a random key per process when absent.
    pub session_secret: Option<String>,
    /// RFC 9728 metadata URL hosted elsewhere; when set, 401s say
    /// `Bearer resource_metadata=...` with it (overriding the one `oauth` serves).
    #[serde(default, deserialize_with = "typed::metadata")]
    pub resource_metadata: Option<ResourceMetadata>,
    /// Open connections at most; further clients wait in the accept backlog.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Time a client has to send its request headers; the first request's counts from accept.
    #[serde(default = "defaults::header_read_timeout", with = "duration")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed (h2: GOAWAY) after this long.
    #[serde(default = "defaults::idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
    /// A connection that has presented no authenticated request is closed after this long;
    /// `header_read_timeout` when absent.
    #[serde(default, with = "duration::option")]
    pub unauthenticated_timeout: Option<Duration>,
    /// Largest request header section, in bytes (431 above).
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// Largest request body, in bytes (413 above).
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: u64,
    /// Time the backend has to answer with response headers (504 after).
    #[serde(default = "defaults::backend_timeout", with = "duration")]
    pub backend_timeout: Duration,
    /// Failed authentications a peer address may make per minute before getting 429.
    #[serde(default = "defaults::auth_failures_per_minute")]
    pub auth_failures_per_minute: u32,
    /// Failed authentications a peer may make in a burst.
    #[serde(default = "defaults::auth_failure_burst")]
    pub auth_failure_burst: u32,
    /// How long in-flight requests may run on after SIGTERM.
    #[serde(default = "defaults::shutdown_grace", with = "duration")]
    pub shutdown_grace: Duration,
    /// Threads serving ingress and egress, each with its own listening socket and backend
    /// pools; one per CPU when absent.
    pub workers: Option<usize>,
    /// Front proxies (CIDRs or addresses) whose `X-Forwarded-For` / `Forwarded` is believed.
    #[serde(default, deserialize_with = "networks")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl IngressConfig {
    /// `unauthenticated_timeout`, or `header_read_timeout` when it is not set.
    pub fn unauthenticated_timeout(&self) -> Duration {
        self.unauthenticated_timeout.unwrap_or(self.header_read_timeout)
    }

    /// The number of worker threads: `workers`, or one per CPU the process may use.
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

/// A browser origin allowed to call (`ingress.allowed_origins[]`), as `Origin` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(pub HeaderValue);

/// `ingress.resource_metadata`, and the `WWW-Authenticate` challenge that names it.
#[derive(Debug, Clone)]
pub struct ResourceMetadata {
    /// The metadata URL.
    pub url: url::CheckedUrl,
    /// `Bearer resource_metadata="<url>"`.
    pub challenge: HeaderValue,
}

/// Deserializers that turn text into the types the rest of keyward uses, once.
mod typed {
    use super::*;
    use serde::Deserializer;

    pub(super) fn backend<'de, D: Deserializer<'de>>(d: D) -> Result<url::CheckedUrl, D::Error> {
        url::deserialize(d, &url::BACKEND)
    }

    /// An origin as the `Origin` header carries it (no trailing `/`).
    impl<'de> Deserialize<'de> for Origin {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let url = url::deserialize(d, &url::ORIGIN)?;
            let origin = format!("{}://{}", url.scheme(), url.authority());
            HeaderValue::from_str(&origin)
                .map(Origin)
                .map_err(|_| serde::de::Error::custom(url::ORIGIN.shape))
        }
    }

    pub(super) fn metadata<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<ResourceMetadata>, D::Error> {
        let url = url::deserialize(d, &url::METADATA)?;
        // It goes into a WWW-Authenticate header: what cannot be one is refused here.
        let challenge =
            HeaderValue::try_from(format!("Bearer resource_metadata=\"{}\"", url.as_str()))
                .map_err(|_| serde::de::Error::custom(url::METADATA.shape))?;
        Ok(Some(ResourceMetadata { url, challenge }))
    }
}

/// `[[ingress.clients]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Sent to the backend as `X-Keyward-Client`.
    pub id: String,
    /// Name of the secret holding this client's key (a plain key, or `sha256:<hex>` of one).
    pub secret: Option<String>,
    /// The agent ids (a token's `azp`, `appid`, `client_id` or `sub`) that are this client.
    #[serde(default)]
    pub token_ids: Vec<String>,
    /// Tools this client may list and call (names, `*` globs); every tool when absent.
    pub tools: Option<Vec<Glob>>,
    /// Resources (URIs, `*` globs) this client may list and read; every one when absent.
    pub resources: Option<Vec<Glob>>,
    /// Prompts this client may list and get; every prompt when absent.
    pub prompts: Option<Vec<Glob>>,
}

impl ClientConfig {
    /// A client with a key and no other setting.
    pub fn with_key(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: Some(secret.into()),
            token_ids: Vec::new(),
            tools: None,
            resources: None,
            prompts: None,
        }
    }

    /// What it may reach.
    pub fn grants(&self) -> Grants {
        Grants {
            tools: self.tools.clone(),
            resources: self.resources.clone(),
            prompts: self.prompts.clone(),
        }
    }
}

/// `[ingress.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, re-read when it changes.
    pub cert: PathBuf,
    /// PEM private key, re-read when it changes.
    pub key: PathBuf,
    /// Time a client has to complete the TLS handshake.
    #[serde(default = "defaults::handshake_timeout", with = "duration")]
    pub handshake_timeout: Duration,
    /// How often the certificate and key files are checked for a renewal;
    /// `secrets.watch_interval` when absent.
    #[serde(default, with = "duration::option")]
    pub reload_interval: Option<Duration>,
}

impl IngressConfig {
    /// Checks what serde could not; returns the client secrets' names (each client's own).
    pub(super) fn validate(&self) -> Result<HashSet<&str>, ConfigError> {
        let ingress = self;
        if ingress.clients.is_empty() {
            return Err(invalid(
                "ingress.clients",
                "at least one client is required; without one keyward would refuse every request",
            ));
        }
        let mut ids = std::collections::HashMap::new();
        let mut token_ids = std::collections::HashMap::new();
        let mut secrets = HashSet::new();
        for (i, client) in ingress.clients.iter().enumerate() {
            if !is_client_id(&client.id) {
                return Err(invalid(
                    format!("ingress.clients[{i}].id"),
                    "must be 1-64 characters of A-Z a-z 0-9 . _ -",
                ));
            }
            // The other key is named, not the id: a value in the wrong key must not echo.
            if let Some(first) = ids.insert(client.id.as_str(), i) {
                return Err(invalid(
                    format!("ingress.clients[{i}].id"),
                    format!(
                        "the same id as ingress.clients[{first}].id; each client needs its own"
                    ),
                ));
            }
            if client.secret.is_none() && client.token_ids.is_empty() {
                return Err(invalid(
                    format!("ingress.clients[{i}]"),
                    "needs a secret, token_ids, or both; this client could never be authenticated",
                ));
            }
            if let Some(secret) = &client.secret {
                check_secret_name(&format!("ingress.clients[{i}].secret"), secret)?;
                if !secrets.insert(secret.as_str()) {
                    return Err(invalid(
                        format!("ingress.clients[{i}].secret"),
                        "another client already uses this secret; each client needs its own key",
                    ));
                }
            }
            for (j, token_id) in client.token_ids.iter().enumerate() {
                let key = format!("ingress.clients[{i}].token_ids[{j}]");
                if ingress.oauth.is_none() {
                    return Err(invalid(key, "needs [ingress.oauth] with at least one issuer"));
                }
                if token_id.is_empty()
                    || token_id.len() > 256
                    || token_id.chars().any(char::is_control)
                {
                    return Err(invalid(key, "must be 1-256 printable characters"));
                }
                if let Some(first) = token_ids.insert(token_id.as_str(), i) {
                    return Err(invalid(
                        key,
                        format!("is also a token id of ingress.clients[{first}]; an agent is one client"),
                    ));
                }
            }
        }
        if let Some(name) = &ingress.session_secret {
            check_secret_name("ingress.session_secret", name)?;
            if secrets.contains(name.as_str()) {
                return Err(invalid(
                    "ingress.session_secret",
                    "is also a client key; the session key must be its own secret",
                ));
            }
        }
        if let Some(oauth) = &ingress.oauth {
            oauth.validate()?;
            if token_ids.is_empty() {
                return Err(invalid(
                    "ingress.oauth",
                    "no client has token_ids; every token would be refused",
                ));
            }
        }
        for (key, value) in [
            ("ingress.max_connections", ingress.max_connections as u64),
            ("ingress.max_header_bytes", ingress.max_header_bytes as u64),
            ("ingress.max_body_bytes", ingress.max_body_bytes),
            ("ingress.auth_failures_per_minute", ingress.auth_failures_per_minute.into()),
            ("ingress.auth_failure_burst", ingress.auth_failure_burst.into()),
            ("ingress.workers", ingress.workers.unwrap_or(1) as u64),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        if ingress.workers.is_some_and(|n| n > 1024) {
            return Err(invalid("ingress.workers", "must be at most 1024"));
        }
        for (key, value) in [
            ("ingress.header_read_timeout", ingress.header_read_timeout),
            ("ingress.idle_timeout", ingress.idle_timeout),
            ("ingress.unauthenticated_timeout", ingress.unauthenticated_timeout()),
            ("ingress.backend_timeout", ingress.backend_timeout),
            (
                "ingress.tls.handshake_timeout",
                ingress.tls.as_ref().map_or(Duration::MAX, |tls| tls.handshake_timeout),
            ),
            (
                "ingress.tls.reload_interval",
                ingress.tls.as_ref().and_then(|tls| tls.reload_interval).unwrap_or(Duration::MAX),
            ),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be longer than zero"));
            }
        }
        Ok(secrets)
    }
}

mod defaults {
    use super::*;

    pub(super) fn ingress_listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 8080))
    }
    pub(super) fn backend() -> url::CheckedUrl {
        url::CheckedUrl::parse("http://127.0.0.1:8081", &url::BACKEND)
            .unwrap_or_else(|problem| unreachable!("the default backend URL: {problem}"))
    }
    pub(super) fn max_connections() -> usize {
        4096
    }
    pub(super) fn header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub(super) fn handshake_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn max_header_bytes() -> usize {
        32 * 1024
    }
    pub(super) fn max_body_bytes() -> u64 {
        4 * 1024 * 1024
    }
    pub(super) fn backend_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub(super) fn auth_failures_per_minute() -> u32 {
        30
    }
    pub(super) fn auth_failure_burst() -> u32 {
        10
    }
    pub(super) fn shutdown_grace() -> Duration {
        Duration::from_secs(20)
    }
}

/// CIDRs (`10.0.0.0/8`, `fd00::/8`) or single addresses, which count as /32 or /128.
fn networks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    texts
        .iter()
        .map(|text| {
            text.parse::<ipnet::IpNet>()
                .map(|net| net.trunc())
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(
                        "expected CIDRs such as \"10.0.0.0/8\" or addresses such as \"10.0.0.1\"",
                    )
                })
        })
        .collect()
}

fn is_client_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
