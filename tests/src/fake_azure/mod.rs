//! A fake of Azure Key Vault's secrets REST API, of the App Service / Container Apps
//! managed identity endpoint and of Entra ID's token endpoint (AKS workload identity), all on
//! 127.0.0.1, for keyward's tests (in process) and for the local demo (the `fake-azure`
//! binary).
//!
//! - The vault speaks HTTPS (HTTP/1.1 and h2 by ALPN) with a certificate for
//!   `kv.vault.test`, `localhost` and `127.0.0.1` from a CA made for this fake. Its URL is
//!   `https://kv.vault.test:PORT/`: a client resolves that name to 127.0.0.1 itself and keeps
//!   the Azure SDK's challenge-resource check on, since the challenge says
//!   `resource="https://vault.test"`. `vault.rs` lists the routes and JSON shapes.
//! - The identity endpoint speaks plain HTTP at `http://127.0.0.1:PORT/msi/token` and issues
//!   opaque tokens bound to the requested resource and an expiry; the vault accepts only
//!   unexpired tokens issued here for `https://vault.test`. `identity.rs` has the protocol.
//! - The Entra ID token endpoint speaks HTTPS with the vault's certificate (valid for
//!   `127.0.0.1`) at [`FakeAzure::entra_authority`] `/{tenant}/oauth2/v2.0/token`, and trades
//!   the federated token a test set ([`FakeAzure::set_federated_token`]) for a token the vault
//!   accepts: the client credentials grant with a client assertion, as AKS workload identity
//!   uses it. `entra.rs` has the protocol.
//!
//! Outages, two kinds. [`FakeAzure::set_available`]`(false)` keeps the ports bound but
//! closes every connection: open ones at once, new ones as soon as they are accepted (the
//! client sees the connection closed or reset, never an HTTP status). It is also how a test
//! starts Azure "after" keyward: start the fake unavailable, hand its URLs, CA and identity
//! header to keyward, then make it available. [`FakeAzure::stop`] closes the ports
//! (connections refused) and [`FakeAzure::resume`] opens the same ports again; the CA,
//! identity header, federated token, secrets and tokens survive both.
//!
//! It must never listen beyond loopback, and it records requests without header values, so
//! a test may print what it saw without printing a token.

pub(crate) mod entra;
mod identity;
pub(crate) mod serve;
mod store;
mod vault;
pub(crate) mod wire;

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::tls::TestCa;

pub use store::Attributes;

use entra::Entra;
use identity::{Assigned, Identity};
use vault::{Vault, CHALLENGE_RESOURCE, VAULT_HOST};

/// Which of the fake's servers answered a request (or issued a token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The Key Vault data plane.
    Vault,
    /// The managed identity endpoint.
    Identity,
    /// The Entra ID token endpoint (workload identity).
    Entra,
}

/// One request as the fake answered it. Header values are never kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Which server answered.
    pub endpoint: Endpoint,
    /// Method, e.g. `GET`.
    pub method: String,
    /// Path and query, e.g. `/secrets/db/?api-version=2025-07-01`.
    pub path: String,
    /// HTTP version the request came in on.
    pub version: http::Version,
    /// Whether an `Authorization` header was present.
    pub authorization: bool,
    /// The status the fake answered.
    pub status: u16,
}

/// State the servers share; it outlives a [`FakeAzure::stop`].
struct Shared {
    vault: Vault,
    identity: Identity,
    entra: Entra,
    /// `true` while connections are served.
    up: watch::Sender<bool>,
    requests: Mutex<Vec<RecordedRequest>>,
    /// Connections closed because the fake was unavailable.
    dropped: AtomicUsize,
}

/// The running accept tasks; aborting one closes its listener and its connections.
struct Servers {
    vault: JoinHandle<()>,
    identity: JoinHandle<()>,
    entra: JoinHandle<()>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.vault.abort();
        self.identity.abort();
        self.entra.abort();
    }
}

