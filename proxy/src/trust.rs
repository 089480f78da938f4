//! What keyward trusts when it is the TLS client (egress upstreams, Key Vault): the public
//! webpki roots plus an optional extra CA file, with the ring provider. SNI and hostname
//! verification are rustls defaults and are never turned off.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// An extra CA file that cannot be used. Names the file only.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// Unreadable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not PEM certificates.
    #[error("{path}: no usable PEM CA certificate")]
    Invalid {
        /// The file.
        path: PathBuf,
    },
}

/// A client configuration trusting the public roots and the certificates in `extra_ca`.
pub(crate) fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, TrustError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        let invalid = || TrustError::Invalid { path: path.to_owned() };
        let pem = std::fs::read(path)
            .map_err(|source| TrustError::Read { path: path.to_owned(), source })?;
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|_| invalid())?;
        if certs.is_empty() {
            return Err(invalid());
        }
        for cert in certs {
            roots.add(cert).map_err(|_| invalid())?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("keyward-trust-{}", std::process::id()));
        std::fs::write(&path, "not a certificate").unwrap();
        assert!(matches!(client_config(Some(&path)), Err(TrustError::Invalid { .. })));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(client_config(Some(&path)), Err(TrustError::Read { .. })));
        assert!(client_config(None).is_ok());
    }
}
