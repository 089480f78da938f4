//! The secret store: immutable snapshots of every referenced secret, swapped atomically.
//!
//! A request loads one `Arc<Snapshot>` and sees one consistent set of values for its whole
//! life; a reload builds a new snapshot beside it and swaps it in. A replaced value stays in
//! the snapshot as a previous version until the rotation overlap ends, so clients can move to a
//! new key without a failed request. Nothing here formats a value.

mod azure_error;
mod credential;
mod file;
mod keyvault;
mod refresh;
mod transport;
mod value;
mod versions;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

pub use azure_error::KeyVaultError;
pub use file::FileSource;
pub use keyvault::KeyVaultSource;
pub use refresh::{run, Source};
pub use value::Secret;

/// One secret's accepted values: the current one and, during the rotation overlap, the ones
/// it replaced.
#[derive(Debug, Clone)]
pub struct Versions {
    /// The newest value.
    pub current: Secret,
    /// When the current value stops being accepted (its `exp`), if ever.
    pub current_until: Option<Instant>,
    /// Replaced values and the instant each stops being accepted.
    pub previous: Vec<(Secret, Instant)>,
}

impl Versions {
    /// True when both hold the same values in the same order, ending within a second of each
    /// other (ends are recomputed from attributes at every load).
    fn same_as(&self, other: &Versions) -> bool {
        let close =
            |a: Instant, b: Instant| a.max(b).duration_since(a.min(b)) < Duration::from_secs(1);
        let ends_match = match (self.current_until, other.current_until) {
            (Some(a), Some(b)) => close(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        self.current == other.current
            && ends_match
            && self.previous.len() == other.previous.len()
            && self.previous.iter().zip(&other.previous).all(|(a, b)| a.0 == b.0 && close(a.1, b.1))
    }
}

/// Every loaded secret at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    secrets: HashMap<String, Versions>,
    missing: Vec<String>,
    loaded_at: Option<SystemTime>,
}

impl Snapshot {
    /// The values of `name`, if it is loaded.
    pub fn get(&self, name: &str) -> Option<&Versions> {
        self.secrets.get(name)
    }

    /// Every loaded secret's values.
    pub fn values(&self) -> impl Iterator<Item = &Versions> {
        self.secrets.values()
    }

    /// Every loaded secret, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Versions)> {
        self.secrets.iter().map(|(name, versions)| (name.as_str(), versions))
    }

    /// Names that are referenced but could not be loaded, sorted.
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// True when every referenced secret has a value.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// When the source last answered for every secret, if it ever did; its age is how stale
    /// the snapshot may be during an outage.
    pub fn loaded_at(&self) -> Option<SystemTime> {
        self.loaded_at
    }
}

/// What a source said about one secret in one load.
#[derive(Debug)]
pub enum Loaded {
    /// The value; replaced values overlap as the store's rotation overlap says (file source).
    Value(Secret),
    /// Every accepted version with its end, as the source decided (Key Vault, whose version
    /// attributes carry the overlap across restarts).
    Versions(Versions),
    /// The source answered that the secret does not exist (or is empty): it is removed.
    Missing,
    /// The source could not answer (I/O error, outage): the last good value is kept.
    Unavailable,
}

/// Something derived from the secrets (the client keyring, the egress credentials, the
/// redaction patterns, and whatever comes next), rebuilt from every new snapshot before that
/// snapshot is published: a request never meets a snapshot newer than what it is checked by.
pub trait Consumer: Send + Sync {
    /// Rebuilds from `snapshot`.
    fn rebuild(&self, snapshot: &Snapshot);
}

/// Serves the current snapshot. Its consumers are rebuilt from a new snapshot before it becomes
/// visible, so readiness never runs ahead of the keyring.
pub struct SecretStore {
    current: ArcSwap<Snapshot>,
    consumers: Vec<Arc<dyn Consumer>>,
    reload: Notify,
    names: Vec<String>,
    overlap: Duration,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretStore").field("names", &self.names).finish_non_exhaustive()
    }
}

impl SecretStore {
    /// A store for `names`, empty (and so not ready) until the first load.
    pub fn new(mut names: Vec<String>, overlap: Duration) -> Self {
        names.sort();
        names.dedup();
        let empty = Snapshot { missing: names.clone(), ..Snapshot::default() };
        Self {
            current: ArcSwap::from_pointee(empty),
            consumers: Vec::new(),
            reload: Notify::new(),
            names,
            overlap,
        }
    }

    /// Rebuilds `consumers`, in order, from every new snapshot that changed anything, before
    /// it is published.
    pub fn with_consumers(mut self, consumers: Vec<Arc<dyn Consumer>>) -> Self {
        self.consumers = consumers;
        self
    }

    /// The snapshot to use for one request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Every referenced name.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Asks the refresh task for a reload now (SIGHUP, admin call).
    pub fn request_reload(&self) {
        self.reload.notify_one();
    }

    pub(crate) async fn reload_requested(&self) {
        self.reload.notified().await
    }

