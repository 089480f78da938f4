//! A fake of Entra ID's OpenID provider for one tenant: discovery documents (v2.0 and v1.0)
//! and the JWK Set over HTTPS on 127.0.0.1, with a certificate for `localhost` from a CA made
//! for this fake, and tokens minted in process with the keys it publishes. It is what
//! keyward's OAuth ingress validates bearer tokens against, in tests (in process) and for the
//! Python suites (the `fake-idp` binary and its control API, [`ControlServer`]).
//!
//! - URLs: [`FakeIdp::issuer`] `https://localhost:PORT/{tenant}/v2.0` (Entra's
//!   `https://login.microsoftonline.com/{tenant}/v2.0`), [`FakeIdp::issuer_v1`]
//!   `https://localhost:PORT/{tenant}/` (Entra's `https://sts.windows.net/{tenant}/`), and
//!   the documents under them; `endpoints.rs` lists the routes and their shapes.
//! - Keys: two RSA 2048 fixtures and generated EC P-256 keys, each with a self-signed
//!   certificate whose thumbprint is its `kid` (`keys.rs`). One RSA and one EC key are
//!   published at start; [`FakeIdp::new_key`], [`FakeIdp::publish`] and [`FakeIdp::retire`]
//!   rotate them, and tokens are signed with the newest published key of a type unless a
//!   kid is named.
//! - Tokens: [`FakeIdp::claims`] and friends give Entra-shaped claims to edit as JSON;
//!   [`FakeIdp::token`] signs them (RS256, PS256, ES256). Hostile tokens for the validator
//!   to refuse: [`FakeIdp::unsigned`] (`alg: none`), [`FakeIdp::hs256_with_public_key`]
//!   (algorithm confusion), [`FakeIdp::tampered`], [`FakeIdp::token_claiming_kid`].
//! - Outage: [`FakeIdp::set_down`]`(true)` answers discovery and keys with 503 and Entra's
//!   transient error (AADSTS90033), as during an Entra incident; the port stays open.
//! - Counters: [`FakeIdp::jwks_fetches`] and [`FakeIdp::discovery_fetches`], for caching and
//!   refetch limits.
//!
//! It must never listen beyond loopback. It records every token it mints
//! ([`FakeIdp::minted`]) so a test can assert that none reached a log; it never logs one.

mod claims;
mod control;
mod endpoints;
mod jose;
mod keys;
mod serve;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::fake_azure::wire;
use crate::tls::TestCa;

pub use claims::DEFAULT_SCOPE;
pub use control::ControlServer;
pub use jose::{Alg, Kty};

use keys::{Keyring, SigningKey};

/// The form of a public key used as the HMAC secret of an algorithm-confusion token: what a
/// library that takes "the key" as bytes would be handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacSecret {
    /// The DER SubjectPublicKeyInfo.
    SpkiDer,
    /// The PEM text of it (`-----BEGIN PUBLIC KEY-----`, 64-character lines, final newline).
    SpkiPem,
}

/// State the server and the handle share.
struct Shared {
    tenant: String,
    /// `https://localhost:PORT`.
    origin: String,
    keys: Mutex<Keyring>,
    down: AtomicBool,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
}

impl Shared {
    fn issuer(&self) -> String {
        format!("{}/{}/v2.0", self.origin, self.tenant)
    }

    fn issuer_v1(&self) -> String {
        format!("{}/{}/", self.origin, self.tenant)
    }

    fn jwks_uri(&self) -> String {
        format!("{}/{}/discovery/v2.0/keys", self.origin, self.tenant)
    }

    fn jwks_uri_v1(&self) -> String {
        format!("{}/{}/discovery/keys", self.origin, self.tenant)
    }
}

/// A running fake identity provider; it stops when dropped.
pub struct FakeIdp {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: String,
    resource_app_id: String,
    minted: Mutex<Vec<String>>,
    server: JoinHandle<()>,
}

