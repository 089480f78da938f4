//! `[secrets]`: where secret values come from. Names and places only, never a value.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::url::{self, CheckedUrl};
use super::{duration, invalid, ConfigError};

/// `secrets.source` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum SourceKind {
    File,
    Keyvault,
}

/// Where secrets come from, with what that source needs.
#[derive(Debug)]
pub enum SecretSource {
    /// One file per secret in `dir`.
    File {
        /// The directory (a Kubernetes Secret volume, a CSI mount).
        dir: PathBuf,
    },
    /// Azure Key Vault through a managed identity or workload identity.
    KeyVault(Box<KeyVaultConfig>),
}

/// `[secrets]`, checked: the source and the lifecycle settings every source shares.
#[derive(Debug)]
pub struct SecretsConfig {
    /// The source.
    pub source: SecretSource,
    /// Full reload period (Key Vault).
    pub refresh_interval: Duration,
    /// How often the file source looks for changed files.
    pub watch_interval: Duration,
    /// How long a replaced client key stays accepted.
    pub rotation_overlap: Duration,
}

impl SecretsConfig {
    /// The secret directory, for the file source.
    pub fn dir(&self) -> Option<&std::path::Path> {
        match &self.source {
            SecretSource::File { dir } => Some(dir),
            SecretSource::KeyVault(_) => None,
        }
    }

    /// The Key Vault settings, for the Key Vault source.
    pub fn keyvault(&self) -> Option<&KeyVaultConfig> {
        match &self.source {
            SecretSource::KeyVault(config) => Some(config),
            SecretSource::File { .. } => None,
        }
    }
}

/// The Key Vault source's settings.
#[derive(Debug)]
pub struct KeyVaultConfig {
    /// `https://<vault>.vault.azure.net/`.
    pub vault_url: CheckedUrl,
    /// Connect to this address for the vault's host instead of resolving it (a private
    /// endpoint without DNS, a local emulator); TLS still verifies the vault's name.
    pub vault_address: Option<std::net::IpAddr>,
    /// Azure credential choice.
    pub credential: CredentialKind,
    /// User-assigned identity client id (a GUID).
    pub client_id: Option<String>,
    /// Entra ID authority host for workload identity; unset: the `AZURE_AUTHORITY_HOST`
    /// variable, else the Azure public cloud.
    pub authority_host: Option<String>,
    /// Extra CA for every Azure call (vault, identity endpoint, Entra ID).
    pub ca_file: Option<PathBuf>,
    /// Check the vault challenge's resource against the vault host.
    pub verify_challenge_resource: bool,
    /// How long a replaced version stays accepted.
    pub rotation_overlap: Duration,
}

/// Which Azure credential reads the vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// Workload identity when its variables are set, managed identity otherwise.
    Auto,
    /// Container Apps / App Service identity endpoint, or IMDS.
    ManagedIdentity,
    /// AKS workload identity (federated token file).
    WorkloadIdentity,
}

/// `[secrets]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecrets {
    /// `file` or `keyvault`.
    pub source: SourceKind,
    /// Directory of secret files (`source = "file"`).
    pub dir: Option<PathBuf>,
    /// Vault URL (`source = "keyvault"`).
    #[serde(default, deserialize_with = "vault_url")]
    pub vault_url: Option<CheckedUrl>,
    /// Connect to this address for the vault's host instead of resolving it (a private
    /// endpoint without DNS, a local emulator); TLS still verifies the vault's name.
    pub vault_address: Option<std::net::IpAddr>,
    /// Full reload period.
    #[serde(default = "refresh_interval", with = "duration")]
    pub refresh_interval: Duration,
    /// How often the file source looks for changed files.
    #[serde(default = "watch_interval", with = "duration")]
    pub watch_interval: Duration,
    /// How long a replaced client key stays accepted.
    #[serde(default = "rotation_overlap", with = "duration")]
    pub rotation_overlap: Duration,
    /// Azure credential choice.
    #[serde(default = "credential")]
    pub credential: CredentialKind,
    /// User-assigned identity client id.
    pub client_id: Option<String>,
    /// Entra ID authority host for workload identity (sovereign clouds, tests); unset: the
    /// `AZURE_AUTHORITY_HOST` variable, else the Azure public cloud.
    pub authority_host: Option<String>,
    /// Extra CA for every Azure call (vault, identity endpoint, Entra ID).
    pub ca_file: Option<PathBuf>,
    /// Check the vault challenge's resource against the vault host.
    #[serde(default = "yes")]
    pub verify_challenge_resource: bool,
}

impl TryFrom<RawSecrets> for SecretsConfig {
    type Error = ConfigError;

