//! The bearer-token reader (`keyward::auth::token::jws`) on any text: it never panics, what it
//! accepts has exactly three base64url parts and an allow-listed algorithm, the signing input
//! is the first two parts, and no signature verifies under a key the input did not sign with.

#![no_main]

use keyward::auth::token::jws::{self, Alg, PublicKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let Ok(parsed) = jws::parse(token) else { return };
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "accepted {} parts", parts.len());
    assert_eq!(parsed.signing_input, format!("{}.{}", parts[0], parts[1]).as_bytes());
    assert!(Alg::from_name(match parsed.alg {
        Alg::Rs256 => "RS256",
        Alg::Rs384 => "RS384",
        Alg::Rs512 => "RS512",
        Alg::Ps256 => "PS256",
        Alg::Ps384 => "PS384",
        Alg::Ps512 => "PS512",
        Alg::Es256 => "ES256",
        Alg::Es384 => "ES384",
    })
    .is_some());
    assert!(!parsed.kid.is_empty());
    // A fixed key nobody holds the private half of: nothing the fuzzer writes verifies.
    let rsa = PublicKey::Rsa { n: vec![0xc5; 256], e: vec![1, 0, 1] };
    let p256 = PublicKey::P256([&[4u8][..], &[7; 64]].concat());
    assert!(!rsa.verifies(parsed.alg, parsed.signing_input, &parsed.signature));
    assert!(!p256.verifies(parsed.alg, parsed.signing_input, &parsed.signature));
});
