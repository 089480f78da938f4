//! Each issuer's signing keys, fetched over keyward's own hyper + rustls client: from the
//! issuer's OpenID configuration (or a configured `jwks_uri`), cached, refreshed on an
//! interval, and fetched again (at most once per `unknown_kid_interval`) when a token names a
//! key id the cache does not have. The last good set stays through an outage.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio::sync::{watch, Notify};

use super::jwks::KeySet;
use crate::config::{url, IssuerConfig};
use crate::trust::{self, TrustError};

/// Largest discovery or JWK Set document read.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Time for one fetch, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait between retries after a failed fetch.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// Why a fetch failed. Names the document, never a URL's query or a body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// No answer in time.
    #[error("{0}: no answer within {FETCH_TIMEOUT:?}")]
    Timeout(&'static str),
    /// No connection or no complete answer.
    #[error("{0}: {1}")]
    Transport(&'static str, String),
    /// An answer other than 200.
    #[error("{0}: HTTP status {1}")]
    Status(&'static str, StatusCode),
    /// Not the JSON document expected.
    #[error("{0}: not a valid document")]
    Document(&'static str),
    /// The discovery document names another issuer (OpenID Connect Discovery §4.3).
    #[error("the OpenID configuration names a different issuer")]
    IssuerMismatch,
    /// The set holds no key keyward can verify with.
    #[error("the JWK Set holds no usable signing key")]
    NoUsableKey,
}

/// One issuer's keys and what asks for them.
#[derive(Debug)]
pub(crate) struct IssuerKeys {
    set: ArcSwapOption<KeySet>,
    /// Bumped after every fetch, good or bad, so that a request waiting on one stops waiting.
    fetched: watch::Sender<u64>,
    wake: Notify,
    last_demand: Mutex<Option<Instant>>,
    unknown_kid_interval: Duration,
}

impl IssuerKeys {
    pub(crate) fn new(unknown_kid_interval: Duration) -> Self {
        Self {
            set: ArcSwapOption::empty(),
            fetched: watch::channel(0).0,
            wake: Notify::new(),
            last_demand: Mutex::new(None),
            unknown_kid_interval,
        }
    }

    /// The current set; `None` until the first fetch succeeded.
    pub(crate) fn current(&self) -> Option<Arc<KeySet>> {
        self.set.load_full()
    }

    /// A token named a key id the set lacks: asks for a fetch, unless one was asked for less
    /// than `unknown_kid_interval` ago, and waits up to `wait` for it. True if a fetch ended.
    pub(crate) async fn refetch(&self, wait: Duration) -> bool {
        {
            let mut last = self.last_demand.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if last.is_some_and(|at| now.duration_since(at) < self.unknown_kid_interval) {
                return false;
            }
            *last = Some(now);
        }
        let mut fetched = self.fetched.subscribe();
        let seen = *fetched.borrow_and_update();
        self.wake.notify_one();
        let ended = tokio::time::timeout(wait, fetched.wait_for(|n| *n != seen)).await.is_ok();
        ended
    }

    pub(super) fn store(&self, set: KeySet) {
        self.set.store(Some(Arc::new(set)));
    }
}

/// Fetches one issuer's documents.
#[derive(Debug)]
pub(crate) struct Fetcher {
    issuer: String,
    discovery: Option<Uri>,
    jwks_uri: Option<Uri>,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Fetcher {
    /// A fetcher trusting the public roots and the issuer's `ca_file`, https only.
    pub(crate) fn new(config: &IssuerConfig) -> Result<Self, TrustError> {
        let tls = trust::client_config(config.ca_file.as_deref())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(FETCH_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let (discovery, jwks_uri) = match &config.jwks_uri {
            Some(uri) => (None, Some(uri.uri().clone())),
            None => (config.discovery_url().parse().ok(), None),
        };
        Ok(Self {
            issuer: config.issuer.as_str().to_owned(),
            discovery,
            jwks_uri,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The issuer's current key set.
    pub(crate) async fn fetch(&self) -> Result<KeySet, FetchError> {
        let jwks_uri = match (&self.jwks_uri, &self.discovery) {
            (Some(uri), _) => uri.clone(),
            (None, Some(discovery)) => self.discover(discovery).await?,
            (None, None) => return Err(FetchError::Document("OpenID configuration")),
        };
        let body = self.get("JWK Set", jwks_uri).await?;
        let set = KeySet::parse(&body).map_err(|_| FetchError::Document("JWK Set"))?;
        if set.is_empty() {
            return Err(FetchError::NoUsableKey);
        }
        Ok(set)
    }

    async fn discover(&self, discovery: &Uri) -> Result<Uri, FetchError> {
        #[derive(Deserialize)]
        struct Configuration {
            issuer: String,
            jwks_uri: String,
        }
        let what = "OpenID configuration";
        let body = self.get(what, discovery.clone()).await?;
        let document: Configuration =
            serde_json::from_slice(&body).map_err(|_| FetchError::Document(what))?;
        if document.issuer != self.issuer {
            return Err(FetchError::IssuerMismatch);
        }
        let jwks = url::CheckedUrl::parse(&document.jwks_uri, &url::ISSUER)
            .map_err(|_| FetchError::Document(what))?;
        Ok(jwks.uri().clone())
    }

    async fn get(&self, what: &'static str, uri: Uri) -> Result<Bytes, FetchError> {
        let request = Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|_| FetchError::Document(what))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| FetchError::Transport(what, error_chain(&e)))?;
            if response.status() != StatusCode::OK {
                return Err(FetchError::Status(what, response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES);
            let body =
                body.collect().await.map_err(|e| FetchError::Transport(what, e.to_string()))?;
            Ok(body.to_bytes())
        };
        tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| FetchError::Timeout(what))?
    }
}

/// The error and its sources, one line (hyper's top-level message alone says little).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Keeps `keys` fetched: at once, then every `refresh`, sooner when a request asks; after a
/// failure, again after 1 s, doubling up to a minute. Runs until the process ends.
pub(crate) async fn run(keys: Arc<IssuerKeys>, fetcher: Fetcher, refresh: Duration) {
    let mut retry = Duration::from_secs(1);
    loop {
        let next = match fetcher.fetch().await {
            Ok(set) => {
                let changed = keys.current().is_none_or(|current| *current != set);
                if changed {
                    tracing::info!(issuer = %fetcher.issuer, keys = set.len(), "issuer signing keys loaded");
                }
                keys.store(set);
                retry = Duration::from_secs(1);
                refresh
            }
            Err(err) => {
                let cached = keys.current().is_some();
                tracing::warn!(issuer = %fetcher.issuer, error = %err, cached,
                    "issuer signing keys could not be fetched; retrying");
                let wait = retry;
                retry = (retry * 2).min(MAX_RETRY);
                wait.min(refresh)
            }
        };
        keys.fetched.send_modify(|n| *n += 1);
        tokio::select! {
            () = tokio::time::sleep(next) => {}
            () = keys.wake.notified() => {}
        }
    }
}
