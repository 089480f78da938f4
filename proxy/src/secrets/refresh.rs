//! The refresh task: loads every referenced secret at start, retries with exponential backoff
//! until every one is loaded, then reloads on every tick, SIGHUP and admin request, until
//! shutdown. While the source is down the last good snapshot keeps serving, and its age is
//! reported.
//!
//! Loading logs names and outcomes, never values.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::{FileSource, KeyVaultSource, Loaded, SecretStore};
use crate::metrics::Metrics;

/// Where secret values come from.
#[derive(Debug)]
pub enum Source {
    /// A directory of files, re-read on every tick.
    File(FileSource),
    /// Azure Key Vault.
    KeyVault(KeyVaultSource),
}

impl Source {
    async fn load(&self, name: &str) -> Loaded {
        match self {
            Source::File(source) => source.load(name),
            Source::KeyVault(source) => source.load(name).await,
        }
    }
}

/// First retry delay after a failed or incomplete load; it doubles up to the interval.
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Runs until `shutdown` flips to true, loading every `interval` once complete.
pub async fn run(
    store: Arc<SecretStore>,
    source: Source,
    interval: Duration,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut retry = FIRST_RETRY;
    let mut was_complete = None;
    loop {
        let mut results = Vec::with_capacity(store.names().len());
        for name in store.names() {
            results.push((name.clone(), source.load(name).await));
        }
        let unavailable = results.iter().filter(|(_, l)| matches!(l, Loaded::Unavailable)).count();
        metrics.record_refresh(unavailable == 0);
        for name in store.apply(results, Instant::now()) {
            tracing::info!(secret = %name, "secret loaded or rotated");
        }
        let snapshot = store.snapshot();
        let complete = snapshot.is_complete();
        if was_complete != Some(complete) {
            if complete {
                tracing::info!(secrets = store.names().len(), "every referenced secret is loaded");
            } else {
                // One line a name: a log pipeline gets plain fields, not a list inside a string.
                for name in snapshot.missing() {
                    tracing::warn!(secret = %name, "secret missing");
                }
                tracing::warn!(missing = snapshot.missing().len(), "secrets missing; not ready");
            }
            was_complete = Some(complete);
        }
        if unavailable > 0 {
            let age = snapshot
                .loaded_at()
                .and_then(|at| SystemTime::now().duration_since(at).ok())
                .map(|age| age.as_secs());
            tracing::warn!(
                unavailable,
                snapshot_age_s = age,
                "secret source unavailable; serving the last good snapshot"
            );
        }
        let wait = if complete && unavailable == 0 {
            retry = FIRST_RETRY;
            interval
        } else {
            let wait = retry.min(interval);
            retry = (retry * 2).min(interval);
            wait
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = store.reload_requested() => tracing::info!("secret reload requested"),
            _ = shutdown.changed() => return,
        }
    }
}
