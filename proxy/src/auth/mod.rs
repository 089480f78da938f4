//! Client authentication: an `X-Api-Key` checked in constant time, or (with `[ingress.oauth]`)
//! an `Authorization: Bearer` token validated by [`token`]. Exactly one of the two per request.
//!
//! Keys are compared as HMAC-SHA-256 digests of their SHA-256, under an HMAC key drawn at
//! start, with `subtle` and no early exit: neither the position of the matching entry nor the
//! length of any key shows in the timing. A stored key may itself be `sha256:<hex>` of the key
//! (then neither the vault nor keyward's memory holds a usable credential); both kinds compare
//! in the same single pass. Accepted keys are digested once per snapshot, never per request.
//! The presented credential is never logged, not even as a digest.

mod limiter;
pub mod token;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::{header, HeaderMap, HeaderValue, Uri};
use ring::{digest, hmac, rand};
use subtle::{ConditionallySelectable, ConstantTimeEq};

pub use limiter::FailureLimiter;
pub use token::{TokenDenial, Tokens, Verified};

use crate::config::{ClientConfig, Grants};
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

    /// The digest of a key as presented (or stored in the clear): of its SHA-256.
    fn digest(&self, key: &[u8]) -> Digest {
        self.digest_of_hash(digest::digest(&digest::SHA256, key).as_ref())
    }

    /// The digest of a key's SHA-256, as four words, so that a comparison is four XORs rather
    /// than 32 byte steps.
    fn digest_of_hash(&self, sha256: &[u8]) -> Digest {
        let tag = hmac::sign(&self.0, sha256);
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

/// A stored `sha256:<64 hex>` value: the digest of a key, not the key.
fn stored_hash(value: &[u8]) -> Option<zeroize::Zeroizing<[u8; 32]>> {
    let hex = value.strip_prefix(b"sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut hash = zeroize::Zeroizing::new([0u8; 32]);
    for (byte, pair) in hash.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(hash)
}

/// The line `keyward hash-key` prints for `key`: what to store instead of the key.
pub fn hashed_key_line(key: &[u8]) -> String {
    let hash = digest::digest(&digest::SHA256, key);
    let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn warn_about(config: &ClientConfig, secret: &str, key: &[u8]) {
    if key.len() < MIN_KEY_BYTES {
        tracing::warn!(client = %config.id, secret,
            "client key is shorter than {MIN_KEY_BYTES} bytes; use a long random key");
    }
    if !key.iter().all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t') {
        tracing::warn!(client = %config.id, secret,
            "client key has bytes no header can carry; it can never match");
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
    /// What it may reach.
    pub grants: Arc<Grants>,
}

impl Client {
    fn new(config: &ClientConfig, position: usize) -> Self {
        let header = HeaderValue::from_str(&config.id).expect("client ids are validated");
        let grants = Arc::new(config.grants());
        Client { id: config.id.as_str().into(), header, index: position, grants }
    }
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
            let Some(name) = &config.secret else { continue };
            let Some(versions) = snapshot.get(name) else { continue };
            let index = keyring.clients.len() as u32;
            keyring.clients.push(Client::new(config, position));
            let current = std::iter::once((&versions.current, versions.current_until));
            let previous = versions.previous.iter().map(|(s, until)| (s, Some(*until)));
            for (n, (secret, until)) in current.chain(previous).enumerate() {
                let digest = match stored_hash(secret.expose()) {
                    Some(hash) => digester.digest_of_hash(&hash[..]),
                    None => {
                        if n == 0 {
                            warn_about(config, name, secret.expose());
                        }
                        digester.digest(secret.expose())
                    }
                };
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

/// Why a request was not authenticated. Most kinds answer the same 401; the status of each
/// is in [`Denial::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No `X-Api-Key` (and no bearer token).
    Missing,
    /// More than one `X-Api-Key` or `Authorization`.
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
    /// Both a bearer token and an `X-Api-Key` (400: which one is meant is unclear).
    BothSchemes,
    /// A bearer token that was refused.
    Token(TokenDenial),
}

/// The scheme a request authenticated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `X-Api-Key`.
    ApiKey,
    /// `Authorization: Bearer`.
    Bearer,
}

impl Scheme {
    /// The audit label.
    pub fn label(self) -> &'static str {
        match self {
            Scheme::ApiKey => "api_key",
            Scheme::Bearer => "bearer",
        }
    }
}

impl Denial {
    /// How many kinds there are: the length of [`Self::ALL`], checked by [`Self::index`].
    pub const COUNT: usize = 8 + TokenDenial::COUNT;

    /// One of each kind, in [`Self::index`] order (metrics label sets).
    pub const ALL: [Denial; Self::COUNT] = {
        let mut all = [Denial::Missing; Self::COUNT];
        let keys = [
            Denial::Missing,
            Denial::Repeated,
            Denial::Oversize,
            Denial::KeyInQuery,
            Denial::Invalid,
            Denial::RateLimited(0),
            Denial::NoKeys,
            Denial::BothSchemes,
        ];
        let mut i = 0;
        while i < keys.len() {
            all[i] = keys[i];
            i += 1;
        }
        let mut j = 0;
        while j < TokenDenial::COUNT {
            all[i + j] = Denial::Token(TokenDenial::ALL[j]);
            j += 1;
        }
        all
    };

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
            Denial::BothSchemes => 7,
            Denial::Token(denial) => 8 + denial.index(),
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
            Denial::BothSchemes => "both_schemes",
            Denial::Token(denial) => denial.reason(),
        }
    }
}

