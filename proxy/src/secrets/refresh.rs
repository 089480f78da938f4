//! The refresh task: loads every referenced secret at start, then again on every watch tick,
//! every refresh interval, SIGHUP and admin request, until shutdown.
//!
//! Loading logs names and outcomes, never values.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{FileSource, Loaded, SecretStore};

/// Runs until `shutdown` flips to true. The first load happens before the first await point
/// returns, so readiness reflects the files as soon as the task starts.
pub async fn run(
    store: Arc<SecretStore>,
    source: FileSource,
    watch_interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let start = tokio::time::Instant::now() + watch_interval;
    let mut tick = tokio::time::interval_at(start, watch_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_complete = None;
    loop {
        let results: Vec<_> = store
            .names()
            .iter()
            .map(|name| (name.clone(), source.load(name)))
            .collect();
        report(&results);
        let changed = store.apply(results, Instant::now());
        for name in &changed {
            tracing::info!(secret = %name, "secret loaded or rotated");
        }
        let snapshot = store.snapshot();
        if was_complete != Some(snapshot.is_complete()) {
            if snapshot.is_complete() {
                tracing::info!(
                    secrets = store.names().len(),
                    "every referenced secret is loaded"
                );
            } else {
                tracing::warn!(missing = ?snapshot.missing(), "secrets missing; not ready");
            }
            was_complete = Some(snapshot.is_complete());
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = store.reload_requested() => tracing::info!("secret reload requested"),
            _ = shutdown.changed() => return,
        }
    }
}

fn report(results: &[(String, Loaded)]) {
    for (name, loaded) in results {
        match loaded {
            Loaded::Value(_) => tracing::trace!(secret = %name, "secret read"),
            Loaded::Missing => tracing::debug!(secret = %name, "secret missing"),
            Loaded::Unavailable => {
                tracing::debug!(secret = %name, "secret unavailable; last good value kept")
            }
        }
    }
}
