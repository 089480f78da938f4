//! MCP session ids bound to the client that opened them, statelessly: the client gets the
//! backend's id followed by `.` and an HMAC-SHA-256 of its own client id and that id, and keyward
//! checks and removes the MAC on the way in. A session opened by one client is an unknown
//! session (404) for every other, on every replica: the MAC key is a secret from the store
//! (`ingress.session_secret`), so all replicas share it and it rotates with the same overlap as
//! client keys. Without that setting each process draws its own key, and sessions are bound to
//! one replica.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use ring::{hmac, rand};

use crate::secrets::Snapshot;

/// The MAC keys: the current one first, then replaced ones until their overlap ends.
#[derive(Debug)]
pub(crate) struct Sessions {
    secret: Option<String>,
    keys: ArcSwap<Vec<(hmac::Key, Option<Instant>)>>,
}

impl Sessions {
    /// Keys from the secret named `secret`, or a random per-process key.
    pub(crate) fn new(secret: Option<String>) -> Self {
        let keys = match secret {
            Some(_) => Vec::new(),
            None => {
                let key = hmac::Key::generate(hmac::HMAC_SHA256, &rand::SystemRandom::new())
                    .expect("the system random source failed");
                vec![(key, None)]
            }
        };
        Self { secret, keys: ArcSwap::from_pointee(keys) }
    }

    /// The id the client gets for the backend's `id`; `None` before the key is loaded.
    pub(crate) fn wrap(&self, client: &str, id: &[u8]) -> Option<HeaderValue> {
        let keys = self.keys.load();
        let (key, _) = keys.first()?;
        let tag = hmac::sign(key, &input(client, id));
        let mut value = id.to_vec();
        value.push(b'.');
        value.extend_from_slice(URL_SAFE_NO_PAD.encode(tag.as_ref()).as_bytes());
        HeaderValue::from_bytes(&value).ok()
    }

    /// The backend's id inside `presented`, if `client` was given it.
    pub(crate) fn unwrap<'a>(&self, client: &str, presented: &'a [u8]) -> Option<&'a [u8]> {
        let dot = presented.iter().rposition(|b| *b == b'.')?;
        let (id, tag) = (&presented[..dot], &presented[dot + 1..]);
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let message = input(client, id);
        let now = Instant::now();
        let keys = self.keys.load();
        let valid = keys
            .iter()
            .filter(|(_, until)| until.is_none_or(|until| now < until))
            .any(|(key, _)| hmac::verify(key, &message, &tag).is_ok());
        valid.then_some(id)
    }
}

impl crate::secrets::Consumer for Sessions {
    /// Takes the session key's current and overlapping versions.
    fn rebuild(&self, snapshot: &Snapshot) {
        let Some(name) = &self.secret else { return };
        let Some(versions) = snapshot.get(name) else {
            self.keys.store(Arc::new(Vec::new()));
            return;
        };
        let key = |value: &[u8]| hmac::Key::new(hmac::HMAC_SHA256, value);
        let mut keys = vec![(key(versions.current.expose()), versions.current_until)];
        keys.extend(versions.previous.iter().map(|(s, until)| (key(s.expose()), Some(*until))));
        self.keys.store(Arc::new(keys));
    }
}

/// What a span may say about a session (`mcp.session.id`): the first 16 bytes of the SHA-256 of
/// the id as the client presented it, in hex. Never the id: the presented id carries keyward's
/// MAC, so even a guessable backend id (a counter) cannot be found from its digest, and the
/// same session has the same digest on every request (and on every replica that shares
/// `ingress.session_secret`).
pub(crate) fn digest(presented: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, presented);
    digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// What the MAC covers: the client id, length-prefixed, then the backend's id.
fn input(client: &str, id: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(4 + client.len() + id.len());
    input.extend_from_slice(&(client.len() as u32).to_be_bytes());
    input.extend_from_slice(client.as_bytes());
    input.extend_from_slice(id);
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_its_client_s_only() {
        let sessions = Sessions::new(None);
        let wrapped = sessions.wrap("alpha", b"abc-123").unwrap();
        let presented = wrapped.as_bytes();
        assert!(presented.starts_with(b"abc-123."));
        assert_eq!(sessions.unwrap("alpha", presented), Some(&b"abc-123"[..]));
        assert_eq!(sessions.unwrap("beta", presented), None);
        assert_eq!(sessions.unwrap("alpha", b"abc-123"), None, "the bare id");
        let mut forged = presented.to_vec();
        forged[0] = b'x';
        assert_eq!(sessions.unwrap("alpha", &forged), None);
        // A span gets a digest of it, never the id.
        let digest = digest(presented);
        assert_eq!(digest.len(), 32);
        assert!(
            digest.bytes().all(|b| b.is_ascii_hexdigit()) && digest == super::digest(presented)
        );
        assert_ne!(digest, super::digest(sessions.wrap("alpha", b"abc-124").unwrap().as_bytes()));
        // Another process (another random key) does not know it.
        assert_eq!(Sessions::new(None).unwrap("alpha", presented), None);
        // The client id and the session id cannot trade bytes.
        let shifted = sessions.wrap("alph", b"aabc-123").unwrap();
        assert_ne!(shifted.as_bytes()[b"aabc-123.".len()..], presented[b"abc-123.".len()..]);
    }
}