/// Who a request comes from, and how that was decided.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The client.
    pub client: Client,
    /// The scheme.
    pub scheme: Scheme,
    /// For a token: its issuer and key id.
    pub token: Option<Verified>,
}

impl Authenticated {
    /// What the request may reach: its client's grants, widened by its token's scopes.
    pub fn grants(&self) -> &Arc<Grants> {
        self.token.as_ref().and_then(|t| t.grants.as_ref()).unwrap_or(&self.client.grants)
    }
}

/// Decides who a request comes from.
#[derive(Debug)]
pub struct Authenticator {
    clients: Vec<ClientConfig>,
    digester: Digester,
    keyring: ArcSwap<Keyring>,
    limiter: FailureLimiter,
    /// Whether any client has a key (else an empty keyring is no reason to refuse).
    keyed: bool,
    tokens: Option<Arc<Tokens>>,
    token_clients: Vec<Client>,
}

impl Authenticator {
    /// An authenticator for `clients`, with no key loaded (refusing every key) until it is
    /// rebuilt from a snapshot (see [`crate::secrets::Consumer`]).
    pub fn new(limiter: FailureLimiter, clients: Vec<ClientConfig>) -> Self {
        let keyed = clients.iter().any(|c| c.secret.is_some());
        let token_clients = clients.iter().enumerate().map(|(i, c)| Client::new(c, i)).collect();
        Self {
            clients,
            digester: Digester::random(),
            keyring: ArcSwap::default(),
            limiter,
            keyed,
            tokens: None,
            token_clients,
        }
    }

