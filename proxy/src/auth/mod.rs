//! Client authentication by `X-Api-Key`, in constant time.
//!
//! The presented key and every accepted key are compared as HMAC-SHA-256 digests under a key
//! drawn at start, with `subtle` and no early exit: neither the position of the matching entry
//! nor the length of any key shows in the timing. Accepted keys are digested once per snapshot,
//! never per request. The presented credential is never logged, not even as a digest.

mod limiter;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue, Uri};
use ring::{hmac, rand};
use subtle::{ConditionallySelectable, ConstantTimeEq};

pub use limiter::FailureLimiter;

use crate::config::ClientConfig;
use crate::headers::X_API_KEY;
use crate::secrets::Snapshot;

/// Presented keys longer than this are refused unread (the same 401 as a wrong key).
pub const MAX_KEY_BYTES: usize = 512;

/// Accepted keys shorter than this draw a warning at load.
const MIN_KEY_BYTES: usize = 16;

/// HMAC-SHA-256 under a per-process random key.
#[derive(Debug)]
pub struct Digester(hmac::Key);

impl Digester {
    /// A digester with a fresh random key.
    pub fn random() -> Self {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rand::SystemRandom::new())
            .expect("the system random source failed");
        Self(key)
    }

    /// The digest as four words, so a comparison is four XORs rather than 32 byte steps.
    fn digest(&self, bytes: &[u8]) -> Digest {
        let tag = hmac::sign(&self.0, bytes);
        let mut words = [0u64; 4];
        for (word, chunk) in words.iter_mut().zip(tag.as_ref().chunks_exact(8)) {
            *word = u64::from_ne_bytes(chunk.try_into().expect("8-byte chunk"));
        }
        Digest(words)
    }
}

/// An HMAC-SHA-256 digest.
#[derive(Debug, Clone, Copy)]
struct Digest([u64; 4]);

impl Digest {
    /// Equality without a data-dependent branch: OR of the XORs, tested once.
    fn ct_eq(&self, other: &Digest) -> subtle::Choice {
        let diff = self.0.iter().zip(&other.0).fold(0u64, |acc, (a, b)| acc | (a ^ b));
        diff.ct_eq(&0)
    }
}

/// An authenticated client, as the backend will be told.
#[derive(Debug, Clone)]
pub struct Client {
    /// The configured id.
    pub id: Arc<str>,
    /// The id as a ready `X-Keyward-Client` value.
    pub header: HeaderValue,
    /// Position in the configuration (a metrics label index).
    pub index: usize,
}

#[derive(Debug)]
struct Entry {
    digest: Digest,
    client: u32,
    /// End of the rotation overlap for a replaced key; `None` for a current key.
    until: Option<Instant>,
}

/// The accepted keys of one snapshot, as digests.
#[derive(Debug, Default)]
pub struct Keyring {
    entries: Vec<Entry>,
    clients: Vec<Client>,
}

impl Keyring {
    /// Digests every loaded key of every client in `snapshot`.
    pub fn build(digester: &Digester, clients: &[ClientConfig], snapshot: &Snapshot) -> Self {
        let mut keyring = Keyring::default();
        for (position, config) in clients.iter().enumerate() {
            let Some(versions) = snapshot.get(&config.secret) else {
                continue;
            };
            let index = keyring.clients.len() as u32;
            let header = HeaderValue::from_str(&config.id).expect("client ids are validated");
            keyring.clients.push(Client { id: config.id.as_str().into(), header, index: position });
            if versions.current.len() < MIN_KEY_BYTES {
                tracing::warn!(client = %config.id, secret = %config.secret,
                    "client key is shorter than {MIN_KEY_BYTES} bytes; use a long random key");
            }
            if versions.current.to_header_value().is_none() {
                tracing::warn!(client = %config.id, secret = %config.secret,
                    "client key has bytes no header can carry; it can never match");
            }
            let current = std::iter::once((&versions.current, versions.current_until));
            let previous = versions.previous.iter().map(|(s, until)| (s, Some(*until)));
            for (secret, until) in current.chain(previous) {
                let digest = digester.digest(secret.expose());
                keyring.entries.push(Entry { digest, client: index, until });
            }
        }
        keyring
    }

