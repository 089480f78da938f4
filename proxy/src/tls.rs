//! TLS termination for the ingress: a certificate resolver whose key pair is re-read from disk
//! when either file changes, so a renewed certificate needs no restart.
//!
//! The private key is read into a zeroizing buffer and handed to rustls; it is never logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

/// Why a certificate or key could not be used. Names the file, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM certificate chain or key.
    #[error("{path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: &'static str,
    },
}

/// The current key pair, swapped whole on reload.
#[derive(Debug)]
pub(crate) struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ReloadingCert {
    /// Loads the pair once; fails when either file is unusable.
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = read_pair(&provider, cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: ArcSwap::from_pointee(pair),
        }))
    }

    /// A rustls acceptor offering h2 and http/1.1 with this resolver.
    pub(crate) fn acceptor(self: &Arc<Self>) -> TlsAcceptor {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }

    /// Re-reads the pair whenever a file's modification time changes. A pair that fails to load
    /// is logged and the previous one kept.
    pub(crate) async fn watch(self: Arc<Self>, every: Duration) {
        let mut seen = (mtime(&self.cert), mtime(&self.key));
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = (mtime(&self.cert), mtime(&self.key));
            if now == seen {
                continue;
            }
            seen = now;
            match read_pair(&self.provider, &self.cert, &self.key) {
                Ok(pair) => {
                    self.current.store(Arc::new(pair));
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                }
                Err(err) => tracing::error!(error = %err, "TLS certificate not reloaded"),
            }
        }
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read_pair(provider: &CryptoProvider, cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path)
            .map(Zeroizing::new)
            .map_err(|source| TlsError::Read { path: path.to_owned(), source })
    };
    let invalid = |path: &Path, problem| TlsError::Invalid { path: path.to_owned(), problem };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|_| invalid(cert, "not a PEM certificate chain"))?;
    if chain.is_empty() {
        return Err(invalid(cert, "no certificate in the file"));
    }
    let der = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|_| invalid(key, "not a PEM private key"))?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|_| invalid(key, "unsupported private key"))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match().map_err(|_| invalid(key, "the key does not match the certificate"))?;
    Ok(pair)
}
