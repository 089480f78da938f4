//! Plumbing shared by the vault and the identity endpoint: query decoding, JSON replies,
//! random identifiers and the clock (replies, identifiers and the clock also serve
//! `fake_idp`). Nothing here sees a secret value or a token.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;
use ring::rand::{SecureRandom, SystemRandom};

/// Every response either server sends.
pub(crate) type Reply = Response<Full<Bytes>>;

/// A JSON response, with the headers Azure sends on one.
pub(super) fn json(status: StatusCode, body: &serde_json::Value) -> Reply {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json; charset=utf-8")
        .header(CACHE_CONTROL, "no-cache")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

/// A response with no body.
pub(crate) fn empty(status: StatusCode) -> Reply {
    Response::builder().status(status).body(Full::new(Bytes::new())).expect("valid response")
}

/// Decoded query parameters, in order.
///
/// The Azure SDK writes queries with form encoding, so `$skiptoken` arrives as `%24skiptoken`
/// and `https://x` as `https%3A%2F%2Fx`: names and values are both decoded.
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    /// Parses a raw query string (without the `?`).
    pub(super) fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(name), decode(value))
            })
            .collect();
        Self(pairs)
    }

    /// The first value of `name`.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Form decoding: `+` is a space, `%XX` a byte; malformed escapes are kept as written.
fn decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = raw.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything but unreserved characters, for values put back into a URL.
pub(super) fn encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of lowercase or uppercase hex `text`, or `None`.
pub(super) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// `n` random bytes as lowercase hex (`2n` digits).
pub(super) fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    SystemRandom::new().fill(&mut bytes).expect("system randomness");
    hex(&bytes)
}

/// A random GUID in Azure's 8-4-4-4-12 form.
pub(crate) fn random_guid() -> String {
    let h = random_hex(16);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    let elapsed = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970");
    i64::try_from(elapsed.as_secs()).expect("epoch seconds fit in i64")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_form_encoded_names_and_values() {
        let query = Query::parse(Some(
            "api-version=2019-08-01&resource=https%3A%2F%2Fvault.test&%24skiptoken=ab&x=a+b&bad=%zz",
        ));
        assert_eq!(query.get("resource"), Some("https://vault.test"));
        assert_eq!(query.get("$skiptoken"), Some("ab"));
        assert_eq!(query.get("x"), Some("a b"));
        assert_eq!(query.get("bad"), Some("%zz"));
        assert_eq!(query.get("missing"), None);
        assert_eq!(Query::parse(None).get("api-version"), None);
    }

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        assert_eq!(unhex(&hex(b"secret-name")).as_deref(), Some(&b"secret-name"[..]));
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn identifiers_have_azure_shapes() {
        let guid = random_guid();
        assert_eq!(guid.len(), 36);
        assert_eq!(guid.matches('-').count(), 4);
        let version = random_hex(16);
        assert_eq!(version.len(), 32);
        assert!(version.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(version, random_hex(16));
    }

    #[test]
    fn encode_leaves_unreserved_alone() {
        assert_eq!(encode("2025-07-01"), "2025-07-01");
        assert_eq!(encode("a&b=c"), "a%26b%3Dc");
    }
}