    /// True when no key at all is loaded: every request must be refused.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The client whose key has `digest`, looking at every entry whatever matches.
    fn identify(&self, digest: &Digest, now: Instant) -> Option<&Client> {
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for entry in &self.entries {
            // Whether an overlap has ended depends on the clock, not on the key: skipping an
            // ended entry reveals nothing about the presented key.
            if entry.until.is_some_and(|until| now >= until) {
                continue;
            }
            let hit = entry.digest.ct_eq(digest);
            index.conditional_assign(&entry.client, hit);
            found |= hit;
        }
        bool::from(found).then(|| &self.clients[index as usize])
    }
}

/// Why a request was not authenticated. Every reason but the last two answers the same 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No `X-Api-Key`.
    Missing,
    /// More than one `X-Api-Key`.
    Repeated,
    /// An `X-Api-Key` longer than [`MAX_KEY_BYTES`].
    Oversize,
    /// A credential in the query string (refused even beside a good header).
    KeyInQuery,
    /// A key that matches no client.
    Invalid,
    /// The peer failed too often; retry after this many seconds.
    RateLimited(u64),
    /// No client key is loaded at all (fail closed: 503).
    NoKeys,
}

impl Denial {
    /// How many kinds there are: the length of [`Self::ALL`], checked by [`Self::index`].
    pub const COUNT: usize = 7;

    /// One of each kind, in [`Self::index`] order (metrics label sets).
    pub const ALL: [Denial; Self::COUNT] = [
        Denial::Missing,
        Denial::Repeated,
        Denial::Oversize,
        Denial::KeyInQuery,
        Denial::Invalid,
        Denial::RateLimited(0),
        Denial::NoKeys,
    ];

    /// The kind's position in [`Self::ALL`]: a new kind does not compile until it has one.
    pub fn index(self) -> usize {
        match self {
            Denial::Missing => 0,
            Denial::Repeated => 1,
            Denial::Oversize => 2,
            Denial::KeyInQuery => 3,
            Denial::Invalid => 4,
            Denial::RateLimited(_) => 5,
            Denial::NoKeys => 6,
        }
    }

    /// A short label for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Denial::Missing => "missing",
            Denial::Repeated => "repeated",
            Denial::Oversize => "oversize",
            Denial::KeyInQuery => "key_in_query",
            Denial::Invalid => "invalid",
            Denial::RateLimited(_) => "rate_limited",
            Denial::NoKeys => "no_keys_loaded",
        }
    }
}

/// Decides who a request comes from.
#[derive(Debug)]
pub struct Authenticator {
    clients: Vec<ClientConfig>,
    digester: Digester,
    keyring: ArcSwap<Keyring>,
    limiter: FailureLimiter,
}

impl Authenticator {
    /// An authenticator for `clients`, with no key loaded (refusing everything) until it is
    /// rebuilt from a snapshot (see [`crate::secrets::Consumer`]).
    pub fn new(limiter: FailureLimiter, clients: Vec<ClientConfig>) -> Self {
        Self { clients, digester: Digester::random(), keyring: ArcSwap::default(), limiter }
    }

    /// Authenticates one request from `peer`.
    pub fn check(&self, headers: &HeaderMap, uri: &Uri, peer: IpAddr) -> Result<Client, Denial> {
        let now = Instant::now();
        if let Err(wait) = self.limiter.check(peer, now) {
            return Err(Denial::RateLimited(wait.as_secs().max(1)));
        }
        let keyring = self.keyring.load();
        if keyring.is_empty() {
            return Err(Denial::NoKeys);
        }
        let outcome = presented_key(headers, uri).and_then(|key| {
            let digest = self.digester.digest(key);
            keyring.identify(&digest, now).cloned().ok_or(Denial::Invalid)
        });
        if outcome.is_err() {
            self.limiter.record_failure(peer, now);
        }
        outcome
    }
}