    /// Merges one load into a new snapshot and publishes it if anything changed. Returns the
    /// names that changed value.
    pub fn apply(&self, results: Vec<(String, Loaded)>, now: Instant) -> Vec<String> {
        let old = self.current.load();
        let mut secrets = HashMap::with_capacity(results.len());
        let mut missing = Vec::new();
        let mut changed = Vec::new();
        let mut expired_any = false;
        let mut answered = true;
        for (name, loaded) in results {
            let before = old.secrets.get(&name);
            let versions = match (loaded, before) {
                (Loaded::Value(value), Some(before)) if value == before.current => {
                    let mut kept = before.clone();
                    let n = kept.previous.len();
                    kept.previous.retain(|(_, until)| *until > now);
                    expired_any |= kept.previous.len() != n;
                    Some(kept)
                }
                (Loaded::Value(value), Some(before)) => {
                    changed.push(name.clone());
                    let mut previous = vec![(before.current.clone(), now + self.overlap)];
                    previous.extend(before.previous.iter().filter(|(_, u)| *u > now).cloned());
                    if self.overlap.is_zero() {
                        previous.clear();
                    }
                    Some(Versions { current: value, current_until: None, previous })
                }
                (Loaded::Value(value), None) => {
                    changed.push(name.clone());
                    Some(Versions { current: value, current_until: None, previous: Vec::new() })
                }
                (Loaded::Versions(versions), before) => {
                    if before.is_none_or(|b| !b.same_as(&versions)) {
                        changed.push(name.clone());
                    }
                    Some(versions)
                }
                (Loaded::Missing, before) => {
                    if before.is_some() {
                        changed.push(name.clone());
                    }
                    None
                }
                (Loaded::Unavailable, before) => {
                    answered = false;
                    before.cloned()
                }
            };
            match versions {
                Some(v) => {
                    secrets.insert(name, v);
                }
                None => missing.push(name),
            }
        }
        missing.sort();
        let publish = !changed.is_empty() || expired_any || missing != old.missing;
        let loaded_at = if answered { Some(SystemTime::now()) } else { old.loaded_at };
        let snapshot = Snapshot { secrets, missing, loaded_at };
        if publish {
            for consumer in &self.consumers {
                consumer.rebuild(&snapshot);
            }
        }
        self.current.store(Arc::new(snapshot));
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Loaded {
        Loaded::Value(Secret::from_string(text.to_owned()))
    }

    fn store() -> SecretStore {
        SecretStore::new(vec!["b".into(), "a".into()], Duration::from_secs(60))
    }

    #[test]
    fn empty_until_loaded_and_incomplete_while_missing() {
        let store = store();
        assert!(!store.snapshot().is_complete());
        assert_eq!(store.snapshot().missing(), ["a", "b"]);
        let now = Instant::now();
        store.apply(vec![("a".into(), value("1")), ("b".into(), Loaded::Missing)], now);
        assert!(!store.snapshot().is_complete());
        assert_eq!(store.snapshot().missing(), ["b"]);
        store.apply(vec![("a".into(), value("1")), ("b".into(), value("2"))], now);
        assert!(store.snapshot().is_complete());
    }

    #[test]
    fn a_new_value_keeps_the_old_one_for_the_overlap() {
        let store = store();
        let t0 = Instant::now();
        store.apply(vec![("a".into(), value("old")), ("b".into(), value("x"))], t0);
        let changed = store.apply(vec![("a".into(), value("new")), ("b".into(), value("x"))], t0);
        assert_eq!(changed, ["a"]);
        let snap = store.snapshot();
        let a = snap.get("a").unwrap();
        assert_eq!(a.current.expose(), b"new");
        assert_eq!(a.previous.len(), 1);
        assert_eq!(a.previous[0].0.expose(), b"old");
        assert_eq!(a.previous[0].1, t0 + Duration::from_secs(60));
        // After the overlap the previous value is dropped at the next load.
        let later = t0 + Duration::from_secs(61);
        store.apply(vec![("a".into(), value("new")), ("b".into(), value("x"))], later);
        assert!(store.snapshot().get("a").unwrap().previous.is_empty());
    }

    #[test]
    fn an_unavailable_source_keeps_the_last_good_value() {
        struct Counter(std::sync::atomic::AtomicUsize);
        impl Consumer for Counter {
            fn rebuild(&self, _: &Snapshot) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let calls = Arc::new(Counter(std::sync::atomic::AtomicUsize::new(0)));
        let store = store().with_consumers(vec![calls.clone()]);
        let calls = &calls.0;
        let now = Instant::now();
        store.apply(vec![("a".into(), value("1")), ("b".into(), value("2"))], now);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        store.apply(vec![("a".into(), Loaded::Unavailable), ("b".into(), value("2"))], now);
        assert_eq!(store.snapshot().get("a").unwrap().current.expose(), b"1");
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "nothing changed, no rebuild"
        );
    }

    #[test]
    fn a_removed_secret_is_gone_at_once() {
        let store = store();
        let now = Instant::now();
        store.apply(vec![("a".into(), value("1")), ("b".into(), value("2"))], now);
        store.apply(vec![("a".into(), Loaded::Missing), ("b".into(), value("2"))], now);
        assert!(store.snapshot().get("a").is_none());
        assert!(!store.snapshot().is_complete());
    }
}