    /// Accepts bearer tokens validated by `tokens` besides keys.
    pub fn with_tokens(mut self, tokens: Arc<Tokens>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// The token validator, when bearer tokens are accepted.
    pub fn tokens(&self) -> Option<&Arc<Tokens>> {
        self.tokens.as_ref()
    }

    /// Authenticates one request from `peer` by the one scheme it uses.
    pub async fn check(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        peer: IpAddr,
    ) -> Result<Authenticated, Denial> {
        let Some(tokens) = &self.tokens else {
            return self.check_key(headers, uri, peer).map(Authenticated::by_key);
        };
        let bearer = match bearer_token(headers) {
            Ok(bearer) => bearer,
            Err(denial) => return Err(self.failed(peer, denial)),
        };
        match (bearer, headers.contains_key(X_API_KEY)) {
            (None, _) => self.check_key(headers, uri, peer).map(Authenticated::by_key),
            (Some(_), true) => Err(self.failed(peer, Denial::BothSchemes)),
            (Some(token), false) => {
                if let Err(wait) = self.limiter.check(peer, Instant::now()) {
                    return Err(Denial::RateLimited(wait.as_secs().max(1)));
                }
                if uri.query().is_some_and(query_has_credential) {
                    return Err(self.failed(peer, Denial::KeyInQuery));
                }
                match tokens.validate(token).await {
                    Ok(verified) => Ok(Authenticated {
                        client: self.token_clients[verified.client].clone(),
                        scheme: Scheme::Bearer,
                        token: Some(verified),
                    }),
                    // Not the client's failure: no lockout.
                    Err(TokenDenial::KeysNotLoaded) => {
                        Err(Denial::Token(TokenDenial::KeysNotLoaded))
                    }
                    Err(denial) => Err(self.failed(peer, Denial::Token(denial))),
                }
            }
        }
    }

    /// Authenticates one request from `peer` by its `X-Api-Key`.
    pub fn check_key(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        peer: IpAddr,
    ) -> Result<Client, Denial> {
        let now = Instant::now();
        if let Err(wait) = self.limiter.check(peer, now) {
            return Err(Denial::RateLimited(wait.as_secs().max(1)));
        }
        let keyring = self.keyring.load();
        if keyring.is_empty() && self.keyed {
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

    fn failed(&self, peer: IpAddr, denial: Denial) -> Denial {
        self.limiter.record_failure(peer, Instant::now());
        denial
    }
}

impl Authenticated {
    fn by_key(client: Client) -> Self {
        Self { client, scheme: Scheme::ApiKey, token: None }
    }
}

impl crate::secrets::Consumer for Authenticator {
    /// Re-digests the clients' keys.
    fn rebuild(&self, snapshot: &Snapshot) {
        self.keyring.store(Arc::new(Keyring::build(&self.digester, &self.clients, snapshot)));
    }
}

/// The bearer token, if the request carries `Authorization: Bearer`; another scheme in
/// `Authorization` is no token (and no key).
fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, Denial> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(Denial::Repeated);
    }
    let value = value.to_str().map_err(|_| Denial::Token(TokenDenial::Malformed))?;
    let Some((scheme, token)) = value.split_once(' ') else {
        return if value.eq_ignore_ascii_case("bearer") {
            Err(Denial::Token(TokenDenial::Malformed))
        } else {
            Ok(None)
        };
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = token.trim_matches(' ');
    if token.is_empty() {
        return Err(Denial::Token(TokenDenial::Malformed));
    }
    Ok(Some(token))
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
            .map(|id| ClientConfig::with_key(*id, format!("{id}-key")))
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
        auth.check_key(&headers, &uri, "127.0.0.1".parse().unwrap()).map(|c| c.id.to_string())
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
    fn a_stored_sha256_is_compared_as_the_key_s_digest() {
        let hashed = hashed_key_line(KEY_A.as_bytes());
        assert_eq!(hashed.len(), "sha256:".len() + 64);
        let hashed_auth = auth(&store_with(&hashed, KEY_B));
        assert_eq!(check(&hashed_auth, &[KEY_A], "/mcp").unwrap(), "alpha");
        let digest_as_key = check(&hashed_auth, &[&hashed], "/mcp");
        assert_eq!(digest_as_key, Err(Denial::Invalid), "the digest is no key");
        assert_eq!(check(&hashed_auth, &[KEY_B], "/mcp").unwrap(), "beta");
        let upper = format!("sha256:{}", hashed["sha256:".len()..].to_ascii_uppercase());
        assert_eq!(check(&auth(&store_with(&upper, KEY_B)), &[KEY_A], "/mcp").unwrap(), "alpha");
        // Not 64 hex digits: a plain key that happens to start with "sha256:".
        let plain = "sha256:not-hex-but-a-long-plain-key";
        assert_eq!(check(&auth(&store_with(plain, KEY_B)), &[plain], "/mcp").unwrap(), "alpha");
    }

    #[tokio::test]
    async fn without_oauth_a_bearer_token_is_neither_used_nor_a_conflict() {
        let auth = auth(&store_with(KEY_A, KEY_B));
        let (mut headers, uri) = request(&[KEY_A], "/mcp");
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer a.b.c"));
        let peer = "127.0.0.1".parse().unwrap();
        let authenticated = auth.check(&headers, &uri, peer).await.unwrap();
        assert_eq!((&*authenticated.client.id, authenticated.scheme), ("alpha", Scheme::ApiKey));
    }

    #[test]
    fn the_bearer_scheme_is_read_case_insensitively_and_others_are_ignored() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            headers
        };
        assert_eq!(bearer_token(&with("Bearer abc")), Ok(Some("abc")));
        assert_eq!(bearer_token(&with("bearer  abc ")), Ok(Some("abc")));
        assert_eq!(bearer_token(&with("Basic dXNlcjpwYXNz")), Ok(None));
        assert_eq!(bearer_token(&with("Bearer")), Err(Denial::Token(TokenDenial::Malformed)));
        assert_eq!(bearer_token(&with("Bearer ")), Err(Denial::Token(TokenDenial::Malformed)));
        let mut two = with("Bearer a");
        two.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(bearer_token(&two), Err(Denial::Repeated));
    }

    #[test]
    fn repeated_failures_are_rate_limited_per_peer() {
        let store = store_with(KEY_A, KEY_B);
        let auth = Authenticator::new(FailureLimiter::new(1, 2), clients());
        auth.rebuild(&store.snapshot());
        let (headers, uri) = request(&["wrong"], "/");
        let bad: IpAddr = "127.0.0.9".parse().unwrap();
        assert_eq!(auth.check_key(&headers, &uri, bad).unwrap_err(), Denial::Invalid);
        assert_eq!(auth.check_key(&headers, &uri, bad).unwrap_err(), Denial::Invalid);
        assert!(
            matches!(auth.check_key(&headers, &uri, bad), Err(Denial::RateLimited(s)) if s >= 1)
        );
        let (good, uri) = request(&[KEY_A], "/");
        assert!(matches!(auth.check_key(&good, &uri, bad), Err(Denial::RateLimited(_))));
        let other: IpAddr = "127.0.0.10".parse().unwrap();
        assert_eq!(auth.check_key(&good, &uri, other).unwrap().id.as_ref(), "alpha");
    }
}
