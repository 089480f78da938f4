//! JWS compact serialization (RFC 7515) as access tokens use it: three base64url parts, a
//! header naming an allow-listed algorithm and a key id, and a signature checked with ring,
//! the one crypto provider keyward has (rustls uses it too).
//!
//! Parsing is strict: canonical base64url without padding, JSON objects, no `crit`. Nothing
//! here trusts the header beyond choosing which configured key and algorithm to try.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;

/// The signature algorithms keyward can verify (RFC 7518 names). `none` and the HMAC family
/// are not among them: a public key can never be used as a shared secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// RSASSA-PSS with SHA-384.
    Ps384,
    /// RSASSA-PSS with SHA-512.
    Ps512,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// ECDSA on P-384 with SHA-384.
    Es384,
}

impl Alg {
    /// The allow-list when an issuer names none.
    pub const DEFAULT: [Alg; 3] = [Alg::Rs256, Alg::Ps256, Alg::Es256];

    /// The algorithm a JOSE `alg` value names, if keyward verifies it.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            _ => return None,
        })
    }

    /// The key a signature of this algorithm needs.
    fn needs(self) -> KeyKind {
        match self {
            Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512 => {
                KeyKind::Rsa
            }
            Alg::Es256 => KeyKind::P256,
            Alg::Es384 => KeyKind::P384,
        }
    }
}

/// The shape of a public key, which must agree with the algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
}

/// A public verification key from a JWK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA modulus and exponent, big-endian.
    Rsa {
        /// `n`.
        n: Vec<u8>,
        /// `e`.
        e: Vec<u8>,
    },
    /// An EC point, uncompressed (`0x04 || x || y`), on P-256.
    P256(Vec<u8>),
    /// An EC point, uncompressed, on P-384.
    P384(Vec<u8>),
}

impl PublicKey {
    fn kind(&self) -> KeyKind {
        match self {
            PublicKey::Rsa { .. } => KeyKind::Rsa,
            PublicKey::P256(_) => KeyKind::P256,
            PublicKey::P384(_) => KeyKind::P384,
        }
    }

    /// Whether `signature` over `message` verifies under this key with `alg`. A key of
    /// another type than `alg` needs never verifies.
    pub fn verifies(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        if self.kind() != alg.needs() {
            return false;
        }
        match self {
            PublicKey::Rsa { n, e } => {
                let params = match alg {
                    Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Alg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Alg::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Alg::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Alg::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
                    _ => &signature::RSA_PSS_2048_8192_SHA512,
                };
                RsaPublicKeyComponents { n, e }.verify(params, message, signature).is_ok()
            }
            PublicKey::P256(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            PublicKey::P384(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
        }
    }
}

/// Why a token could not be read at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not three base64url parts of JSON objects, or a `crit` header.
    Shape,
    /// An `alg` keyward does not verify (`none`, HMAC, anything unknown).
    Alg,
    /// No `kid`.
    NoKid,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<serde::de::IgnoredAny>,
}

/// A parsed, not yet verified, token.
#[derive(Debug)]
pub struct Jws<'a> {
    /// The header's algorithm.
    pub alg: Alg,
    /// The header's key id.
    pub kid: String,
    /// The decoded payload (JSON).
    pub payload: Vec<u8>,
    /// `header.payload`, what the signature covers.
    pub signing_input: &'a [u8],
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact JWS.
pub fn parse(token: &str) -> Result<Jws<'_>, Malformed> {
    let mut parts = token.splitn(4, '.');
    let (Some(header_part), Some(payload_part), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Malformed::Shape);
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| Malformed::Shape);
    let header_json = decode(header_part)?;
    let header: Header = serde_json::from_slice(&header_json).map_err(|_| Malformed::Shape)?;
    if header.crit.is_some() {
        return Err(Malformed::Shape);
    }
    let alg = Alg::from_name(&header.alg).ok_or(Malformed::Alg)?;
    let kid = header.kid.filter(|kid| !kid.is_empty()).ok_or(Malformed::NoKid)?;
    let payload = decode(payload_part)?;
    if !payload.starts_with(b"{") {
        return Err(Malformed::Shape);
    }
    let signature = decode(signature)?;
    let signing_input = &token.as_bytes()[..header_part.len() + 1 + payload_part.len()];
    Ok(Jws { alg, kid, payload, signing_input, signature })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn token(header: &str, payload: &str, signature: &[u8]) -> String {
        format!("{}.{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()), b64(signature))
    }

    #[test]
    fn a_well_formed_token_splits_into_its_parts() {
        let text = token(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#, r#"{"a":1}"#, b"sig");
        let jws = parse(&text).unwrap();
        assert_eq!((jws.alg, jws.kid.as_str()), (Alg::Rs256, "k1"));
        assert_eq!(jws.payload, br#"{"a":1}"#);
        assert_eq!(jws.signature, b"sig");
        assert_eq!(jws.signing_input, text.rsplit_once('.').unwrap().0.as_bytes());
    }

    #[test]
    fn hostile_headers_and_shapes_are_refused() {
        let p = r#"{"a":1}"#;
        for (header, why) in [
            (r#"{"alg":"none","kid":"k"}"#, Malformed::Alg),
            (r#"{"alg":"HS256","kid":"k"}"#, Malformed::Alg),
            (r#"{"alg":"rs256","kid":"k"}"#, Malformed::Alg),
            (r#"{"alg":"RS256"}"#, Malformed::NoKid),
            (r#"{"alg":"RS256","kid":""}"#, Malformed::NoKid),
            (r#"{"alg":"RS256","kid":"k","crit":["exp"]}"#, Malformed::Shape),
            (r#"["alg"]"#, Malformed::Shape),
        ] {
            assert_eq!(parse(&token(header, p, b"s")).unwrap_err(), why, "{header}");
        }
        let good = token(r#"{"alg":"RS256","kid":"k"}"#, p, b"s");
        for bad in [
            "".to_owned(),
            "a.b".to_owned(),
            format!("{good}.extra"),
            good.replacen('.', "=.", 1),
            format!("{}==", good),
            token(r#"{"alg":"RS256","kid":"k"}"#, "[1]", b"s"),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_key_of_another_type_never_verifies() {
        let rsa = PublicKey::Rsa { n: vec![1; 256], e: vec![1, 0, 1] };
        assert!(!rsa.verifies(Alg::Es256, b"m", &[0; 64]));
        let ec = PublicKey::P256(vec![4; 65]);
        assert!(!ec.verifies(Alg::Rs256, b"m", &[0; 256]));
        assert!(!ec.verifies(Alg::Es384, b"m", &[0; 96]));
    }
}