impl crate::secrets::Consumer for Authenticator {
    /// Re-digests the clients' keys.
    fn rebuild(&self, snapshot: &Snapshot) {
        self.keyring.store(Arc::new(Keyring::build(&self.digester, &self.clients, snapshot)));
    }
}

fn presented_key<'a>(headers: &'a HeaderMap, uri: &Uri) -> Result<&'a [u8], Denial> {
    if uri.query().is_some_and(query_has_credential) {
        return Err(Denial::KeyInQuery);
    }
    let mut values = headers.get_all(X_API_KEY).iter();
    let key = values.next().ok_or(Denial::Missing)?;
    if values.next().is_some() {
        return Err(Denial::Repeated);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Denial::Oversize);
    }
    Ok(key.as_bytes())
}

/// True when a query parameter's name looks like a credential (`api_key`, `apiKey`,
/// `x-api-key`, `subscription-key`, `access_token`, ...), percent-encoding included.
fn query_has_credential(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or_default();
        let mut folded = String::with_capacity(name.len());
        let mut bytes = name.bytes();
        while let Some(b) = bytes.next() {
            let b = if b == b'%' {
                let hex = [bytes.next().unwrap_or(0), bytes.next().unwrap_or(0)];
                std::str::from_utf8(&hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .unwrap_or(0)
            } else {
                b
            };
            if b.is_ascii_alphanumeric() {
                folded.push(b.to_ascii_lowercase() as char);
            }
        }
        matches!(
            folded.as_str(),
            "apikey"
                | "xapikey"
                | "key"
                | "subscriptionkey"
                | "ocpapimsubscriptionkey"
                | "accesstoken"
                | "token"
                | "authorization"
                | "password"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Secret;
    use crate::secrets::{Consumer, Loaded, SecretStore};
    use std::time::Duration;

    const KEY_A: &str = "a-key-of-sufficient-length-0001";
    const KEY_B: &str = "another-key-of-sufficient-len-2";

    fn clients() -> Vec<ClientConfig> {
        ["alpha", "beta"]
            .iter()
            .map(|id| ClientConfig { id: (*id).into(), secret: format!("{id}-key") })
            .collect()
    }

    fn store_with(a: &str, b: &str) -> SecretStore {
        let store =
            SecretStore::new(vec!["alpha-key".into(), "beta-key".into()], Duration::from_secs(60));
        load(&store, a, b);
        store
    }

    fn load(store: &SecretStore, a: &str, b: &str) {
        let value = |s: &str| Loaded::Value(Secret::from_string(s.to_owned()));
        store.apply(
            vec![("alpha-key".into(), value(a)), ("beta-key".into(), value(b))],
            Instant::now(),
        );
    }

    fn auth(store: &SecretStore) -> Authenticator {
        let auth = Authenticator::new(FailureLimiter::new(60, 100), clients());
        auth.rebuild(&store.snapshot());
        auth
    }

    fn request(keys: &[&str], uri: &str) -> (HeaderMap, Uri) {
        let mut headers = HeaderMap::new();
        for key in keys {
            headers.append(X_API_KEY, HeaderValue::from_str(key).unwrap());
        }
        (headers, uri.parse().unwrap())
    }

    fn check(auth: &Authenticator, keys: &[&str], uri: &str) -> Result<String, Denial> {
        let (headers, uri) = request(keys, uri);
        auth.check(&headers, &uri, "127.0.0.1".parse().unwrap()).map(|c| c.id.to_string())
    }

    #[test]
    fn every_denial_kind_has_its_own_place_and_label() {
        for (i, denial) in Denial::ALL.iter().enumerate() {
            assert_eq!(denial.index(), i);
        }
        let labels: std::collections::HashSet<_> = Denial::ALL.iter().map(|d| d.reason()).collect();
        assert_eq!(labels.len(), Denial::COUNT);
    }

    #[test]
    fn each_key_identifies_its_client() {
        let auth = auth(&store_with(KEY_A, KEY_B));
        assert_eq!(check(&auth, &[KEY_A], "/mcp").unwrap(), "alpha");
        assert_eq!(check(&auth, &[KEY_B], "/mcp").unwrap(), "beta");
    }

    #[test]
    fn near_misses_are_refused() {
        let auth = auth(&store_with(KEY_A, KEY_B));
        let one_off = KEY_A.replace('1', "2");
        let shorter = &KEY_A[..KEY_A.len() - 1];
        let longer = format!("{KEY_A}0");
        for key in [one_off.as_str(), shorter, longer.as_str(), "", "x"] {
            assert_eq!(check(&auth, &[key], "/mcp"), Err(Denial::Invalid), "{key:?}");
        }
    }

    #[test]
    fn header_shape_problems_have_their_reasons() {
        let auth = auth(&store_with(KEY_A, KEY_B));
        assert_eq!(check(&auth, &[], "/mcp"), Err(Denial::Missing));
        assert_eq!(check(&auth, &[KEY_A, KEY_A], "/mcp"), Err(Denial::Repeated));
        let huge = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(check(&auth, &[&huge], "/mcp"), Err(Denial::Oversize));
    }

    #[test]
    fn a_key_in_the_query_is_refused_even_with_a_good_header() {
        let auth = auth(&store_with(KEY_A, KEY_B));
        for uri in ["/mcp?api_key=x", "/mcp?a=1&X-Api-Key=x", "/mcp?apiKey", "/mcp?api%5Fkey=x"] {
            assert_eq!(check(&auth, &[KEY_A], uri), Err(Denial::KeyInQuery), "{uri}");
        }
        assert_eq!(check(&auth, &[KEY_A], "/mcp?page=2&keys=3").unwrap(), "alpha");
    }

    #[test]
    fn no_loaded_key_fails_closed() {
        let store = SecretStore::new(vec!["alpha-key".into()], Duration::ZERO);
        let auth = auth(&store);
        assert_eq!(check(&auth, &[KEY_A], "/mcp"), Err(Denial::NoKeys));
    }

    #[test]
    fn a_rotated_key_overlaps_then_expires() {
        let store = store_with(KEY_A, KEY_B);
        let auth = auth(&store);
        load(&store, "alpha-rotated-key-of-good-length", KEY_B);
        auth.rebuild(&store.snapshot());
        assert_eq!(check(&auth, &["alpha-rotated-key-of-good-length"], "/").unwrap(), "alpha");
        assert_eq!(check(&auth, &[KEY_A], "/").unwrap(), "alpha", "old key in the overlap");
        let keyring = auth.keyring.load();
        let digest = auth.digester.digest(KEY_A.as_bytes());
        let after = Instant::now() + Duration::from_secs(61);
        assert!(keyring.identify(&digest, after).is_none(), "old key after the overlap");
    }

    #[test]
    fn repeated_failures_are_rate_limited_per_peer() {
        let store = store_with(KEY_A, KEY_B);
        let auth = Authenticator::new(FailureLimiter::new(1, 2), clients());
        auth.rebuild(&store.snapshot());
        let (headers, uri) = request(&["wrong"], "/");
        let bad: IpAddr = "127.0.0.9".parse().unwrap();
        assert_eq!(auth.check(&headers, &uri, bad).unwrap_err(), Denial::Invalid);
        assert_eq!(auth.check(&headers, &uri, bad).unwrap_err(), Denial::Invalid);
        assert!(matches!(auth.check(&headers, &uri, bad), Err(Denial::RateLimited(s)) if s >= 1));
        let (good, uri) = request(&[KEY_A], "/");
        assert!(matches!(auth.check(&good, &uri, bad), Err(Denial::RateLimited(_))));
        let other: IpAddr = "127.0.0.10".parse().unwrap();
        assert_eq!(auth.check(&good, &uri, other).unwrap().id.as_ref(), "alpha");
    }
}