/// A running fake Key Vault, managed identity endpoint and Entra ID token endpoint; all stop
/// when it is dropped.
pub struct FakeAzure {
    shared: Arc<Shared>,
    vault_addr: SocketAddr,
    identity_addr: SocketAddr,
    entra_addr: SocketAddr,
    ca_pem: String,
    tls: TlsAcceptor,
    servers: Mutex<Option<Servers>>,
}

impl std::fmt::Debug for FakeAzure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeAzure")
            .field("vault_addr", &self.vault_addr)
            .field("identity_addr", &self.identity_addr)
            .field("entra_addr", &self.entra_addr)
            .finish_non_exhaustive()
    }
}

impl FakeAzure {
    /// Starts the servers on free loopback ports.
    pub async fn start() -> Self {
        Self::start_on(0, 0).await.expect("start the fake Azure")
    }

    /// Starts the vault and the identity endpoint on the given loopback ports (0: any free
    /// port), the Entra ID endpoint on a free one. A port held by a fake dropped just before
    /// is waited for briefly.
    pub async fn start_on(vault_port: u16, identity_port: u16) -> std::io::Result<Self> {
        let vault_listener = serve::bind(vault_port).await?;
        let identity_listener = serve::bind(identity_port).await?;
        let entra_listener = serve::bind(0).await?;
        let vault_addr = vault_listener.local_addr()?;
        let identity_addr = identity_listener.local_addr()?;
        let entra_addr = entra_listener.local_addr()?;
        let ca = TestCa::new("fake-azure test CA");
        let issued = ca.issue(&[VAULT_HOST, "localhost", "127.0.0.1"]);
        let tls = TlsAcceptor::from(issued.server_config());
        let vault = Vault::new(format!("{VAULT_HOST}:{}", vault_addr.port()));
        let entra = Entra::new(vault.tenant().to_owned());
        let shared = Arc::new(Shared {
            vault,
            identity: Identity::new(),
            entra,
            up: watch::Sender::new(true),
            requests: Mutex::new(Vec::new()),
            dropped: AtomicUsize::new(0),
        });
        let fake = Self {
            shared,
            vault_addr,
            identity_addr,
            entra_addr,
            ca_pem: ca.pem(),
            tls,
            servers: Mutex::new(None),
        };
        fake.serve(vault_listener, identity_listener, entra_listener);
        Ok(fake)
    }

    fn serve(
        &self,
        vault: tokio::net::TcpListener,
        identity: tokio::net::TcpListener,
        entra: tokio::net::TcpListener,
    ) {
        let servers = Servers {
            vault: serve::spawn(
                vault,
                Some(self.tls.clone()),
                self.shared.clone(),
                Endpoint::Vault,
            ),
            identity: serve::spawn(identity, None, self.shared.clone(), Endpoint::Identity),
            entra: serve::spawn(
                entra,
                Some(self.tls.clone()),
                self.shared.clone(),
                Endpoint::Entra,
            ),
        };
        *self.servers.lock().unwrap() = Some(servers);
    }

    /// Closes every port and every open connection; connections are refused until
    /// [`FakeAzure::resume`]. Secrets, tokens and settings are kept.
    pub async fn stop(&self) {
        let servers = self.servers.lock().unwrap().take();
        if let Some(mut servers) = servers {
            servers.vault.abort();
            servers.identity.abort();
            servers.entra.abort();
            // Awaiting the aborted tasks makes sure their listeners are closed on return.
            let _ = (&mut servers.vault).await;
            let _ = (&mut servers.identity).await;
            let _ = (&mut servers.entra).await;
        }
    }

    /// Listens again on the same ports after [`FakeAzure::stop`] (a no-op while running).
    pub async fn resume(&self) -> std::io::Result<()> {
        if self.servers.lock().unwrap().is_some() {
            return Ok(());
        }
        let vault = serve::bind(self.vault_addr.port()).await?;
        let identity = serve::bind(self.identity_addr.port()).await?;
        let entra = serve::bind(self.entra_addr.port()).await?;
        self.serve(vault, identity, entra);
        Ok(())
    }

