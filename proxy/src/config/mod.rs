//! The TOML configuration: names and places, never secret values.
//!
//! Parsing is strict (unknown keys are errors) and every error names the key and the problem
//! without echoing the value that was found there: a secret pasted into the wrong key must not
//! reach a terminal or a log through an error message.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::Uri;
use serde::Deserialize;

mod egress;
mod grants;
mod ingress;
mod oauth;
mod secrets;
mod telemetry;
pub mod url;

pub use egress::{EgressConfig, RouteConfig, StaticValue};
pub use grants::{Glob, Grants, Kind, ScopeGrant};
pub use ingress::{ClientConfig, IngressConfig, Origin, ResourceMetadata, TlsConfig};
pub use oauth::{IssuerConfig, OAuthConfig};
pub use secrets::{CredentialKind, KeyVaultConfig, SecretSource, SecretsConfig};
pub use telemetry::{LogFormat, OtlpProtocol, TelemetryConfig};

/// The reference configuration shown by `keyward --help` and checked by a test.
pub const REFERENCE: &str = include_str!("../../keyward.example.toml");

/// A problem with the configuration, naming the key it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A key is missing, unknown, malformed or inconsistent with another.
    #[error("{key}: {problem}")]
    Invalid {
        /// Dotted path of the key, e.g. `ingress.clients[1].id`.
        key: String,
        /// What is wrong, without the offending value.
        problem: String,
    },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), problem: problem.into() }
}

/// The whole configuration as written; [`Config`] is what it is checked into.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    ingress: IngressConfig,
    egress: Option<EgressConfig>,
    #[serde(default)]
    admin: AdminConfig,
    secrets: secrets::RawSecrets,
    #[serde(default)]
    telemetry: TelemetryConfig,
}

/// The whole configuration, checked.
#[derive(Debug)]
pub struct Config {
    /// The client-facing listener.
    pub ingress: IngressConfig,
    /// The loopback listener through which the backend reaches allow-listed upstreams.
    pub egress: Option<EgressConfig>,
    /// Health, readiness and metrics.
    pub admin: AdminConfig,
    /// Where secret values come from.
    pub secrets: SecretsConfig,
    /// Logs.
    pub telemetry: TelemetryConfig,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `/livez`, `/readyz`, `/metrics`, and `POST /refresh` from loopback.
    #[serde(default = "defaults::admin_listen")]
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: defaults::admin_listen() }
    }
}

mod defaults {
    use super::*;

