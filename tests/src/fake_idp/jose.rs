//! The JOSE plumbing the fake needs: base64 (url-safe unpadded for JWS and JWK, standard
//! padded for `x5c` and PEM) and compact JWS, honest and hostile.
//!
//! Nothing here verifies a signature: the fake only signs, and the unit tests verify with
//! `ring::signature` directly, so that a bug here cannot hide itself.

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair};
use serde_json::{json, Value};

/// A JWS signing algorithm the fake signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256, what Entra ID signs with.
    Rs256,
    /// RSASSA-PSS with SHA-256 (MGF1 SHA-256, 32-byte salt).
    Ps256,
    /// ECDSA on P-256 with SHA-256, the signature as `r || s`.
    Es256,
}

impl Alg {
    /// The JWS `alg` value, e.g. `RS256`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Ps256 => "PS256",
            Self::Es256 => "ES256",
        }
    }

    /// The algorithm named `name` (`RS256`, `PS256`, `ES256`).
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Rs256, Self::Ps256, Self::Es256].into_iter().find(|alg| alg.name() == name)
    }

    /// The key type that signs with it.
    pub fn kty(self) -> Kty {
        match self {
            Self::Rs256 | Self::Ps256 => Kty::Rsa,
            Self::Es256 => Kty::Ec,
        }
    }
}

/// A JWK key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kty {
    /// RSA, 2048-bit.
    Rsa,
    /// EC on P-256.
    Ec,
}

impl Kty {
    /// The JWK `kty` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rsa => "RSA",
            Self::Ec => "EC",
        }
    }

    /// The key type named `name` (`RSA`, `EC`).
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Rsa, Self::Ec].into_iter().find(|kty| kty.name() == name)
    }

    /// The algorithm a key of this type signs with when none is asked for.
    pub fn default_alg(self) -> Alg {
        match self {
            Self::Rsa => Alg::Rs256,
            Self::Ec => Alg::Es256,
        }
    }
}

/// The private half of a signing key.
pub(super) enum Material {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl Material {
    pub(super) fn kty(&self) -> Kty {
        match self {
            Self::Rsa(_) => Kty::Rsa,
            Self::Ec(_) => Kty::Ec,
        }
    }

    /// The JWS signature of `input` with `alg`, or `None` when this key cannot make one.
    fn sign(&self, alg: Alg, input: &[u8]) -> Option<Vec<u8>> {
        let rng = SystemRandom::new();
        match (self, alg) {
            (Self::Rsa(key), Alg::Rs256 | Alg::Ps256) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    Alg::Rs256 => &signature::RSA_PKCS1_SHA256,
                    _ => &signature::RSA_PSS_SHA256,
                };
                let mut out = vec![0; key.public().modulus_len()];
                key.sign(padding, &rng, input, &mut out).expect("RSA signing");
                Some(out)
            }
            (Self::Ec(key), Alg::Es256) => {
                Some(key.sign(&rng, input).expect("ECDSA signing").as_ref().to_vec())
            }
            _ => None,
        }
    }
}

/// `header.payload` of a compact JWS: both parts JSON, base64url.
fn signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()))
}

/// The header the fake writes: `{"typ":"JWT","alg":..,"kid":..}`.
fn header(alg: &str, kid: Option<&str>) -> Value {
    let mut header = json!({ "typ": "JWT", "alg": alg });
    if let Some(kid) = kid {
        header["kid"] = kid.into();
    }
    header
}

/// A compact JWS of `claims` whose header names `kid` and `alg`, signed by `key`; `None`
/// when `key` cannot sign with `alg`.
pub(super) fn sign(key: &Material, kid: &str, alg: Alg, claims: &Value) -> Option<String> {
    let input = signing_input(&header(alg.name(), Some(kid)), claims);
    let signature = key.sign(alg, input.as_bytes())?;
    Some(format!("{input}.{}", b64url(&signature)))
}

/// `alg: none` and an empty signature, the header naming `kid` if given.
pub(super) fn unsigned(kid: Option<&str>, claims: &Value) -> String {
    format!("{}.", signing_input(&header("none", kid), claims))
}

/// HS256 with `secret` as the HMAC key, the header naming `kid`.
pub(super) fn hs256(secret: &[u8], kid: &str, claims: &Value) -> String {
    let input = signing_input(&header("HS256", Some(kid)), claims);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64url(tag.as_ref()))
}

/// `token` with its payload replaced by `edit`'s version of it, header and signature kept.
///
/// # Panics
/// If `token` is not three dot-separated parts with a base64url JSON payload.
pub(super) fn tampered(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWS");
    let payload = b64url_decode(parts[1]).expect("base64url payload");
    let mut claims: Value = serde_json::from_slice(&payload).expect("JSON payload");
    edit(&mut claims);
    format!("{}.{}.{}", parts[0], b64url(claims.to_string().as_bytes()), parts[2])
}

const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn encode(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        let digits = chunk.len() + 1;
        for i in 0..4 {
            if i < digits {
                out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// base64url without padding (RFC 7515 section 2).
pub(super) fn b64url(bytes: &[u8]) -> String {
    encode(bytes, URL_SAFE, false)
}

/// Standard base64 with padding (RFC 4648 section 4), as in `x5c` and PEM.
pub(super) fn b64(bytes: &[u8]) -> String {
    encode(bytes, STANDARD, true)
}

/// Decodes unpadded base64url; `None` on any other character or an impossible length.
pub(super) fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let value = URL_SAFE.iter().position(|&a| a == c)?;
        acc = acc << 6 | value as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = ["", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"];
        for (n, expected) in vectors.iter().enumerate() {
            let input = &b"foobar"[..n];
            assert_eq!(b64(input), *expected);
            assert_eq!(b64url(input), expected.trim_end_matches('='));
            assert_eq!(b64url_decode(&b64url(input)).as_deref(), Some(input));
        }
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(b64(&[0xfb, 0xff]), "+/8=");
        assert_eq!(b64url_decode("-_8").unwrap(), [0xfb, 0xff]);
        assert_eq!(b64url_decode("+/8"), None);
        assert_eq!(b64url_decode("Zm9vY"), None);
    }

    #[test]
    fn tampering_keeps_header_and_signature() {
        let token = format!("{}.{}.sig", b64url(b"{}"), b64url(br#"{"exp":1}"#));
        let tampered = tampered(&token, |claims| claims["exp"] = 2.into());
        let parts: Vec<&str> = tampered.split('.').collect();
        assert_eq!(parts[0], b64url(b"{}"));
        assert_eq!(parts[2], "sig");
        assert_eq!(b64url_decode(parts[1]).unwrap(), br#"{"exp":2}"#);
    }

    #[test]
    fn alg_and_kty_names_round_trip() {
        for alg in [Alg::Rs256, Alg::Ps256, Alg::Es256] {
            assert_eq!(Alg::parse(alg.name()), Some(alg));
        }
        assert_eq!(Alg::parse("none"), None);
        assert_eq!(Alg::parse("HS256"), None);
        assert_eq!(Kty::parse("EC"), Some(Kty::Ec));
        assert_eq!(Alg::Ps256.kty(), Kty::Rsa);
    }
}
