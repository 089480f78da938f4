//! The Azure credential keyward reads Key Vault with: a managed identity (the Container Apps /
//! App Service identity endpoint, or IMDS), or AKS workload identity.
//!
//! Workload identity exchanges the Kubernetes service account token in
//! `AZURE_FEDERATED_TOKEN_FILE` for an Entra ID token at
//! `{authority_host}/{AZURE_TENANT_ID}/oauth2/v2.0/token` (the SDK's
//! `ClientAssertionCredential`). The file is read again for every token request, so a token
//! the kubelet rotated is used as soon as a new access token is needed; the SDK's own
//! `WorkloadIdentityCredential` keeps a read for ten minutes. The file's content is never
//! logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{ClientMethodOptions, ClientOptions};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
};

use super::azure_error::{setup, KeyVaultError};
use crate::config::{CredentialKind, KeyVaultConfig};

/// The credential `config` selects, on the transport in `client_options`.
pub(super) fn credential(
    config: &KeyVaultConfig,
    client_options: ClientOptions,
) -> Result<Arc<dyn TokenCredential>, KeyVaultError> {
    let workload = match config.credential {
        CredentialKind::WorkloadIdentity => true,
        CredentialKind::ManagedIdentity => false,
        CredentialKind::Auto => std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_some(),
    };
    if workload {
        workload_identity(config, client_options)
    } else {
        let options = ManagedIdentityCredentialOptions {
            user_assigned_id: config.client_id.clone().map(UserAssignedId::ClientId),
            client_options,
        };
        let credential = ManagedIdentityCredential::new(Some(options))
            .map_err(|e| setup("the managed identity credential", &e))?;
        let endpoint = if std::env::var_os("IDENTITY_ENDPOINT").is_some() {
            "identity_endpoint"
        } else {
            "imds"
        };
        tracing::info!(credential = "managed_identity", source = endpoint, "Key Vault credential");
        Ok(credential)
    }
}

/// The workload identity credential: the SDK's client assertion flow, fed by
/// [`FederatedTokenFile`], against `secrets.authority_host` when set (otherwise the SDK's
/// default: `AZURE_AUTHORITY_HOST`, else the public cloud). The cloud configuration is given to
/// the credential only: the Key Vault client keeps its defaults.
fn workload_identity(
    config: &KeyVaultConfig,
    mut client_options: ClientOptions,
) -> Result<Arc<dyn TokenCredential>, KeyVaultError> {
    let env = |name: &'static str| {
        std::env::var(name).ok().filter(|v| !v.is_empty()).ok_or(KeyVaultError::MissingEnv(name))
    };
    let tenant_id = env("AZURE_TENANT_ID")?;
    let client_id = match &config.client_id {
        Some(id) => id.clone(),
        None => env("AZURE_CLIENT_ID")?,
    };
    let path = PathBuf::from(env("AZURE_FEDERATED_TOKEN_FILE")?);
    // Fail at start, as the SDK's own credential does, when the file is not there at all.
    FederatedTokenFile::read(&path)
        .map_err(|problem| KeyVaultError::TokenFile { path: path.clone(), problem })?;
    if let Some(host) = &config.authority_host {
        let mut custom = CustomConfiguration::default();
        custom.authority_host = host.clone();
        client_options.cloud = Some(Arc::new(CloudConfiguration::from(custom)));
    }
    let options = ClientAssertionCredentialOptions { client_options };
    let credential = ClientAssertionCredential::new(
        tenant_id,
        client_id,
        FederatedTokenFile { path },
        Some(options),
    )
    .map_err(|e| setup("the workload identity credential", &e))?;
    let authority = if config.authority_host.is_some() {
        "config"
    } else if std::env::var_os("AZURE_AUTHORITY_HOST").is_some() {
        "env"
    } else {
        "public_cloud"
    };
    tracing::info!(credential = "workload_identity", authority, "Key Vault credential");
    Ok(credential)
}

/// The Kubernetes service account token projected into the pod, read afresh for each token
/// request (the SDK asks only when its cached access token is within 5 minutes of expiry).
struct FederatedTokenFile {
    path: PathBuf,
}

impl std::fmt::Debug for FederatedTokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederatedTokenFile").field("path", &self.path).finish()
    }
}

impl FederatedTokenFile {
    /// The token, surrounding whitespace removed (a JWT has none); the error says why not,
    /// without the content.
    fn read(path: &Path) -> Result<zeroize::Zeroizing<String>, String> {
        let raw = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                "not UTF-8".to_owned()
            } else {
                e.kind().to_string()
            }
        })?);
        let token = raw.trim();
        if token.is_empty() {
            return Err("empty".into());
        }
        Ok(zeroize::Zeroizing::new(token.to_owned()))
    }
}

#[async_trait::async_trait]
impl ClientAssertion for FederatedTokenFile {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        let path = self.path.clone();
        let read = tokio::task::spawn_blocking(move || FederatedTokenFile::read(&path)).await;
        match read {
            Ok(Ok(token)) => Ok(token.to_string()),
            Ok(Err(problem)) => {
                tracing::warn!(path = %self.path.display(), %problem, "cannot read the federated token file");
                Err(azure_core::Error::with_message(
                    ErrorKind::Credential,
                    "cannot read the federated token file",
                ))
            }
            Err(_) => Err(azure_core::Error::with_message(
                ErrorKind::Credential,
                "reading the federated token file was cancelled",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::transport::AzureTransport;
    use azure_core::http::Transport;

    fn transport_options() -> ClientOptions {
        let transport = AzureTransport::new(None, None).unwrap();
        ClientOptions { transport: Some(Transport::new(Arc::new(transport))), ..Default::default() }
    }

    #[test]
    fn an_authority_host_with_a_port_keeps_it_in_the_token_url() {
        for host in ["https://127.0.0.1:8443", "https://127.0.0.1:8443/"] {
            let mut options = transport_options();
            let mut custom = CustomConfiguration::default();
            custom.authority_host = host.into();
            options.cloud = Some(Arc::new(custom.into()));
            let credential = ClientAssertionCredential::new(
                "tenant-1".into(),
                "client-1".into(),
                FederatedTokenFile { path: "/nonexistent".into() },
                Some(ClientAssertionCredentialOptions { client_options: options }),
            )
            .unwrap();
            // The SDK's Debug shows the endpoint it will POST to.
            let debug = format!("{credential:?}");
            assert!(debug.contains("port: Some(8443)"), "{debug}");
            assert!(debug.contains(r#"path: "/tenant-1/oauth2/v2.0/token""#), "{debug}");
        }
    }

    #[tokio::test]
    async fn the_federated_token_file_is_read_for_every_request() {
        let dir = std::env::temp_dir().join(format!("keyward-fed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "first.jwt.token\n").unwrap();
        let file = FederatedTokenFile { path: path.clone() };
        assert_eq!(file.secret(None).await.unwrap(), "first.jwt.token");
        std::fs::write(&path, "second.jwt.token").unwrap();
        assert_eq!(file.secret(None).await.unwrap(), "second.jwt.token");
        std::fs::write(&path, " \n").unwrap();
        assert_eq!(FederatedTokenFile::read(&path).unwrap_err(), "empty");
        std::fs::remove_file(&path).unwrap();
        let err = file.secret(None).await.unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Credential));
        assert!(!err.to_string().contains("jwt"), "{err}");
        let _ = std::fs::remove_dir(&dir);
    }
}