    pub(super) fn admin_listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 9090))
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let key = err.path().to_string();
            let inner = err.into_inner();
            let mut problem = scrub_values(inner.message());
            if let Some(span) = inner.span() {
                let (line, column) = line_column(text, span.start);
                problem = format!("{problem} (line {line}, column {column})");
            }
            let key = if key == "." { "config".to_owned() } else { key };
            invalid(key, problem)
        })?;
        let config = Config {
            ingress: raw.ingress,
            egress: raw.egress,
            admin: raw.admin,
            secrets: SecretsConfig::try_from(raw.secrets)?,
            telemetry: raw.telemetry,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let secrets = self.ingress.validate()?;
        self.telemetry.validate()?;
        if let Some(egress) = &self.egress {
            egress.validate()?;
            for (i, route) in egress.routes.iter().enumerate() {
                if secrets.contains(route.secret.as_str()) {
                    return Err(invalid(
                        format!("egress.routes[{i}].secret"),
                        "is also a client key; an upstream credential must be its own secret",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every secret name the configuration refers to; readiness waits for all of them.
    pub fn referenced_secrets(&self) -> Vec<String> {
        let clients = self.ingress.clients.iter().filter_map(|c| c.secret.clone());
        let clients = clients.chain(self.ingress.session_secret.clone());
        let routes = self.egress.iter().flat_map(|e| e.routes.iter().map(|r| r.secret.clone()));
        let mut names: Vec<String> = clients.chain(routes).collect();
        names.sort();
        names.dedup();
        names
    }

    /// The backend's URI.
    pub fn backend_uri(&self) -> &Uri {
        self.ingress.backend.uri()
    }
}

/// Secret names follow Key Vault's rules (1-127 of `0-9a-zA-Z-`), which also makes them safe
/// file names: no separators, no `..`.
fn check_secret_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = (1..=127).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(key, "a secret name is 1-127 characters of 0-9 a-z A-Z -"))
    }
}

/// Replaces every double-quoted value in a parser message, and the value of an unknown enum
/// variant, so that a value typed into the wrong key is never echoed. Key names and the
/// expected variants (in backticks) are kept.
fn scrub_values(message: &str) -> String {
    // serde's own shapes, whose value may itself hold a quote or a backtick: cut to the last
    // delimiter before the part serde wrote.
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        return match rest.rfind("`, expected") {
            Some(end) => format!("unknown variant `…`{}", &rest[end + 1..]),
            None => "unknown variant `…`".to_owned(),
        };
    }
    for prefix in ["invalid type: string \"", "invalid value: string \""] {
        if let Some(rest) = message.strip_prefix(prefix) {
            return match rest.rfind("\", expected") {
                Some(end) => format!("{prefix}…{}", &rest[end..]),
                None => format!("{prefix}…\""),
            };
        }
    }
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    out.push_str(parts.next().unwrap_or_default());
    for (i, part) in parts.enumerate() {
        out.push('"');
        out.push_str(if i % 2 == 0 { "…" } else { part });
    }
    out
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Durations written as `250ms`, `30s`, `5m`, `24h` or `7d`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Parses one duration.
    pub fn parse(text: &str) -> Option<Duration> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit())?;
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().ok()?;
        let millis = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        number.checked_mul(millis).map(Duration::from_millis)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            serde::de::Error::custom(
                "expected a duration such as \"250ms\", \"30s\", \"5m\", \"24h\"",
            )
        })
    }

    /// An optional duration.
    pub(super) mod option {
        use super::*;

        pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MINIMAL: &str = r#"
        [ingress]
        [[ingress.clients]]
        id = "claude"
        secret = "mcp-client-claude"
        [secrets]
        source = "file"
        dir = "/tmp/secrets"
    "#;

    fn error_of(text: &str) -> String {
        Config::parse(text).expect_err("must be refused").to_string()
    }

    #[test]
    fn the_reference_example_is_valid() {
        let config = Config::parse(REFERENCE).expect("reference parses");
        assert!(!config.ingress.clients.is_empty());
    }

    #[test]
    fn defaults_fill_a_minimal_file() {
        let config = Config::parse(MINIMAL).unwrap();
        assert_eq!(config.ingress.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(config.admin.listen, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(config.secrets.refresh_interval, Duration::from_secs(60));
        assert_eq!(config.referenced_secrets(), vec!["mcp-client-claude".to_owned()]);
        assert_eq!(config.backend_uri().port_u16(), Some(8081));
    }

    #[test]
    fn unknown_keys_are_named() {
        let text = MINIMAL.replace("[secrets]", "[secrets]\napi_key = \"sk-live-123\"");
        let err = error_of(&text);
        assert!(err.starts_with("secrets.api_key: unknown field `api_key`"), "{err}");
        assert!(!err.contains("sk-live-123"), "{err}");
    }

    #[test]
    fn a_wrongly_typed_value_is_not_echoed() {
        let text = MINIMAL.replace("[secrets]", "[secrets]\nrefresh_interval = \"sk-live-123\"");
        let err = error_of(&text);
        assert!(err.starts_with("secrets.refresh_interval:"), "{err}");
        assert!(!err.contains("sk-live-123"), "{err}");
        let err = error_of(&MINIMAL.replace("[ingress]", "[ingress]\nlisten = \"sk-live-123\""));
        assert!(err.starts_with("ingress.listen:"), "{err}");
        assert!(!err.contains("sk-live-123"), "{err}");
    }

    #[test]
    fn a_client_with_neither_a_secret_nor_token_ids_is_refused() {
        let err = error_of(&MINIMAL.replace("secret = \"mcp-client-claude\"", ""));
        assert!(err.starts_with("ingress.clients[0]: needs a secret, token_ids, or both"), "{err}");
    }

    const OAUTH: &str = "[ingress.oauth]\nresource = \"https://mcp.example.com/mcp\"\n\
        [[ingress.oauth.issuers]]\nissuer = \"https://login.microsoftonline.com/t/v2.0\"\n";

    fn with_oauth(client: &str, oauth: &str) -> String {
        MINIMAL
            .replace("secret = \"mcp-client-claude\"", client)
            .replace("[secrets]", &format!("{oauth}[secrets]"))
    }

    #[test]
    fn token_clients_need_oauth_and_oauth_needs_token_clients() {
        let config = Config::parse(&with_oauth("token_ids = [\"app-1\"]", OAUTH)).unwrap();
        let oauth = config.ingress.oauth.as_ref().unwrap();
        assert_eq!(
            oauth.metadata_url(),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            oauth.issuers[0].audiences_or(oauth.resource.as_str()),
            ["https://mcp.example.com/mcp"]
        );
        assert!(config.referenced_secrets().is_empty());
        let err = error_of(&with_oauth("token_ids = [\"app-1\"]", ""));
        assert!(err.starts_with("ingress.clients[0].token_ids[0]: needs [ingress.oauth]"), "{err}");
        let err = error_of(&with_oauth("secret = \"k\"", OAUTH));
        assert!(err.starts_with("ingress.oauth: no client has token_ids"), "{err}");
        let twice =
            "token_ids = [\"app-1\"]\n[[ingress.clients]]\nid = \"b\"\ntoken_ids = [\"app-1\"]";
        let err = error_of(&with_oauth(twice, OAUTH));
        assert!(err.starts_with("ingress.clients[1].token_ids[0]: is also a token id"), "{err}");
    }

    #[test]
    fn oauth_values_are_checked_without_echoing_them() {
        for (from, to, key) in [
            (
                "https://mcp.example.com/mcp",
                "http://mcp.example.com/mcp",
                "ingress.oauth.resource:",
            ),
            (
                "https://login.microsoftonline.com/t/v2.0",
                "sk-live-0000",
                "ingress.oauth.issuers[0].issuer:",
            ),
            (
                "[[ingress.oauth.issuers]]",
                "scopes = [\"a b\"]\n[[ingress.oauth.issuers]]",
                "ingress.oauth.scopes[0]:",
            ),
            (
                "[[ingress.oauth.issuers]]",
                "max_token_bytes = 10\n[[ingress.oauth.issuers]]",
                "ingress.oauth.max_token_bytes:",
            ),
            (
                "v2.0\"\n",
                "v2.0\"\nalgorithms = [\"HS256\"]\n",
                "ingress.oauth.issuers[0].algorithms:",
            ),
        ] {
            let err = error_of(&with_oauth("token_ids = [\"app-1\"]", &OAUTH.replace(from, to)));
            assert!(err.starts_with(key), "{to}: {err}");
            assert!(!err.contains("sk-live"), "{err}");
        }
    }

    #[test]
    fn duplicate_client_ids_are_refused() {
        let text = MINIMAL.replace(
            "[secrets]",
            "[[ingress.clients]]\nid = \"claude\"\nsecret = \"other\"\n[secrets]",
        );
        assert_eq!(
            error_of(&text),
            "ingress.clients[1].id: the same id as ingress.clients[0].id; each client needs its own"
        );
    }

    #[test]
    fn a_shared_secret_is_refused() {
        let text = MINIMAL.replace(
            "[secrets]",
            "[[ingress.clients]]\nid = \"other\"\nsecret = \"mcp-client-claude\"\n[secrets]",
        );
        assert!(error_of(&text).starts_with("ingress.clients[1].secret:"));
    }

    #[test]
    fn no_clients_fails_closed() {
        let text = "[ingress]\n[secrets]\nsource = \"file\"\ndir = \"/x\"\n";
        assert!(error_of(text).starts_with("ingress.clients: at least one client"));
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("[ingress]", "[ingress]\nbackend = \"https://example.com/mcp\"", "ingress.backend:"),
            (
                "[ingress]",
                "[ingress]\nallowed_origins = [\"not an origin\"]",
                "ingress.allowed_origins[0]:",
            ),
            ("[ingress]", "[ingress]\nmax_body_bytes = 0", "ingress.max_body_bytes:"),
            ("[ingress]", "[ingress]\nworkers = 0", "ingress.workers:"),
            (
                "[ingress]",
                "[ingress]\nresource_metadata = \"https://x\\n\"",
                "ingress.resource_metadata:",
            ),
            (
                "[ingress]",
                "[ingress]\nresource_metadata = \"https://\"",
                "ingress.resource_metadata:",
            ),
            ("[ingress]", "[ingress]\nidle_timeout = \"0s\"", "ingress.idle_timeout:"),
            (
                "[ingress]",
                "[ingress]\nunauthenticated_timeout = \"0s\"",
                "ingress.unauthenticated_timeout:",
            ),
            ("[ingress]", "[ingress]\nworkers = 4096", "ingress.workers:"),
            ("id = \"claude\"", "id = \"bad id\"", "ingress.clients[0].id:"),
            (
                "secret = \"mcp-client-claude\"",
                "secret = \"../etc/passwd\"",
                "ingress.clients[0].secret:",
            ),
            ("dir = \"/tmp/secrets\"", "", "secrets.dir:"),
            ("source = \"file\"", "source = \"vault\"", "secrets.source:"),
            ("source = \"file\"", "source = \"keyvault\"", "secrets.vault_url: required"),
            (
                "source = \"file\"",
                "source = \"keyvault\"\nvault_url = \"http://kv.example/\"",
                "secrets.vault_url: must be https",
            ),
            (
                "source = \"file\"",
                "source = \"keyvault\"\nvault_url = \"https://kv.example/\"\nclient_id = \"x\"",
                "secrets.client_id:",
            ),
            (
                "[ingress]",
                "[ingress]\nheader_read_timeout = \"10 parsecs\"",
                "ingress.header_read_timeout:",
            ),
        ];
        for (from, to, key) in cases {
            let err = error_of(&MINIMAL.replace(from, to));
            assert!(err.starts_with(key), "{to}: {err}");
        }
    }

    #[test]
    fn trusted_proxies_take_cidrs_and_addresses() {
        let text = MINIMAL.replace(
            "[ingress]",
            "[ingress]\ntrusted_proxies = [\"10.1.2.3/8\", \"fd00::/8\", \"100.64.0.1\"]",
        );
        let nets: Vec<String> = Config::parse(&text)
            .unwrap()
            .ingress
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "fd00::/8", "100.64.0.1/32"]);
        let err = error_of(
            &MINIMAL.replace("[ingress]", "[ingress]\ntrusted_proxies = [\"sk-live-1/8\"]"),
        );
        assert!(err.starts_with("ingress.trusted_proxies:"), "{err}");
        assert!(!err.contains("sk-live-1"), "{err}");
    }

    #[test]
    fn syntax_errors_give_a_position_without_the_line() {
        let err = error_of("[ingress\nsecret = \"sk-live-123\"");
        assert!(err.contains("line 1"), "{err}");
        assert!(!err.contains("sk-live-123"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(duration::parse("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(duration::parse("30s"), Some(Duration::from_secs(30)));
        assert_eq!(duration::parse("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(duration::parse("2d"), Some(Duration::from_secs(172_800)));
        for bad in ["", "s", "10", "1.5s", "-1s", "10 s", "99999999999999999999d"] {
            assert_eq!(duration::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn scrubbing_keeps_keys_and_drops_values() {
        assert_eq!(
            scrub_values("invalid type: string \"hunter2\", expected u64"),
            "invalid type: string \"…\", expected u64"
        );
        assert_eq!(scrub_values("unknown field `x`"), "unknown field `x`");
        // Values that hold the delimiters themselves.
        assert_eq!(
            scrub_values("invalid type: string \"x\"sk-live-1\"\", expected usize"),
            "invalid type: string \"…\", expected usize"
        );
        assert_eq!(
            scrub_values("unknown variant `a`sk-live-1`, expected `file` or `keyvault`"),
            "unknown variant `…`, expected `file` or `keyvault`"
        );
        assert_eq!(
            scrub_values("unknown variant `sk-live-1`, expected `file` or `keyvault`"),
            "unknown variant `…`, expected `file` or `keyvault`"
        );
    }
}