impl std::fmt::Debug for FakeIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeIdp")
            .field("addr", &self.addr)
            .field("tenant", &self.shared.tenant)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeIdp {
    /// Starts the provider on a free loopback port.
    pub async fn start() -> Self {
        Self::start_on(0).await.expect("start the fake identity provider")
    }

    /// Starts the provider on loopback port `port` (0: any free port).
    pub async fn start_on(port: u16) -> std::io::Result<Self> {
        let listener = serve::bind(port).await?;
        let addr = listener.local_addr()?;
        let ca = TestCa::new("fake-idp test CA");
        let tls = TlsAcceptor::from(ca.issue(&["localhost", "127.0.0.1"]).server_config());
        let shared = Arc::new(Shared {
            tenant: wire::random_guid(),
            origin: format!("https://localhost:{}", addr.port()),
            keys: Mutex::new(Keyring::new()),
            down: AtomicBool::new(false),
            jwks_fetches: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
        });
        let handler: serve::Handler = {
            let shared = shared.clone();
            Arc::new(move |request| endpoints::answer(&shared, &request))
        };
        Ok(Self {
            server: serve::spawn(listener, Some(tls), handler),
            shared,
            addr,
            ca_pem: ca.pem(),
            resource_app_id: wire::random_guid(),
            minted: Mutex::new(Vec::new()),
        })
    }

    /// Where it listens, `127.0.0.1:PORT`; its URLs name it `localhost`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The v2.0 issuer, `https://localhost:PORT/{tenant}/v2.0`.
    pub fn issuer(&self) -> String {
        self.shared.issuer()
    }

    /// The v1.0 issuer, `https://localhost:PORT/{tenant}/` (trailing slash, as Entra's).
    pub fn issuer_v1(&self) -> String {
        self.shared.issuer_v1()
    }

    /// `{issuer}/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer())
    }

    /// The v2.0 key set, `https://localhost:PORT/{tenant}/discovery/v2.0/keys`.
    pub fn jwks_uri(&self) -> String {
        self.shared.jwks_uri()
    }

    /// The v1.0 key set, `https://localhost:PORT/{tenant}/discovery/keys` (the same keys).
    pub fn jwks_uri_v1(&self) -> String {
        self.shared.jwks_uri_v1()
    }

    /// PEM of the CA that signed the server's certificate (for `localhost` and 127.0.0.1).
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// The directory (tenant) id, a random GUID.
    pub fn tenant_id(&self) -> String {
        self.shared.tenant.clone()
    }

    /// The application id of the protected API: the default `aud` of v2.0 tokens (and of
    /// v1.0 ones as `api://{id}`).
    pub fn resource_app_id(&self) -> String {
        self.resource_app_id.clone()
    }

    /// The kid that signs tokens of type `kty` by default: the newest published one.
    ///
    /// # Panics
    /// If no key of that type is published.
    pub fn signing_kid(&self, kty: Kty) -> String {
        self.signing_key(kty).kid.clone()
    }

    fn signing_key(&self, kty: Kty) -> Arc<SigningKey> {
        let key = self.shared.keys.lock().unwrap().signing(kty);
        key.unwrap_or_else(|| panic!("no {} key is published", kty.name()))
    }

    /// Makes a new key of type `kty`, not yet published; returns its kid. A token signed
    /// with it has a valid signature and a kid the key set does not have.
    pub fn new_key(&self, kty: Kty) -> String {
        self.shared.keys.lock().unwrap().make(kty)
    }

    /// Makes a new key and publishes it: the first step of a rotation. Returns its kid, which
    /// is now the [`FakeIdp::signing_kid`] of its type.
    pub fn rotate(&self, kty: Kty) -> String {
        let kid = self.new_key(kty);
        self.publish(&kid);
        kid
    }

    /// Adds key `kid` to the key set (again).
    ///
    /// # Panics
    /// If the fake has no such key.
    pub fn publish(&self, kid: &str) {
        assert!(self.shared.keys.lock().unwrap().set_published(kid, true), "no key {kid}");
    }

    /// Removes key `kid` from the key set; it can be published again.
    ///
    /// # Panics
    /// If the fake has no such key.
    pub fn retire(&self, kid: &str) {
        assert!(self.shared.keys.lock().unwrap().set_published(kid, false), "no key {kid}");
    }

    /// The kids in the key set now, oldest first.
    pub fn published(&self) -> Vec<String> {
        self.shared.keys.lock().unwrap().published()
    }

    /// The v2.0 key set document as served now.
    pub fn jwks(&self) -> Value {
        self.shared.keys.lock().unwrap().jwks(Some(&self.issuer()))
    }

    /// `true`: discovery and keys answer 503 `temporarily_unavailable` (AADSTS90033) until
    /// `set_down(false)`. Requests are still counted.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Whether the fake is down.
    pub fn is_down(&self) -> bool {
        self.shared.down.load(Ordering::SeqCst)
    }

    /// Requests for either key set so far, whatever they were answered.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Requests for either discovery document so far, whatever they were answered.
    pub fn discovery_fetches(&self) -> usize {
        self.shared.discovery_fetches.load(Ordering::SeqCst)
    }

    /// What the claims of every token from this tenant share.
    fn tenant(&self) -> claims::Tenant {
        claims::Tenant {
            id: self.tenant_id(),
            issuer: self.issuer(),
            issuer_v1: self.issuer_v1(),
            resource_app_id: self.resource_app_id(),
        }
    }

    /// A v2.0 delegated access token's claims: a user signed in to `app_id` (`azp`), scope
    /// `scp` [`DEFAULT_SCOPE`], `aud` the [`FakeIdp::resource_app_id`], valid for an hour.
    pub fn claims(&self, app_id: &str) -> Value {
        self.tenant().delegated(app_id)
    }

    /// A v2.0 app-only access token's claims (client credentials grant for `app_id`):
    /// `roles` [[`DEFAULT_SCOPE`]], `idtyp: "app"`, no `scp`.
    pub fn app_claims(&self, app_id: &str) -> Value {
        self.tenant().app(app_id)
    }

    /// A v1.0 delegated access token's claims: `iss` [`FakeIdp::issuer_v1`], `appid` instead
    /// of `azp`, `aud` `api://{resource_app_id}`, `ver: "1.0"`.
    pub fn claims_v1(&self, app_id: &str) -> Value {
        self.tenant().delegated_v1(app_id)
    }

    /// A compact JWS of `claims` signed with key `kid` and `alg`, header
    /// `{"typ":"JWT","alg":..,"kid":..}`. The key need not be published.
    ///
    /// # Panics
    /// If there is no key `kid` or it cannot sign with `alg` (an RSA key with ES256).
    pub fn token(&self, kid: &str, alg: Alg, claims: &Value) -> String {
        self.try_token(kid, kid, alg, claims).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A token signed with the default key for `alg` ([`FakeIdp::signing_kid`]).
    pub fn signed(&self, alg: Alg, claims: &Value) -> String {
        self.token(&self.signing_kid(alg.kty()), alg, claims)
    }

    /// A token whose header names `header_kid` but whose signature is made with key
    /// `signing_kid`: a valid signature by the wrong key, or (with an `alg` of the other key
    /// type) an algorithm that does not fit the named key.
    ///
    /// # Panics
    /// If there is no key `signing_kid` or it cannot sign with `alg`.
    pub fn token_claiming_kid(
        &self,
        header_kid: &str,
        signing_kid: &str,
        alg: Alg,
        claims: &Value,
    ) -> String {
        self.try_token(header_kid, signing_kid, alg, claims).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_token(
        &self,
        header_kid: &str,
        signing_kid: &str,
        alg: Alg,
        claims: &Value,
    ) -> Result<String, String> {
        let key = self.shared.keys.lock().unwrap().get(signing_kid);
        let key = key.ok_or_else(|| format!("the fake has no key {signing_kid}"))?;
        let token = jose::sign(&key.material, header_kid, alg, claims).ok_or_else(|| {
            format!("key {signing_kid} is {} and cannot sign {}", key.kty().name(), alg.name())
        })?;
        Ok(self.record(token))
    }

    /// `{"typ":"JWT","alg":"none","kid":..}` and an empty signature. The header names the
    /// default RSA kid, so that a validator cannot refuse it for an unknown kid alone.
    pub fn unsigned(&self, claims: &Value) -> String {
        let kid = self.shared.keys.lock().unwrap().signing(Kty::Rsa).map(|k| k.kid.clone());
        self.record(jose::unsigned(kid.as_deref(), claims))
    }

    /// The algorithm-confusion attack: HS256 with key `kid`'s public key as the HMAC secret,
    /// in the form `secret`. A validator that lets the token's `alg` choose how to use "the
    /// key" accepts it.
    ///
    /// # Panics
    /// If there is no key `kid`.
    pub fn hs256_with_public_key(&self, kid: &str, claims: &Value, secret: HmacSecret) -> String {
        let key = self.shared.keys.lock().unwrap().get(kid);
        let key = key.unwrap_or_else(|| panic!("the fake has no key {kid}"));
        let token = match secret {
            HmacSecret::SpkiDer => jose::hs256(key.spki_der(), kid, claims),
            HmacSecret::SpkiPem => jose::hs256(key.spki_pem().as_bytes(), kid, claims),
        };
        self.record(token)
    }

    /// `token` with a day added to `exp` (a claim a thief would like to change), header and
    /// signature kept.
    ///
    /// # Panics
    /// If `token` is not a compact JWS with a JSON payload.
    pub fn tampered(&self, token: &str) -> String {
        self.tampered_with(token, |claims| {
            let exp = claims["exp"].as_i64().unwrap_or_else(wire::now);
            claims["exp"] = (exp + 86_400).into();
        })
    }

    /// `token` with its payload changed by `edit`, header and signature kept.
    ///
    /// # Panics
    /// If `token` is not a compact JWS with a JSON payload.
    pub fn tampered_with(&self, token: &str, edit: impl FnOnce(&mut Value)) -> String {
        self.record(jose::tampered(token, edit))
    }

    fn record(&self, token: String) -> String {
        self.minted.lock().unwrap().push(token.clone());
        token
    }

    /// Every token minted so far, honest or hostile, oldest first.
    pub fn minted(&self) -> Vec<String> {
        self.minted.lock().unwrap().clone()
    }

    /// Texts that must never appear anywhere: the lines of every private key's PEM and its
    /// base64url form (the key set holds public parts only).
    pub fn private_key_texts(&self) -> Vec<String> {
        self.shared.keys.lock().unwrap().private_texts()
    }
}

#[cfg(test)]
mod tests;