    fn try_from(secrets: RawSecrets) -> Result<Self, ConfigError> {
        for (key, value) in [
            ("secrets.refresh_interval", secrets.refresh_interval),
            ("secrets.watch_interval", secrets.watch_interval),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be longer than zero"));
            }
        }
        let source = match secrets.source {
            SourceKind::File => {
                let Some(dir) = secrets.dir else {
                    return Err(invalid("secrets.dir", "required when source = \"file\""));
                };
                SecretSource::File { dir }
            }
            SourceKind::Keyvault => {
                let Some(vault_url) = secrets.vault_url else {
                    return Err(invalid(
                        "secrets.vault_url",
                        "required when source = \"keyvault\"",
                    ));
                };
                if let Some(host) = &secrets.authority_host {
                    check_authority_host(host)?;
                    if secrets.credential == CredentialKind::ManagedIdentity {
                        return Err(invalid(
                            "secrets.authority_host",
                            "only used by workload identity; not with credential = \"managed_identity\"",
                        ));
                    }
                }
                if let Some(id) = &secrets.client_id {
                    let guid = id.len() == 36
                        && id.bytes().enumerate().all(|(i, b)| match i {
                            8 | 13 | 18 | 23 => b == b'-',
                            _ => b.is_ascii_hexdigit(),
                        });
                    if !guid {
                        return Err(invalid("secrets.client_id", "must be a GUID"));
                    }
                }
                SecretSource::KeyVault(Box::new(KeyVaultConfig {
                    vault_url,
                    vault_address: secrets.vault_address,
                    credential: secrets.credential,
                    client_id: secrets.client_id,
                    authority_host: secrets.authority_host,
                    ca_file: secrets.ca_file,
                    verify_challenge_resource: secrets.verify_challenge_resource,
                    rotation_overlap: secrets.rotation_overlap,
                }))
            }
        };
        Ok(SecretsConfig {
            source,
            refresh_interval: secrets.refresh_interval,
            watch_interval: secrets.watch_interval,
            rotation_overlap: secrets.rotation_overlap,
        })
    }
}

/// An authority host is `https://host[:port]` (see [`url::AUTHORITY_HOST`]).
fn check_authority_host(host: &str) -> Result<(), ConfigError> {
    CheckedUrl::parse(host, &url::AUTHORITY_HOST)
        .map(drop)
        .map_err(|problem| invalid("secrets.authority_host", problem))
}

fn vault_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<CheckedUrl>, D::Error> {
    url::deserialize(d, &url::VAULT).map(Some)
}

fn refresh_interval() -> Duration {
    Duration::from_secs(60)
}

fn watch_interval() -> Duration {
    Duration::from_secs(2)
}

fn rotation_overlap() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn credential() -> CredentialKind {
    CredentialKind::Auto
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn with_secrets(secrets: &str) -> Result<Config, String> {
        let text = format!(
            "[ingress]\n[[ingress.clients]]\nid = \"c\"\nsecret = \"client\"\n\
             [secrets]\nsource = \"keyvault\"\nvault_url = \"https://kv.vault.azure.net/\"\n{secrets}"
        );
        Config::parse(&text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_authority_host_is_unset_by_default() {
        let config = with_secrets("").unwrap();
        let keyvault = config.secrets.keyvault().unwrap();
        assert_eq!(keyvault.authority_host, None);
        assert_eq!(keyvault.credential, CredentialKind::Auto);
    }

    #[test]
    fn sovereign_and_local_authority_hosts_are_accepted() {
        for host in [
            "https://login.microsoftonline.us",
            "https://login.chinacloudapi.cn/",
            "https://127.0.0.1:8443",
            "https://localhost:8443/",
        ] {
            let config = with_secrets(&format!("authority_host = \"{host}\"\n"))
                .unwrap_or_else(|e| panic!("{host}: {e}"));
            assert_eq!(config.secrets.keyvault().unwrap().authority_host.as_deref(), Some(host));
            let explicit =
                format!("credential = \"workload_identity\"\nauthority_host = \"{host}\"\n");
            assert!(with_secrets(&explicit).is_ok(), "{host}");
        }
    }

    #[test]
    fn a_bad_authority_host_is_named_without_its_value() {
        for host in [
            "http://login.microsoftonline.us",
            "login.microsoftonline.us",
            "https://login.microsoftonline.com/common",
            "https://login.microsoftonline.com/?x=sk-live-1",
            "https://user:sk-live-1@login.microsoftonline.com",
            "https://login.microsoftonline.com/#frag",
            "https://",
            "",
        ] {
            let err = with_secrets(&format!("authority_host = \"{host}\"\n")).unwrap_err();
            assert!(err.starts_with("secrets.authority_host: must be https://"), "{host}: {err}");
            assert!(!err.contains("sk-live-1"), "{err}");
        }
    }

    #[test]
    fn an_authority_host_with_managed_identity_is_refused() {
        let text = "credential = \"managed_identity\"\nauthority_host = \"https://login.microsoftonline.us\"\n";
        let err = with_secrets(text).unwrap_err();
        assert!(err.starts_with("secrets.authority_host: only used by workload identity"), "{err}");
    }
}