    /// The vault's URL, `https://kv.vault.test:{port}/`; `kv.vault.test` must be resolved to
    /// [`FakeAzure::vault_addr`] by the client.
    pub fn vault_url(&self) -> String {
        format!("https://{VAULT_HOST}:{}/", self.vault_addr.port())
    }

    /// Where the vault listens, `127.0.0.1:{port}`.
    pub fn vault_addr(&self) -> SocketAddr {
        self.vault_addr
    }

    /// The managed identity endpoint, `http://127.0.0.1:{port}/msi/token` (`IDENTITY_ENDPOINT`).
    pub fn identity_endpoint(&self) -> String {
        format!("http://{}/msi/token", self.identity_addr)
    }

    /// Where the identity endpoint listens, `127.0.0.1:{port}`.
    pub fn identity_addr(&self) -> SocketAddr {
        self.identity_addr
    }

    /// The random value the identity endpoint requires in `x-identity-header`
    /// (`IDENTITY_HEADER`).
    pub fn identity_header(&self) -> String {
        self.shared.identity.header().to_owned()
    }

    /// The Entra ID authority host, `https://127.0.0.1:{port}` (keyward's
    /// `secrets.authority_host`); tokens are requested at `{authority}/{tenant}/oauth2/v2.0/token`
    /// over HTTPS with the vault's certificate.
    pub fn entra_authority(&self) -> String {
        format!("https://{}", self.entra_addr)
    }

    /// Where the Entra ID endpoint listens, `127.0.0.1:{port}`.
    pub fn entra_addr(&self) -> SocketAddr {
        self.entra_addr
    }

    /// The directory (tenant) id: the Entra ID endpoint serves only this tenant
    /// (`AZURE_TENANT_ID`), and the vault's challenge names it.
    pub fn tenant_id(&self) -> String {
        self.shared.vault.tenant().to_owned()
    }

    /// The application (client) id the Entra ID endpoint knows (`AZURE_CLIENT_ID`); random
    /// until [`FakeAzure::set_entra_client_id`].
    pub fn entra_client_id(&self) -> String {
        self.shared.entra.client_id()
    }

    /// Makes `client_id` the only application the Entra ID endpoint knows.
    pub fn set_entra_client_id(&self, client_id: &str) {
        self.shared.entra.set_client_id(client_id);
    }

    /// The federated (service account) token the Entra ID endpoint accepts now: random until
    /// [`FakeAzure::set_federated_token`].
    pub fn federated_token(&self) -> String {
        self.shared.entra.federated_token()
    }

    /// Accepts only `token` as the client assertion from now on, as after Kubernetes rotated
    /// the projected token (any other gets 401 `invalid_client` AADSTS700213).
    pub fn set_federated_token(&self, token: &str) {
        self.shared.entra.set_federated_token(token);
    }

    /// PEM of the CA that signed the certificate of the vault and of the Entra ID endpoint.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// The `resource=` of the vault's challenge and the audience its tokens need,
    /// `https://vault.test`.
    pub fn challenge_resource(&self) -> String {
        CHALLENGE_RESOURCE.to_owned()
    }

    /// Adds a new enabled version of secret `name` holding `value`; returns its 32-hex id.
    ///
    /// # Panics
    /// If `name` is not a valid Key Vault name (1 to 127 letters, digits or dashes).
    pub fn set_secret(&self, name: &str, value: &str) -> String {
        self.set_secret_with(name, value, Attributes::default())
    }

    /// Adds a new version of secret `name` holding `value` with `attrs`; returns its 32-hex
    /// id. It becomes the latest version even when disabled, as in Key Vault.
    ///
    /// # Panics
    /// If `name` is not a valid Key Vault name (1 to 127 letters, digits or dashes).
    pub fn set_secret_with(&self, name: &str, value: &str, attrs: Attributes) -> String {
        assert!(store::valid_name(name), "Key Vault would refuse the name {name:?}");
        let version = wire::random_hex(16);
        let mut store = self.shared.vault.store.lock().unwrap();
        store.insert(name, version.clone(), value, attrs, wire::now());
        version
    }

