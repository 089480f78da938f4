//! Wiring: builds the secret store, the authenticator and the listeners from a validated
//! config, and runs them until shutdown. `main` and the in-process tests both start here.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::admin::Admin;
use crate::auth::token::{self, Fetcher};
use crate::auth::{Authenticator, FailureLimiter, Tokens};
use crate::config::{Config, SecretSource};
use crate::egress::Egress;
use crate::ingress::Ingress;
use crate::mcp::session::Sessions;
use crate::metrics::Metrics;
use crate::secrets::{
    self, Consumer, FileSource, KeyVaultError, KeyVaultSource, SecretStore, Source,
};
use crate::server::{self, Acceptor, ConnLimits, Connections};
use crate::telemetry::redact::Redactor;
use crate::tls::{ReloadingCert, TlsError};
use crate::trust::TrustError;

/// Why keyward could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("cannot listen on {addr} ({listener}): {source}")]
    Bind {
        /// Which listener.
        listener: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error("ingress TLS: {0}")]
    Tls(#[from] TlsError),
    /// The egress extra CA is unusable.
    #[error("egress.extra_ca: {0}")]
    Trust(#[from] TrustError),
    /// A worker thread could not be started.
    #[error("cannot start a worker thread: {0}")]
    Worker(#[source] std::io::Error),
    /// An issuer's CA file is unusable.
    #[error("ingress.oauth.issuers[{index}].ca_file: {source}")]
    IssuerTrust {
        /// Which issuer.
        index: usize,
        /// Why.
        #[source]
        source: TrustError,
    },
    /// The OAuth challenge cannot be a header (the configuration check prevents it).
    #[error("ingress.oauth: {0}")]
    Challenge(#[from] crate::error::InvalidChallenge),
    /// The Key Vault source could not be set up.
    #[error("Key Vault: {0}")]
    KeyVault(#[from] KeyVaultError),
}

/// A running keyward.
#[derive(Debug)]
pub struct App {
    /// The bound ingress address (useful with port 0).
    pub ingress_addr: SocketAddr,
    /// The bound egress address, when egress is configured.
    pub egress_addr: Option<SocketAddr>,
    /// The bound admin address.
    pub admin_addr: SocketAddr,
    /// The secret store, for reloads and inspection.
    pub store: Arc<SecretStore>,
    /// Flushed at the end of [`App::wait`].
    metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    /// Listeners: they end after their drain.
    servers: JoinSet<()>,
    /// Watchers and reloaders: they run until aborted.
    background: JoinSet<()>,
}

impl App {
    /// Binds every listener and starts serving. Secrets load in the background; until they
    /// are, both paths refuse every request and `/readyz` says why. `redactor` learns every
    /// loaded value, for the telemetry's last line of defence.
    ///
    /// The stages: what the requests are checked by (the authenticator, egress), the secret
    /// pipeline that rebuilds them from every snapshot, the workers that serve ingress and
    /// egress, the admin listener.
    pub async fn start(config: Config, redactor: Arc<Redactor>) -> Result<Self, StartError> {
        let (shutdown, _) = watch::channel(false);
        let mut servers = JoinSet::new();
        let mut background = JoinSet::new();
        let clients = config.ingress.clients.iter().map(|c| c.id.clone()).collect();
        let routes =
            config.egress.iter().flat_map(|e| e.routes.iter().map(|r| r.prefix.clone())).collect();
        let granted = config
            .ingress
            .clients
            .iter()
            .flat_map(|c| [&c.tools, &c.resources, &c.prompts].into_iter().flatten().flatten());
        let oauth_granted = config
            .ingress
            .oauth
            .iter()
            .flat_map(|o| &o.scope_grants)
            .flat_map(|g| [&g.tools, &g.resources, &g.prompts].into_iter().flatten().flatten());
        let exact = granted.chain(oauth_granted).map(|g| g.as_str()).filter(|g| !g.contains('*'));
        let metrics = Arc::new(
            Metrics::with_telemetry(&config.telemetry, clients, routes)
                .with_grant_names(exact.map(str::to_owned).collect::<Vec<_>>()),
        );
        let ingress_config = &config.ingress;

        let limiter = FailureLimiter::new(
            ingress_config.auth_failures_per_minute,
            ingress_config.auth_failure_burst,
        );
        let mut auth = Authenticator::new(limiter, ingress_config.clients.clone());
        let tokens = token_validator(&config, &mut background)?;
        if let Some(tokens) = &tokens {
            auth = auth.with_tokens(tokens.clone());
        }
        let auth = Arc::new(auth);
        let egress = match &config.egress {
            Some(egress_config) => Some(Arc::new(Egress::new(
                egress_config,
                egress_config.max_header_bytes.unwrap_or(ingress_config.max_header_bytes),
                egress_config.max_body_bytes.unwrap_or(ingress_config.max_body_bytes),
                redactor.clone(),
                metrics.clone(),
            )?)),
            None => None,
        };

        // What is derived from the secrets, rebuilt from each snapshot before it is published.
        let sessions = Arc::new(Sessions::new(ingress_config.session_secret.clone()));
        let redactor_for_ingress = redactor.clone();
        let mut consumers: Vec<Arc<dyn Consumer>> = vec![redactor, auth.clone(), sessions.clone()];
        consumers.extend(egress.iter().map(|egress| egress.clone() as Arc<dyn Consumer>));
        let store = secret_pipeline(&config, consumers, &metrics, &mut background, &shutdown)?;
        metrics.observe(&store);

        let tls = match &ingress_config.tls {
            Some(tls) => {
                let cert = ReloadingCert::load(&tls.cert, &tls.key)?;
                let acceptor = cert.acceptor();
                background.spawn(
                    cert.watch(tls.reload_interval.unwrap_or(config.secrets.watch_interval)),
                );
                Some(acceptor)
            }
            None => None,
        };
        let limits = ConnLimits {
            header_read_timeout: ingress_config.header_read_timeout,
            handshake_timeout: ingress_config
                .tls
                .as_ref()
                .map_or(ingress_config.header_read_timeout, |tls| tls.handshake_timeout),
            idle_timeout: ingress_config.idle_timeout,
            unauthenticated_timeout: None,
            max_header_bytes: ingress_config.max_header_bytes,
            shutdown_grace: ingress_config.shutdown_grace,
        };

        // Ingress and egress are served by worker threads, each with its own backend pools;
        // one acceptor per listener hands them connections (see `server::Acceptor`).
        let workers = ingress_config.worker_count();
        let ingress_listener = bind("ingress", ingress_config.listen).await?;
        let ingress_addr = local_addr("ingress", ingress_listener.local_addr())?;
        let (acceptor, ingress_ends) = Acceptor::new(workers);
        let permits = Arc::new(Semaphore::new(ingress_config.max_connections));
        servers.spawn(acceptor.run(ingress_listener, permits, shutdown.subscribe()));
        let (mut egress_ends, egress_addr) = match (&config.egress, &egress) {
            (Some(egress_config), Some(_)) => {
                if egress_config.unsafe_listen_beyond_loopback
                    && !egress_config.listen.ip().is_loopback()
                {
                    tracing::warn!(
                        listen = %egress_config.listen,
                        "egress listens beyond loopback: anything that reaches it borrows the \
                         injected credentials"
                    );
                }
                let listener = bind("egress", egress_config.listen).await?;
                let addr = local_addr("egress", listener.local_addr())?;
                let (acceptor, ends) = Acceptor::new(workers);
                let cap = egress_config.max_connections.unwrap_or(ingress_config.max_connections);
                servers.spawn(acceptor.run(
                    listener,
                    Arc::new(Semaphore::new(cap)),
                    shutdown.subscribe(),
                ));
                (ends, Some(addr))
            }
            _ => (Vec::new(), None),
        };
        let ingress =
            Ingress::new(ingress_config, auth, sessions, redactor_for_ingress, metrics.clone())?;
        let ingress_limits = ConnLimits {
            unauthenticated_timeout: Some(ingress_config.unauthenticated_timeout()),
            ..limits
        };
        for (index, ingress_end) in ingress_ends.into_iter().enumerate() {
            let worker = Worker {
                ingress: (ingress.for_worker(), ingress_end),
                ingress_limits,
                egress: egress
                    .as_ref()
                    .zip(egress_ends.pop())
                    .map(|(e, end)| (e.for_worker(), end)),
                tls: tls.clone(),
                limits,
            };
            let done = worker.spawn(index, &shutdown).map_err(StartError::Worker)?;
            servers.spawn(done);
        }

        let admin_listener = bind("admin", config.admin.listen).await?;
        let admin_addr = local_addr("admin", admin_listener.local_addr())?;
        let admin = Arc::new(Admin::new(store.clone(), metrics.clone(), tokens));
        servers.spawn(server::serve(
            Connections::Listener(admin_listener, Arc::new(Semaphore::new(64))),
            None,
            limits,
            move |request, peer: server::Peer| {
                std::future::ready(admin.handle(&request, peer.addr))
            },
            shutdown.subscribe(),
        ));

        tracing::info!(
            ingress = %ingress_addr,
            egress = egress_addr.map(|a| a.to_string()),
            admin = %admin_addr,
            workers,
            "keyward listening"
        );
        Ok(Self {
            ingress_addr,
            egress_addr,
            admin_addr,
            store,
            metrics,
            shutdown,
            servers,
            background,
        })
    }

    /// Stops accepting and begins the bounded drain.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits until every listener has drained, then stops the background tasks and exports
    /// the last metrics (on a blocking thread: the exporter may wait for its collector).
    pub async fn wait(mut self) {
        while let Some(result) = self.servers.join_next().await {
            if result.is_err_and(|err| err.is_panic()) {
                tracing::error!("a listener task panicked");
            }
        }
        self.background.abort_all();
        let metrics = self.metrics.clone();
        let _ = tokio::task::spawn_blocking(move || metrics.shutdown()).await;
    }
}

/// Connections the kernel may hold for a listener before keyward accepts them (capped by
/// `net.core.somaxconn`): a burst of clients, and those waiting for a slot under the cap.
const BACKLOG: u32 = 4096;

/// The secret store, its source, and the refresh that feeds it; `consumers` are rebuilt from
/// every new snapshot before it is published.
/// Bearer tokens, when `[ingress.oauth]` is set: the validator, and one task per issuer
/// keeping its signing keys fetched.
fn token_validator(
    config: &Config,
    background: &mut JoinSet<()>,
) -> Result<Option<Arc<Tokens>>, StartError> {
    let Some(oauth) = &config.ingress.oauth else { return Ok(None) };
    let tokens = Arc::new(Tokens::new(oauth, &config.ingress.clients));
    for (index, (issuer, (_, keys))) in oauth.issuers.iter().zip(tokens.issuer_keys()).enumerate() {
        let fetcher =
            Fetcher::new(issuer).map_err(|source| StartError::IssuerTrust { index, source })?;
        background.spawn(token::keys_run(keys.clone(), fetcher, oauth.jwks_refresh_interval));
    }
    Ok(Some(tokens))
}

fn secret_pipeline(
    config: &Config,
    consumers: Vec<Arc<dyn Consumer>>,
    metrics: &Arc<Metrics>,
    background: &mut JoinSet<()>,
    shutdown: &watch::Sender<bool>,
) -> Result<Arc<SecretStore>, StartError> {
    let secrets = &config.secrets;
    let store = SecretStore::new(config.referenced_secrets(), secrets.rotation_overlap);
    let store = Arc::new(store.with_consumers(consumers));
    let (source, interval) = match &secrets.source {
        SecretSource::File { dir } => {
            (Source::File(FileSource::new(dir.clone())), secrets.watch_interval)
        }
        SecretSource::KeyVault(keyvault) => {
            (Source::KeyVault(KeyVaultSource::new(keyvault)?), secrets.refresh_interval)
        }
    };
    let refresh =
        secrets::run(store.clone(), source, interval, metrics.clone(), shutdown.subscribe());
    background.spawn(refresh);
    Ok(store)
}

/// One worker thread: its share of ingress connections and, with egress, of egress ones, each
/// with handlers (and so backend pools) of its own.
struct Worker {
    ingress: (Ingress, Connections),
    /// `limits`, and the unauthenticated timeout only ingress has.
    ingress_limits: ConnLimits,
    egress: Option<(Egress, Connections)>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnLimits,
}

impl Worker {
    /// Starts the thread; the future completes when it has drained.
    fn spawn(
        self,
        index: usize,
        shutdown: &watch::Sender<bool>,
    ) -> std::io::Result<impl std::future::Future<Output = ()>> {
        let Worker { ingress: (ingress, ingress_end), ingress_limits, egress, tls, limits } = self;
        let (ingress_shutdown, egress_shutdown) = (shutdown.subscribe(), shutdown.subscribe());
        let run = move || async move {
            let ingress = Arc::new(ingress);
            let handler = move |request, peer| ingress.clone().handle(request, peer);
            let serve_ingress =
                server::serve(ingress_end, tls, ingress_limits, handler, ingress_shutdown);
            let serve_egress = async {
                let Some((egress, end)) = egress else { return };
                let egress = Arc::new(egress);
                let handler = move |request, _: server::Peer| egress.clone().handle(request);
                server::serve(end, None, limits, handler, egress_shutdown).await;
            };
            tokio::join!(serve_ingress, serve_egress);
        };
        server::spawn_worker(format!("keyward-worker-{index}"), run)
    }
}

async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    let bound = || {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    };
    bound().map_err(|source| StartError::Bind { listener, addr, source })
}

fn local_addr(
    listener: &'static str,
    addr: std::io::Result<SocketAddr>,
) -> Result<SocketAddr, StartError> {
    let unknown = ([0, 0, 0, 0], 0).into();
    addr.map_err(|source| StartError::Bind { listener, addr: unknown, source })
}
