//! Black-box tests of bearer-token authentication: the real `keyward` binary as an OAuth
//! resource server in front of the test backend, validating tokens from the fake Entra ID
//! (`keyward_tests::fake_idp`: discovery and keys over HTTPS at `https://localhost:PORT`
//! with a test CA given as the issuer's `ca_file`). The tokens are signed by the keys the
//! fake publishes, exactly as Entra's are; the hostile ones are the attacks a validator
//! meets: `alg: none`, HS256 keyed with the RSA public key, a kid not in the set, another
//! key's signature, a changed payload, an oversized token, and garbage.
//!
//! Every test that sends a token ends by asserting that no token, signature or private key
//! text reached keyward's output.
//!
//! `tokens.rs`: what passes and what gets 401; `clients.rs`: who a token is (403s, scopes,
//! API keys beside tokens); `keys.rs`: the key set over time (readiness, rotation, refetch
//! limits, outages); `binary.rs`: the `fake-idp` binary. This file holds what they share.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use keyward_tests::backend::TestBackend;
use keyward_tests::client::{self, request, send, Reply};
use keyward_tests::config::Builder;
use keyward_tests::dir::TempDir;
use keyward_tests::fake_idp::{Alg, FakeIdp, HmacSecret, Kty};
use keyward_tests::leak::assert_absent;
use keyward_tests::process::{eventually, Keyward, ReadyChild};
use serde_json::{json, Value};
use toml::{Table, Value as Toml};

/// The protected resource: the MCP endpoint's public URL (RFC 8707), the default audience.
const RESOURCE: &str = "https://mcp.example.com/mcp";
/// The scope clients ask for, and the app role app-only clients are granted.
const SCOPE: &str = "mcp.tools";
/// The application (client) id of agent-a's app registration.
const APP_A: &str = "5f0e4c1a-8b2d-4e6f-9a3c-7d1b2e4f6a80";
/// An application the tenant trusts but keyward has no client for.
const APP_STRANGER: &str = "0d9c8b7a-6e5f-4d3c-2b1a-0f9e8d7c6b5a";
/// The key of the API-key client beside the OAuth ones.
const API_KEY: &str = "oauth-suite-api-key-4e3d2c1b0a99f8e7";

/// The metadata path for [`RESOURCE`] (RFC 9728: well-known path, then the resource's path).
const METADATA_PATH: &str = "/.well-known/oauth-protected-resource/mcp";

struct Setup {
    dir: TempDir,
    /// The file secret source's directory (the API keys), apart from the config and CA.
    secrets: TempDir,
    backend: TestBackend,
    idp: FakeIdp,
    ca_file: PathBuf,
}

impl Setup {
    async fn new() -> Self {
        let dir = TempDir::new("oauth");
        let idp = FakeIdp::start().await;
        let ca_file = dir.write("idp-ca.pem", &idp.ca_pem());
        let secrets = TempDir::new("oauth-secrets");
        Self { backend: TestBackend::start().await, idp, ca_file, dir, secrets }
    }

    /// `[[ingress.oauth.issuers]]` for the fake's v2.0 issuer: its CA trusted, keys by
    /// discovery, the API's application id in both of Entra's forms as audiences.
    fn issuer(&self) -> Table {
        let app = self.idp.resource_app_id();
        let mut issuer = Table::new();
        issuer.insert("issuer".into(), self.idp.issuer().into());
        issuer.insert("ca_file".into(), self.ca_file.to_str().expect("UTF-8 path").into());
        issuer.insert("audiences".into(), vec![app.clone(), format!("api://{app}")].into());
        issuer
    }

    /// OAuth with `issuer` and the agent-a client (token id [`APP_A`]); failed attempts are
    /// not rate-limited, since the suites send many on purpose.
    fn config_with(&self, issuer: Table) -> Builder {
        Builder::files(self.secrets.path())
            .backend(self.backend.addr)
            .set("ingress.auth_failures_per_minute", 100_000)
            .set("ingress.auth_failure_burst", 100_000)
            .set("ingress.oauth.resource", RESOURCE)
            .set("ingress.oauth.scopes", vec![SCOPE])
            .set("ingress.oauth.resource_name", "Biotrackr MCP")
            .push("ingress.oauth.issuers", issuer)
            .push("ingress.clients", token_client("agent-a", &[APP_A]))
    }

    fn config(&self) -> Builder {
        self.config_with(self.issuer())
    }

    /// Starts keyward with `config` and waits until it is ready.
    async fn ready(&self, config: Builder) -> Keyward {
        let keyward = Keyward::start(&config.write(&self.dir));
        assert!(keyward.wait_ready(Duration::from_secs(20)).await, "{}", keyward.output());
        keyward
    }

    /// A token of `claims` signed RS256 with the fake's current RSA key.
    fn token(&self, claims: &Value) -> String {
        self.idp.signed(Alg::Rs256, claims)
    }

    /// agent-a's delegated token, RS256.
    fn agent_token(&self) -> String {
        self.token(&self.idp.claims(APP_A))
    }
}

/// A `[[ingress.clients]]` entry known by token ids only.
fn token_client(id: &str, token_ids: &[&str]) -> Table {
    let mut client = Table::new();
    client.insert("id".into(), id.into());
    client.insert("token_ids".into(), token_ids.to_vec().into());
    client
}

fn now() -> i64 {
    let elapsed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(elapsed.as_secs()).unwrap()
}

/// A GET of the MCP path with `Authorization: Bearer <token>`.
async fn bearer(keyward: &Keyward, token: &str) -> Reply {
    let authorization = format!("Bearer {token}");
    let headers = [("authorization", authorization.as_str())];
    send(&client::http1(), request(keyward.ingress, "GET", "/mcp", &headers, "")).await
}

/// Every `WWW-Authenticate` value of `reply`, joined.
fn challenge(reply: &Reply) -> String {
    let values = reply.headers.get_all(http::header::WWW_AUTHENTICATE);
    values.iter().map(|v| v.to_str().expect("ASCII challenge")).collect::<Vec<_>>().join(", ")
}

/// The path of the challenge's `resource_metadata` URL.
fn metadata_path(challenge: &str) -> String {
    let (_, rest) = challenge
        .split_once("resource_metadata=\"")
        .unwrap_or_else(|| panic!("no resource_metadata in {challenge:?}"));
    let url: http::Uri = rest.split('"').next().unwrap().parse().expect("a URL");
    url.path().to_owned()
}

/// A 401 with the Bearer challenge naming the metadata and `error="invalid_token"`.
fn assert_invalid_token(what: &str, reply: &Reply) {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}: {}", reply.text());
    let challenge = challenge(reply);
    assert!(challenge.starts_with("Bearer "), "{what}: {challenge:?}");
    assert!(challenge.contains("resource_metadata=\""), "{what}: {challenge:?}");
    assert!(challenge.contains("error=\"invalid_token\""), "{what}: {challenge:?}");
}

/// No token (whole, or its signature), private key text or API key in keyward's output.
fn assert_nothing_leaked(keyward: &Keyward, idp: &FakeIdp) {
    let output = keyward.output();
    let tokens = idp.minted();
    assert_absent(&output, "a bearer token", &tokens);
    let signatures: Vec<&str> =
        tokens.iter().filter_map(|t| t.rsplit('.').next()).filter(|s| s.len() >= 16).collect();
    assert_absent(&output, "a token's signature", &signatures);
    assert_absent(&output, "a signing key's private part", &idp.private_key_texts());
    assert_absent(&output, "an API key", &[API_KEY]);
}

mod binary;
mod clients;
mod keys;
mod tokens;