    /// Replaces the attributes of one version (disable it, set `exp` or `nbf`).
    ///
    /// # Panics
    /// If there is no such secret or version.
    pub fn update_version(&self, name: &str, version: &str, attrs: Attributes) {
        let mut store = self.shared.vault.store.lock().unwrap();
        let updated = store.update(name, version, attrs, wire::now());
        assert!(updated, "no version {version} of secret {name:?}");
    }

    /// Deletes secret `name` and all its versions; gets then answer 404 `SecretNotFound`.
    /// Soft-delete is not modelled: setting the name again starts a new secret.
    ///
    /// # Panics
    /// If there is no such secret.
    pub fn delete_secret(&self, name: &str) {
        let deleted = self.shared.vault.store.lock().unwrap().delete(name);
        assert!(deleted, "no secret {name:?} to delete");
    }

    /// The next `n` vault requests answer 429 `Throttled` with `Retry-After: 1`.
    pub fn throttle_next(&self, n: usize) {
        self.shared.vault.throttle_next(n);
    }

    /// `false`: every server closes every open connection and each new one as soon as it is
    /// accepted (ports stay bound; no HTTP status is ever sent). `true`: serve again.
    pub fn set_available(&self, up: bool) {
        self.shared.up.send_replace(up);
    }

    /// Connections closed so far because the fake was unavailable.
    pub fn dropped_connections(&self) -> usize {
        self.shared.dropped.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lifetime of tokens issued from now on by either token endpoint, in seconds (default
    /// 3600; 0 issues tokens that are already expired).
    pub fn set_token_lifetime(&self, secs: u64) {
        self.shared.identity.set_lifetime(secs);
    }

    /// Expires every token issued so far: the vault answers 401 `[TokenExpired]` to them.
    pub fn expire_tokens(&self) {
        self.shared.identity.expire_all(wire::now());
    }

    /// Which identity token requests must name. `Some(id)`: the app has only the
    /// user-assigned identity `id`, and a request without `client_id=id` gets 400.
    /// `None`: the app has only a system-assigned identity, and a request naming any
    /// identity gets 400. Until this is called, every request is accepted.
    pub fn expect_client_id(&self, client_id: Option<&str>) {
        let assigned = match client_id {
            Some(id) => Assigned::User(id.to_owned()),
            None => Assigned::System,
        };
        self.shared.identity.set_assigned(assigned);
    }

    /// Tokens issued so far by both token endpoints.
    pub fn tokens_issued(&self) -> usize {
        self.shared.identity.tokens().len()
    }

    /// Tokens issued so far by one endpoint ([`Endpoint::Identity`] or [`Endpoint::Entra`]).
    pub fn tokens_issued_by(&self, endpoint: Endpoint) -> usize {
        self.shared.identity.issued_by(endpoint)
    }

    /// The tokens issued so far, oldest first: for asserting that none of them shows up in
    /// a log or a response.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.identity.tokens()
    }

    /// Every request answered so far, all servers, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// A keyward configuration for one client (`agent`, secret `mcp-client-agent`) and one
    /// egress route (`/health/` with `apim-subscription-key`), reading this vault: its name
    /// pinned to loopback, its CA (written into `dir`) trusted. The caller adds the credential
    /// and its options.
    pub fn keyward_config(
        &self,
        dir: &crate::dir::TempDir,
        backend: SocketAddr,
        upstream: SocketAddr,
    ) -> crate::config::Builder {
        let ca = dir.write("vault-ca.pem", &self.ca_pem());
        crate::config::Builder::key_vault(&self.vault_url(), &ca)
            .backend(backend)
            .client("agent", "mcp-client-agent")
            .route("/health/", &format!("http://{upstream}/biotrackr/"), "apim-subscription-key")
    }
}
