//! The fake's signing keys and the JWK Set it publishes from them.
//!
//! Each key has a self-signed certificate, as Entra ID's do: its SHA-1 thumbprint is both
//! `kid` and `x5t`, and the certificate is the JWK's `x5c`. RSA keys come from the two
//! fixtures beside this file (ring cannot generate RSA keys), in turn; a key made again from
//! a fixture gets a new certificate and so a new kid. EC P-256 keys are generated.
//!
//! The JWK Set holds public parts only; the private keys never leave this module except as
//! the texts [`Keyring::private_texts`] returns for leak assertions.

use std::sync::Arc;

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use super::jose::{b64, b64url, Kty, Material};

/// Test-only RSA keys (2048-bit, unencrypted PKCS#8 DER: `openssl genpkey -algorithm RSA
/// -pkeyopt rsa_keygen_bits:2048 -outform DER`, which OpenSSL 3.0 writes as PKCS#1, then
/// `openssl pkcs8 -topk8 -nocrypt -inform DER -outform DER`). They sign tokens for the fake
/// identity provider in tests and nothing else; being committed, they are public.
const RSA_FIXTURES: [&[u8]; 2] =
    [include_bytes!("rsa-test-key-1.pk8"), include_bytes!("rsa-test-key-2.pk8")];

/// Subject of Entra ID's token signing certificates.
const CERT_SUBJECT: &str = "accounts.accesscontrol.windows.net";

/// One signing key.
pub(super) struct SigningKey {
    pub(super) kid: String,
    pub(super) material: Material,
    /// The PKCS#8 private key, kept only to tell tests what must never leak.
    pkcs8: Vec<u8>,
    /// DER of the self-signed certificate (`x5c`).
    cert: Vec<u8>,
    /// DER SubjectPublicKeyInfo of the public key.
    spki: Vec<u8>,
}

impl SigningKey {
    fn new(pkcs8: Vec<u8>, kty: Kty) -> Self {
        let material = match kty {
            Kty::Rsa => Material::Rsa(RsaKeyPair::from_pkcs8(&pkcs8).expect("RSA fixture")),
            Kty::Ec => Material::Ec(
                EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &pkcs8,
                    &SystemRandom::new(),
                )
                .expect("generated P-256 key"),
            ),
        };
        let key = rcgen::KeyPair::try_from(pkcs8.as_slice()).expect("rcgen reads the key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, CERT_SUBJECT);
        // A random serial, so that a fixture made into a key again gets another thumbprint.
        let mut serial = [0u8; 16];
        SystemRandom::new().fill(&mut serial).expect("system randomness");
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = params.self_signed(&key).expect("signing certificate").der().to_vec();
        let thumbprint = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert);
        Self { kid: b64url(thumbprint.as_ref()), material, pkcs8, spki: key.public_key_der(), cert }
    }

    pub(super) fn kty(&self) -> Kty {
        self.material.kty()
    }

    /// DER SubjectPublicKeyInfo of the public key.
    pub(super) fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The public key as PEM (`-----BEGIN PUBLIC KEY-----`), as a library would load it.
    pub(super) fn spki_pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki)
    }

    /// The JWK of the public key. `issuer` is set on the v2 key set only, as Entra does.
    pub(super) fn jwk(&self, issuer: Option<&str>) -> Value {
        let mut jwk = json!({
            "kty": self.kty().name(),
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
        });
        match &self.material {
            Material::Rsa(key) => {
                let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(key.public());
                jwk["n"] = b64url(&public.n).into();
                jwk["e"] = b64url(&public.e).into();
            }
            Material::Ec(key) => {
                // The uncompressed point: 0x04 || x || y.
                let point = key.public_key().as_ref();
                jwk["crv"] = "P-256".into();
                jwk["x"] = b64url(&point[1..33]).into();
                jwk["y"] = b64url(&point[33..65]).into();
                // Entra publishes no `alg`; the EC key carries one to exercise the field.
                jwk["alg"] = "ES256".into();
            }
        }
        jwk["x5c"] = json!([b64(&self.cert)]);
        if let Some(issuer) = issuer {
            jwk["cloud_instance_name"] = "microsoftonline.com".into();
            jwk["issuer"] = issuer.into();
        }
        jwk
    }
}

