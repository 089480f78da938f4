//! JWK Sets (RFC 7517) as identity providers publish them: the signing keys an issuer's tokens
//! may name by `kid`. A key keyward cannot use (encryption keys, unknown types, private
//! members) is skipped, never an error for the whole set.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use super::jws::{Alg, PublicKey};

/// One usable signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifyingKey {
    /// Its `kid`.
    pub(crate) kid: String,
    /// Its `alg`, when the JWK names one: a token must then use exactly that.
    pub(crate) alg: Option<Alg>,
    /// The key.
    pub(crate) key: PublicKey,
}

/// An issuer's current keys.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// The key named `kid`.
    pub(crate) fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|key| key.kid == kid)
    }

    /// How many keys there are.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is none.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Parses a JWK Set document, keeping the keys keyward can verify with.
    pub(crate) fn parse(document: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<serde_json::Value>,
        }
        let set: Set = serde_json::from_slice(document)?;
        let mut keys: Vec<VerifyingKey> = Vec::new();
        for value in set.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else { continue };
            if let Some(key) = jwk.usable() {
                // A repeated kid is ambiguous: the first one published wins.
                if keys.iter().all(|k| k.kid != key.kid) {
                    keys.push(key);
                }
            }
        }
        Ok(Self { keys })
    }
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    /// A private member: such a key is never used, whatever else it holds.
    d: Option<serde::de::IgnoredAny>,
}

impl Jwk {
    fn usable(self) -> Option<VerifyingKey> {
        if self.d.is_some() || self.use_.as_deref().is_some_and(|u| u != "sig") {
            return None;
        }
        let kid = self.kid.filter(|k| !k.is_empty())?;
        // An `alg` keyward does not verify makes the key unusable, not unrestricted.
        let alg = match &self.alg {
            Some(name) => Some(Alg::from_name(name)?),
            None => None,
        };
        let decode = |part: &Option<String>| URL_SAFE_NO_PAD.decode(part.as_deref()?).ok();
        let key = match (self.kty.as_str(), self.crv.as_deref()) {
            ("RSA", _) => {
                let n = decode(&self.n)?;
                let e = decode(&self.e)?;
                // ring verifies 2048- to 8192-bit moduli.
                let n = strip_leading_zeros(n);
                if n.len() < 256 || e.is_empty() {
                    return None;
                }
                PublicKey::Rsa { n, e }
            }
            ("EC", Some(crv @ ("P-256" | "P-384"))) => {
                let (x, y) = (decode(&self.x)?, decode(&self.y)?);
                let size = if crv == "P-256" { 32 } else { 48 };
                if x.len() != size || y.len() != size {
                    return None;
                }
                let point = [&[4u8][..], &x, &y].concat();
                if size == 32 {
                    PublicKey::P256(point)
                } else {
                    PublicKey::P384(point)
                }
            }
            _ => return None,
        };
        Some(VerifyingKey { kid, alg, key })
    }
}

fn strip_leading_zeros(mut n: Vec<u8>) -> Vec<u8> {
    let zeros = n.iter().take_while(|b| **b == 0).count();
    n.drain(..zeros);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn usable_signing_keys_are_kept_and_the_rest_skipped() {
        let n = b64(&[0xc5; 256]);
        let (x, y) = (b64(&[1; 32]), b64(&[2; 32]));
        let document = serde_json::json!({"keys": [
            {"kty": "RSA", "use": "sig", "kid": "r1", "n": n, "e": "AQAB", "x5t": "abc"},
            {"kty": "RSA", "use": "enc", "kid": "r2", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "short", "n": b64(&[0xc5; 128]), "e": "AQAB"},
            {"kty": "RSA", "kid": "private", "n": n, "e": "AQAB", "d": "AAAA"},
            {"kty": "RSA", "kid": "hmac", "alg": "HS256", "n": n, "e": "AQAB"},
            {"kty": "oct", "kid": "oct", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "e1", "crv": "P-256", "x": x, "y": y, "alg": "ES256"},
            {"kty": "EC", "kid": "e2", "crv": "P-521", "x": x, "y": y},
            {"kty": "RSA", "n": n, "e": "AQAB"},
            {"kty": "RSA", "kid": "r1", "n": b64(&[0xd5; 256]), "e": "AQAB"},
            "not an object"
        ]});
        let set = KeySet::parse(document.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 2);
        assert!(matches!(set.get("r1").unwrap().key, PublicKey::Rsa { ref n, .. } if n[0] == 0xc5));
        assert_eq!(set.get("e1").unwrap().alg, Some(Alg::Es256));
        assert!(set.get("r2").is_none() && set.get("hmac").is_none());
        assert!(KeySet::parse(b"{}").is_err());
    }
}
