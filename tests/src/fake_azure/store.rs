//! The vault's contents: secrets, their versions and attributes, and paging through them.
//!
//! Values live in memory only and never leave this module except in a get's response body.

use std::collections::BTreeMap;

/// Attributes of one secret version, as Key Vault stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes {
    /// Whether the version may be read: a get of a disabled version answers 403.
    pub enabled: bool,
    /// `nbf`, epoch seconds. Reported, never enforced on get (Key Vault does not either).
    pub not_before: Option<i64>,
    /// `exp`, epoch seconds. Reported, never enforced on get (Key Vault does not either).
    pub expires: Option<i64>,
}

impl Default for Attributes {
    /// Enabled, with neither `nbf` nor `exp`.
    fn default() -> Self {
        Self { enabled: true, not_before: None, expires: None }
    }
}

/// One version of a secret.
pub(super) struct Version {
    /// 32 lowercase hex digits.
    pub(super) id: String,
    pub(super) value: String,
    pub(super) attributes: Attributes,
    pub(super) created: i64,
    pub(super) updated: i64,
}

/// A secret: its name as first written, and its versions in creation order.
pub(super) struct Secret {
    pub(super) name: String,
    versions: Vec<Version>,
}

impl Secret {
    /// The most recently created version, enabled or not: Key Vault's "current" version.
    pub(super) fn latest(&self) -> &Version {
        self.versions.last().expect("a secret has a version")
    }

    /// The version `id` (compared case-insensitively, as Key Vault does).
    pub(super) fn version(&self, id: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.id.eq_ignore_ascii_case(id))
    }
}

/// One page of a listing, and the key of its last item when more follow.
pub(super) struct Page<'a, T> {
    pub(super) items: Vec<&'a T>,
    pub(super) next: Option<String>,
}

/// All secrets, keyed by lowercased name: Key Vault object names are case-insensitive.
#[derive(Default)]
pub(super) struct Store {
    secrets: BTreeMap<String, Secret>,
}

/// Whether Key Vault would accept `name`: 1 to 127 ASCII letters, digits and dashes.
pub(super) fn valid_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Store {
    /// Adds version `id` holding `value` to secret `name`, creating the secret if needed.
    pub(super) fn insert(
        &mut self,
        name: &str,
        id: String,
        value: &str,
        attributes: Attributes,
        now: i64,
    ) {
        let secret = self
            .secrets
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| Secret { name: name.to_owned(), versions: Vec::new() });
        secret.versions.push(Version {
            id,
            value: value.to_owned(),
            attributes,
            created: now,
            updated: now,
        });
    }

    /// Replaces the attributes of one version; false when there is no such version.
    pub(super) fn update(
        &mut self,
        name: &str,
        version: &str,
        attributes: Attributes,
        now: i64,
    ) -> bool {
        let Some(secret) = self.secrets.get_mut(&name.to_ascii_lowercase()) else {
            return false;
        };
        let Some(v) = secret.versions.iter_mut().find(|v| v.id.eq_ignore_ascii_case(version))
        else {
            return false;
        };
        v.attributes = attributes;
        v.updated = now;
        true
    }

    /// Removes a secret and all its versions; false when there was none.
    pub(super) fn delete(&mut self, name: &str) -> bool {
        self.secrets.remove(&name.to_ascii_lowercase()).is_some()
    }

    /// The secret `name`, if it exists.
    pub(super) fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets.get(&name.to_ascii_lowercase())
    }

    /// Up to `max` secrets in name order, starting after the secret keyed `after`.
    pub(super) fn secrets_page(&self, after: Option<&str>, max: usize) -> Page<'_, Secret> {
        page(self.secrets.iter().map(|(key, s)| (key.as_str(), s)), after, max)
    }

    /// Up to `max` versions of `secret` in version-id order (the order Key Vault lists them
    /// in), starting after version `after`.
    pub(super) fn versions_page<'a>(
        secret: &'a Secret,
        after: Option<&str>,
        max: usize,
    ) -> Page<'a, Version> {
        let mut versions: Vec<&Version> = secret.versions.iter().collect();
        versions.sort_by(|a, b| a.id.cmp(&b.id));
        page(versions.into_iter().map(|v| (v.id.as_str(), v)), after, max)
    }
}

/// Pages through `(key, item)` pairs sorted by key.
fn page<'a, T: 'a>(
    sorted: impl Iterator<Item = (&'a str, &'a T)>,
    after: Option<&str>,
    max: usize,
) -> Page<'a, T> {
    let mut rest = sorted.skip_while(|(key, _)| after.is_some_and(|after| *key <= after));
    let taken: Vec<(&str, &T)> = rest.by_ref().take(max).collect();
    let next = match (rest.next(), taken.last()) {
        (Some(_), Some((key, _))) => Some((*key).to_owned()),
        _ => None,
    };
    Page { items: taken.into_iter().map(|(_, item)| item).collect(), next }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(names: &[&str]) -> Store {
        let mut store = Store::default();
        for (i, name) in names.iter().enumerate() {
            store.insert(name, format!("{i:032x}"), "v", Attributes::default(), 1);
        }
        store
    }

    #[test]
    fn names_are_case_insensitive_and_keep_their_first_spelling() {
        let mut store = store(&["Db-Password"]);
        store.insert("db-password", "f".repeat(32), "w", Attributes::default(), 2);
        let secret = store.secret("DB-PASSWORD").expect("found");
        assert_eq!(secret.name, "Db-Password");
        assert_eq!(secret.latest().id, "f".repeat(32));
        assert!(secret.version(&"F".repeat(32)).is_some());
    }

    #[test]
    fn pages_follow_markers_to_the_end() {
        let store = store(&["a", "b", "c", "d", "e"]);
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.secrets_page(after.as_deref(), 2);
            seen.extend(page.items.iter().map(|s| s.name.clone()));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn an_exact_last_page_has_no_next() {
        let store = store(&["a", "b"]);
        let page = store.secrets_page(None, 2);
        assert_eq!(page.items.len(), 2);
        assert!(page.next.is_none());
    }

    #[test]
    fn versions_list_in_id_order_not_creation_order() {
        let mut store = Store::default();
        for id in ["c", "a", "b"] {
            store.insert("s", id.repeat(32), "v", Attributes::default(), 1);
        }
        let secret = store.secret("s").expect("found");
        let page = Store::versions_page(secret, None, 10);
        let ids: Vec<&str> = page.items.iter().map(|v| &v.id[..1]).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(&secret.latest().id[..1], "b");
    }

    #[test]
    fn names_are_validated_like_key_vault() {
        assert!(valid_name("api-key-2"));
        assert!(!valid_name(""));
        assert!(!valid_name("under_score"));
        assert!(!valid_name("dot.ted"));
        assert!(!valid_name(&"x".repeat(128)));
    }
}
