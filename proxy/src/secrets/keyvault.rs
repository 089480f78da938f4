//! The Key Vault source: secrets read with a managed identity (Container Apps / App Service
//! identity endpoint or IMDS) or AKS workload identity, through keyward's own HTTP stack.
//!
//! Which versions are accepted is decided from the versions' attributes (see [`super::versions`]),
//! so it survives a restart: the newest enabled version valid now (`nbf` <= now < `exp`) is
//! current, and each older valid version stays accepted until `rotation_overlap` after the
//! version that replaced it was created. Key Vault does not enforce `enabled`, `nbf` or `exp`
//! on reads; keyward does.
//! Values move from the SDK's `String` into a zeroizing [`Secret`] at once and are cached by
//! version (a version's value never changes). Errors are logged by status and code, never by
//! their text, which may quote a response.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use azure_security_keyvault_secrets::models::SecretClientGetSecretOptions;
use azure_security_keyvault_secrets::{ResourceExt, SecretClient, SecretClientOptions};
use futures::StreamExt;

use super::azure_error::{describe, setup, KeyVaultError};
use super::credential;
use super::transport::AzureTransport;
use super::versions::{accepted, History, VersionInfo};
use super::{Loaded, Versions};
use crate::config::KeyVaultConfig;
use crate::secrets::Secret;

/// Reads secrets from one vault.
pub struct KeyVaultSource {
    client: SecretClient,
    overlap: Duration,
    /// Values by `name/version`.
    cache: Mutex<HashMap<String, Secret>>,
    /// How each secret's versions were ranked when first seen.
    history: Mutex<HashMap<String, History>>,
}

impl std::fmt::Debug for KeyVaultSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVaultSource").field("vault", &self.client.endpoint().as_str()).finish()
    }
}

