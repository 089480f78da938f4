//! The key check (`keyward::auth::Authenticator::check_key`) on any header section and query.
//!
//! Input: a request head in the format of `keyward_fuzz`; every `$KEY` in it is first replaced
//! by the one client's key (32 characters), so that the fuzzer can present the right key among
//! wrong ones. The authenticator has one client, `fuzz`, and a failure limit that never trips.
//! Invariants:
//! - `Ok` only with exactly one `X-Api-Key` line equal to the key byte for byte and no query
//!   parameter whose name, percent-decoded once and folded to lower-case letters and digits,
//!   is a credential name (the list keyward documents: api_key, x-api-key, key, token, ...);
//!   and then the client is `fuzz` with `X-Keyward-Client: fuzz`;
//! - with exactly one right key and a query without `%` and without such a name, `Ok`;
//! - every refusal has its reason: `Missing` with no key line, `Repeated` with two or more,
//!   `Oversize` over 512 bytes, `Invalid` for one wrong key, `KeyInQuery` only with a query
//!   (and always when that query names a credential in plain text); never `NoKeys` nor
//!   `RateLimited`.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use keyward::auth::{Authenticator, Denial, FailureLimiter, MAX_KEY_BYTES};
use keyward::config::ClientConfig;
use keyward::secrets::Secret;
use keyward::secrets::{Consumer, Loaded, SecretStore};
use keyward_fuzz::{parse_head, percent_decode};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "kw-fuzz-key-0123456789abcdefghij";
const SECRET_NAME: &str = "fuzz-client-key";
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

/// Query parameter names that carry a credential, folded as documented in `auth`.
const CREDENTIAL_PARAMS: [&str; 9] = [
    "apikey",
    "xapikey",
    "key",
    "subscriptionkey",
    "ocpapimsubscriptionkey",
    "accesstoken",
    "token",
    "authorization",
    "password",
];

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        assert_eq!(KEY.len(), 32);
        let store = SecretStore::new(vec![SECRET_NAME.into()], Duration::from_secs(60));
        let loaded = Loaded::Value(Secret::from_string(KEY.to_owned()));
        store.apply(vec![(SECRET_NAME.into(), loaded)], Instant::now());
        let clients = vec![ClientConfig::with_key("fuzz", SECRET_NAME)];
        // Failures are counted, but a bucket this large never empties within a run.
        let auth = Authenticator::new(FailureLimiter::new(u32::MAX, u32::MAX), clients);
        auth.rebuild(&store.snapshot());
        auth
    })
}

/// Whether some parameter of `query` is named like a credential, by RFC 3986 decoding.
fn names_credential(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or_default();
        let folded: String = percent_decode(name.as_bytes())
            .iter()
            .filter(|b| b.is_ascii_alphanumeric())
            .map(|b| b.to_ascii_lowercase() as char)
            .collect();
        CREDENTIAL_PARAMS.contains(&folded.as_str())
    })
}

fuzz_target!(|data: &[u8]| {
    let data = replace(data, b"$KEY", KEY.as_bytes());
    let head = parse_head(&data);
    let outcome = authenticator().check_key(&head.headers, &head.uri, PEER);

    let keys: Vec<&[u8]> = head.headers.get_all("x-api-key").iter().map(|v| v.as_bytes()).collect();
    let right_key = matches!(keys.as_slice(), [only] if *only == KEY.as_bytes());
    let query = head.uri.query();
    let in_query = query.is_some_and(names_credential);
    let plain_query = query.is_none_or(|q| !q.contains('%'));

    match outcome {
        Ok(client) => {
            assert!(right_key, "accepted without exactly one right key: {keys:?}");
            assert!(!in_query, "accepted with a credential in the query: {query:?}");
            assert_eq!(&*client.id, "fuzz");
            assert_eq!(client.header, "fuzz");
            assert_eq!(client.index, 0);
        }
        Err(denial) => {
            assert!(
                !(right_key && !in_query && plain_query),
                "refused ({denial:?}) the right key with a clean query: {query:?}"
            );
            if plain_query && in_query {
                assert_eq!(denial, Denial::KeyInQuery, "{query:?}");
            }
            match denial {
                Denial::KeyInQuery => assert!(query.is_some()),
                Denial::Missing => assert!(keys.is_empty()),
                Denial::Repeated => assert!(keys.len() >= 2),
                Denial::Oversize => assert!(keys.len() == 1 && keys[0].len() > MAX_KEY_BYTES),
                Denial::Invalid => {
                    assert!(keys.len() == 1 && keys[0] != KEY.as_bytes());
                    assert!(keys[0].len() <= MAX_KEY_BYTES);
                }
                Denial::NoKeys | Denial::RateLimited(_) => panic!("{denial:?} with a key loaded"),
                Denial::BothSchemes | Denial::Token(_) => panic!("{denial:?} from the key check"),
            }
        }
    }
});

fn replace(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while let Some(at) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}
