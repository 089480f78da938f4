//! Tokens already validated, kept by the SHA-256 of their text (never the text: the cache
//! holds no usable credential) until they expire, so that a client presenting the same token
//! on every request pays for its signature once. A hit is still checked against the clock and
//! against the issuer's current key set: a token whose key was retired is validated again,
//! and refused.
//!
//! Only tokens that passed every check are kept, at most [`CAPACITY`] of them per process;
//! when full, the expired ones go, and if none has, all of them. Each replica keeps its own:
//! the cache changes the cost of a request, never its outcome.

use std::collections::HashMap;
use std::sync::Mutex;

use ring::digest;

use super::Verified;

/// Validated tokens kept at most.
const CAPACITY: usize = 4096;

/// A validated token and the window it stays valid in (its skew applied).
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) verified: Verified,
    /// Position of its issuer.
    pub(super) issuer: usize,
    /// Valid from (`nbf`, `iat`, less the skew), in seconds since the epoch.
    pub(super) from: f64,
    /// Valid until (`exp` plus the skew).
    pub(super) until: f64,
}

/// The SHA-256 of a token's text.
pub(super) type Key = [u8; 32];

/// The cache.
#[derive(Debug, Default)]
pub(super) struct Cache {
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Cache {
    /// The key of `token`.
    pub(super) fn key(token: &str) -> Key {
        let hash = digest::digest(&digest::SHA256, token.as_bytes());
        hash.as_ref().try_into().expect("SHA-256 is 32 bytes")
    }

    /// The entry for `key` if it is valid at `now`.
    pub(super) fn get(&self, key: &Key, now: f64) -> Option<Entry> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(key).filter(|e| e.from <= now && now < e.until).cloned()
    }

    /// Keeps a validated token.
    pub(super) fn insert(&self, key: Key, entry: Entry, now: f64) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| now < e.until);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, entry);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}