impl KeyVaultSource {
    /// Builds the credential and the client from validated config.
    pub fn new(config: &KeyVaultConfig) -> Result<Self, KeyVaultError> {
        let vault_url = &config.vault_url;
        let pin = config.vault_address.map(|ip| (vault_url.authority().host().to_owned(), ip));
        let transport = AzureTransport::new(config.ca_file.as_deref(), pin)?;
        let client_options = ClientOptions {
            transport: Some(Transport::new(Arc::new(transport))),
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                max_retries: 3,
                ..Default::default()
            }),
            ..Default::default()
        };
        let credential = credential::credential(config, client_options.clone())?;
        let options = SecretClientOptions {
            client_options,
            verify_challenge_resource: Some(config.verify_challenge_resource),
            ..Default::default()
        };
        let client = SecretClient::new(vault_url.as_str(), credential, Some(options))
            .map_err(|e| setup("the Key Vault client", &e))?;
        Ok(Self {
            client,
            overlap: config.rotation_overlap,
            cache: Mutex::default(),
            history: Mutex::default(),
        })
    }

    /// Loads the accepted versions of `name`.
    pub async fn load(&self, name: &str) -> Loaded {
        let versions = match self.versions(name).await {
            Ok(versions) => versions,
            Err(err) => return failed(name, "list versions", &err),
        };
        // The latest version settles ties in `created`; a disabled latest answers 403 and is
        // simply not preferred.
        let latest = match self.latest(name).await {
            Ok(version) => version,
            Err(err) if err.http_status().map(u16::from) == Some(403) => None,
            Err(err) => return failed(name, "get latest", &err),
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        let chosen = {
            let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            let history = history.entry(name.to_owned()).or_default();
            accepted(history, &versions, latest.as_deref(), now, self.overlap.as_secs() as i64)
        };
        if chosen.is_empty() {
            tracing::warn!(
                secret = name,
                "no version of the secret may be current: none is enabled and unexpired, or \
                 the valid ones were superseded by a newer version (write a new version to \
                 restore one)"
            );
            return Loaded::Missing;
        }
        let mut values = Vec::with_capacity(chosen.len());
        for (version, until) in &chosen {
            match self.value(name, version).await {
                Ok(value) => values.push((value, until.map(|u| instant_at(u, now)))),
                Err(err) => return failed(name, "get version", &err),
            }
        }
        self.prune(name, &chosen);
        let mut values = values.into_iter();
        let (current, current_until) = values.next().expect("at least one chosen version");
        let previous = values.map(|(s, until)| (s, until.expect("older versions end"))).collect();
        Loaded::Versions(Versions { current, current_until, previous })
    }

    async fn versions(&self, name: &str) -> azure_core::Result<Vec<VersionInfo>> {
        let mut pager = self.client.list_secret_properties_versions(name, None)?;
        let mut out = Vec::new();
        while let Some(item) = pager.next().await {
            let item = item?;
            let Some(version) = item.resource_id().ok().and_then(|id| id.version) else { continue };
            let attributes = item.attributes.unwrap_or_default();
            out.push(VersionInfo {
                version,
                enabled: attributes.enabled.unwrap_or(false),
                created: attributes.created.map_or(0, |t| t.unix_timestamp()),
                updated: attributes.updated.map_or(0, |t| t.unix_timestamp()),
                not_before: attributes.not_before.map(|t| t.unix_timestamp()),
                expires: attributes.expires.map(|t| t.unix_timestamp()),
            });
        }
        Ok(out)
    }

    /// The latest version's id, caching its value on the way.
    async fn latest(&self, name: &str) -> azure_core::Result<Option<String>> {
        let mut model = self.client.get_secret(name, None).await?.into_model()?;
        let version = model.resource_id().ok().and_then(|id| id.version);
        if let (Some(version), Some(value)) = (&version, model.value.take()) {
            let value = Secret::from_string(value);
            if !value.is_empty() {
                self.cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(format!("{name}/{version}"), value);
            }
        }
        Ok(version)
    }

    async fn value(&self, name: &str, version: &str) -> azure_core::Result<Secret> {
        let key = format!("{name}/{version}");
        if let Some(cached) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(cached.clone());
        }
        let options = SecretClientGetSecretOptions {
            secret_version: Some(version.to_owned()),
            ..Default::default()
        };
        let mut model = self.client.get_secret(name, Some(options)).await?.into_model()?;
        let value = model
            .value
            .take()
            .map(Secret::from_string)
            .unwrap_or_else(|| Secret::new(zeroize::Zeroizing::new(Vec::new())));
        if value.is_empty() {
            return Err(azure_core::Error::with_message(
                ErrorKind::DataConversion,
                "empty secret value",
            ));
        }
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, value.clone());
        Ok(value)
    }

    fn prune(&self, name: &str, keep: &[(String, Option<i64>)]) {
        let prefix = format!("{name}/");
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|key, _| {
            key.strip_prefix(&prefix).is_none_or(|v| keep.iter().any(|(kept, _)| kept == v))
        });
    }
}

/// A failed load: a secret that does not exist (or may not be read) is missing; an outage
/// keeps the last good value.
fn failed(name: &str, step: &'static str, err: &azure_core::Error) -> Loaded {
    let what = describe(err);
    match err.http_status().map(u16::from) {
        Some(404) => {
            tracing::warn!(secret = name, step, error = %what, "secret not found in Key Vault");
            Loaded::Missing
        }
        Some(403) => {
            tracing::warn!(secret = name, step, error = %what, "access to the secret denied");
            Loaded::Missing
        }
        _ if matches!(err.kind(), ErrorKind::Credential) => {
            tracing::warn!(secret = name, step, error = %what, "Key Vault credential failed");
            Loaded::Unavailable
        }
        _ => {
            tracing::warn!(secret = name, step, error = %what, "Key Vault unavailable");
            Loaded::Unavailable
        }
    }
}

fn instant_at(epoch_secs: i64, now: i64) -> Instant {
    Instant::now() + Duration::from_secs(epoch_secs.saturating_sub(now).max(0) as u64)
}