/// PEM armour: base64 in 64-character lines.
fn pem(label: &str, der: &[u8]) -> String {
    let body = b64(der);
    let lines: Vec<&str> =
        body.as_bytes().chunks(64).map(|l| std::str::from_utf8(l).expect("ASCII")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// Every key the fake holds, published or not, in the order made.
pub(super) struct Keyring {
    keys: Vec<(Arc<SigningKey>, bool)>,
    rsa_made: usize,
}

impl Keyring {
    /// One RSA and one EC key, both published.
    pub(super) fn new() -> Self {
        let mut ring = Self { keys: Vec::new(), rsa_made: 0 };
        for kty in [Kty::Rsa, Kty::Ec] {
            let kid = ring.make(kty);
            ring.set_published(&kid, true);
        }
        ring
    }

    /// A new unpublished key; returns its kid.
    pub(super) fn make(&mut self, kty: Kty) -> String {
        let pkcs8 = match kty {
            Kty::Rsa => {
                let fixture = RSA_FIXTURES[self.rsa_made % RSA_FIXTURES.len()];
                self.rsa_made += 1;
                fixture.to_vec()
            }
            Kty::Ec => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                    .expect("P-256 key generation")
                    .as_ref()
                    .to_vec()
            }
        };
        let key = SigningKey::new(pkcs8, kty);
        let kid = key.kid.clone();
        self.keys.push((Arc::new(key), false));
        kid
    }

    /// Publishes or withdraws `kid`; false if there is no such key.
    pub(super) fn set_published(&mut self, kid: &str, published: bool) -> bool {
        match self.keys.iter_mut().find(|(key, _)| key.kid == kid) {
            Some((_, state)) => {
                *state = published;
                true
            }
            None => false,
        }
    }

    /// The key `kid`, published or not.
    pub(super) fn get(&self, kid: &str) -> Option<Arc<SigningKey>> {
        self.keys.iter().find(|(key, _)| key.kid == kid).map(|(key, _)| key.clone())
    }

    /// The newest published key of type `kty`: the one tokens are signed with by default.
    pub(super) fn signing(&self, kty: Kty) -> Option<Arc<SigningKey>> {
        let mut published = self.keys.iter().rev().filter(|(key, on)| *on && key.kty() == kty);
        published.next().map(|(key, _)| key.clone())
    }

    /// The kids in the key set, in the order made.
    pub(super) fn published(&self) -> Vec<String> {
        self.keys.iter().filter(|(_, on)| *on).map(|(key, _)| key.kid.clone()).collect()
    }

    /// The key set document: `{"keys":[...]}` with the published keys.
    pub(super) fn jwks(&self, issuer: Option<&str>) -> Value {
        let keys: Vec<Value> =
            self.keys.iter().filter(|(_, on)| *on).map(|(key, _)| key.jwk(issuer)).collect();
        json!({ "keys": keys })
    }

    /// Texts that would show a private key had leaked: each private component (RSA `d`, `p`,
    /// `q`, `dp`, `dq`, `qi`; EC `d`) as base64url, base64 and hex, and each line of every
    /// key's PKCS#8 PEM that no public encoding of the key also contains.
    pub(super) fn private_texts(&self) -> Vec<String> {
        let mut texts = Vec::new();
        for (key, _) in &self.keys {
            for component in private_components(&key.pkcs8) {
                texts.push(b64url(component));
                texts.push(b64(component).trim_end_matches('=').to_owned());
                texts.push(crate::fake_azure::wire::hex(component));
            }
            let public = format!("{} {} {}", key.jwk(None), b64(&key.cert), key.spki_pem());
            let pem = pem("PRIVATE KEY", &key.pkcs8);
            let lines = pem.lines().filter(|l| !l.starts_with("-----") && !public.contains(l));
            texts.extend(lines.map(str::to_owned));
        }
        texts.retain(|t| t.len() >= 16);
        texts.sort();
        texts.dedup();
        texts
    }
}

/// The private integers of a PKCS#8 key as ring writes and reads them: RSAPrivateKey's
/// `d` to `qi` (leading zero bytes removed), or ECPrivateKey's `privateKey`.
///
/// # Panics
/// If `pkcs8` is not such a key.
fn private_components(pkcs8: &[u8]) -> Vec<&[u8]> {
    let outer = der(pkcs8).expect("PKCS#8 DER");
    let info = der(outer[0].1).expect("PrivateKeyInfo");
    let private = der(info[2].1).expect("privateKey");
    let key = der(private[0].1).expect("the private key structure");
    if key.len() == 9 {
        key[3..].iter().map(|(_, v)| &v[usize::from(v[0] == 0)..]).collect()
    } else {
        vec![key[1].1]
    }
}

/// The (tag, contents) of each DER element in `input`; `None` if it does not parse.
fn der(mut input: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut elements = Vec::new();
    while let [tag, first, rest @ ..] = input {
        let (len, rest) = match *first {
            n if n < 0x80 => (usize::from(n), rest),
            0x81 => (usize::from(*rest.first()?), rest.get(1..)?),
            0x82 => {
                (usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?])), rest.get(2..)?)
            }
            _ => return None,
        };
        elements.push((*tag, rest.get(..len)?));
        input = &rest[len..];
    }
    input.is_empty().then_some(elements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_with_one_rsa_and_one_ec_key_published() {
        let ring = Keyring::new();
        let published = ring.published();
        assert_eq!(published.len(), 2);
        assert_eq!(ring.signing(Kty::Rsa).unwrap().kid, published[0]);
        assert_eq!(ring.signing(Kty::Ec).unwrap().kid, published[1]);
        // kid is the base64url SHA-1 thumbprint: 27 characters.
        assert!(published.iter().all(|kid| kid.len() == 27));
    }

    #[test]
    fn fixtures_alternate_and_each_key_gets_its_own_kid() {
        let mut ring = Keyring::new();
        let second = ring.make(Kty::Rsa);
        let third = ring.make(Kty::Rsa);
        let kids = [ring.published()[0].clone(), second.clone(), third.clone()];
        assert_ne!(kids[0], kids[1]);
        assert_ne!(kids[0], kids[2]);
        let n = |kid: &str| ring.get(kid).unwrap().jwk(None)["n"].clone();
        assert_ne!(n(&kids[0]), n(&kids[1]), "the second RSA key is the second fixture");
        assert_eq!(n(&kids[0]), n(&kids[2]), "the third RSA key is the first fixture again");
        assert!(!ring.published().contains(&second));
        assert!(ring.set_published(&second, true));
        assert_eq!(ring.signing(Kty::Rsa).unwrap().kid, second);
        assert!(!ring.set_published("no-such-kid", true));
    }

    #[test]
    fn the_key_set_has_public_parts_only() {
        let ring = Keyring::new();
        let jwks = ring.jwks(Some("https://localhost/t/v2.0"));
        for jwk in jwks["keys"].as_array().unwrap() {
            for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                assert!(jwk.get(private).is_none(), "{private} published");
            }
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk["kid"], jwk["x5t"]);
            assert_eq!(jwk["issuer"], "https://localhost/t/v2.0");
        }
        let text = jwks.to_string();
        let secrets = ring.private_texts();
        // Six components in three encodings each, and PEM lines, for the RSA key; the EC `d`.
        assert!(secrets.len() > 6 * 3 + 3, "{}", secrets.len());
        for secret in secrets {
            assert!(!text.contains(&secret));
        }
        assert!(ring.jwks(None)["keys"][0].get("issuer").is_none());
    }

    #[test]
    fn private_components_are_found_in_the_pkcs8() {
        let mut ring = Keyring::new();
        let rsa = ring.signing(Kty::Rsa).unwrap();
        let sizes: Vec<usize> = private_components(&rsa.pkcs8).iter().map(|c| c.len()).collect();
        // d, then p, q, dp, dq, qi of a 2048-bit key (d may be a byte short).
        assert!((255..=256).contains(&sizes[0]), "{sizes:?}");
        assert!(sizes[1..].iter().all(|n| (127..=128).contains(n)), "{sizes:?}");
        let ec = ring.make(Kty::Ec);
        let ec = ring.get(&ec).unwrap();
        assert_eq!(private_components(&ec.pkcs8).iter().map(|c| c.len()).collect::<Vec<_>>(), [32]);
        assert_eq!(der(&[0x30, 0x03, 0x02, 0x01]), None, "truncated");
    }

    #[test]
    fn the_rsa_key_is_2048_bits_with_exponent_65537() {
        let ring = Keyring::new();
        let jwk = ring.signing(Kty::Rsa).unwrap().jwk(None);
        let n = super::super::jose::b64url_decode(jwk["n"].as_str().unwrap()).unwrap();
        assert_eq!(n.len(), 256);
        assert_eq!(jwk["e"], "AQAB");
    }

    #[test]
    fn the_public_key_pem_wraps_the_spki() {
        let ring = Keyring::new();
        let key = ring.signing(Kty::Rsa).unwrap();
        let pem = key.spki_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A"));
        assert!(pem.ends_with("\n-----END PUBLIC KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(key.spki_der().len(), 294);
    }
}
