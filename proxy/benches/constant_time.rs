//! dudect tests of the key check: Welch's t between two classes of inputs that must take the
//! same time. |t| under 5 after 10^6 measurements means no leak this test can see.
//!
//! Run: `cargo bench -p keyward --bench constant_time` (tests/bench/run runs it too). Each
//! bench prints `max t`; the classes:
//! - `near_miss_vs_random`: wrong keys as long as the real one, differing only in the last byte,
//!   against random keys of that length (a comparison with an early exit fails this).
//! - `short_vs_long_accepted_key`: one presented key checked against a keyring whose key is
//!   16 bytes and against one whose key is 256 bytes (accepted keys are compared as digests, so
//!   their lengths must not show).
//! - `first_vs_last_of_100`: a near miss of the first of 100 clients' keys against a near miss
//!   of the last one's (every entry is compared, however close one comes).
//!
//! A check's time does grow with the number of clients and with the presented key's length:
//! neither is a secret of anyone but the caller.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dudect_bencher::rand::{Rng, RngExt};
use dudect_bencher::{ctbench_main, BenchRng, Class, CtRunner};
use http::{HeaderMap, HeaderValue, Uri};
use keyward::auth::{Authenticator, FailureLimiter};
use keyward::config::ClientConfig;
use keyward::secrets::Secret;
use keyward::secrets::{Consumer, Loaded, SecretStore};

const SAMPLES: usize = 1_000_000;

/// An authenticator for `keys`, one client each, that never rate-limits (so that failures do
/// not change the path taken).
fn authenticator(keys: &[String]) -> Authenticator {
    let configs: Vec<ClientConfig> = (0..keys.len())
        .map(|i| ClientConfig::with_key(format!("client-{i}"), format!("secret-{i}")))
        .collect();
    let store =
        SecretStore::new(configs.iter().filter_map(|c| c.secret.clone()).collect(), Duration::ZERO);
    let values = keys
        .iter()
        .enumerate()
        .map(|(i, key)| (format!("secret-{i}"), Loaded::Value(Secret::from_string(key.clone()))))
        .collect();
    store.apply(values, Instant::now());
    let auth = Authenticator::new(FailureLimiter::new(u32::MAX, u32::MAX), configs);
    auth.rebuild(&store.snapshot());
    auth
}

fn headers(key: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_bytes(key).expect("header-safe key"));
    headers
}

fn random_key(rng: &mut BenchRng, len: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len).map(|_| ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()]).collect()
}

/// Runs `SAMPLES` checks, each input's class drawn at random. `prepare` builds the input of a
/// class right before it is timed (fresh memory for both classes alike, not timed) and says
/// which authenticator checks it. Every authenticator is warmed with the input first, so that
/// what is timed is a check on data in cache, whichever class: dudect sees any systematic
/// difference, and where memory sits is not the key check's.
fn measure(
    runner: &mut CtRunner,
    rng: &mut BenchRng,
    auths: &[Authenticator],
    mut prepare: impl FnMut(Class, &mut BenchRng) -> (usize, HeaderMap),
) {
    let uri: Uri = "/mcp".parse().unwrap();
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    for _ in 0..SAMPLES {
        let class = if rng.random::<bool>() { Class::Left } else { Class::Right };
        let (which, headers) = prepare(class, rng);
        for auth in auths {
            std::hint::black_box(auth.check_key(&headers, &uri, peer).is_ok());
        }
        runner.run_one(class, || auths[which].check_key(&headers, &uri, peer).is_ok());
    }
}

fn near_miss_vs_random(runner: &mut CtRunner, rng: &mut BenchRng) {
    let real = String::from_utf8(random_key(rng, 43)).unwrap();
    let mut near = real.clone().into_bytes();
    *near.last_mut().unwrap() ^= 1;
    let auths = [authenticator(&[real])];
    measure(runner, rng, &auths, |class, rng| {
        // The same preparation for both classes: only the bytes differ.
        let mut key = random_key(rng, 43);
        if matches!(class, Class::Left) {
            key.copy_from_slice(&near);
        }
        (0, headers(&key))
    });
}

fn short_vs_long_accepted_key(runner: &mut CtRunner, rng: &mut BenchRng) {
    // Fresh authenticators for every sample, both kinds built (in a random order) whichever
    // the class: two long-lived objects would differ in where they sit in memory, and building
    // only the class's own would differ in the work done just before: dudect sees both, and
    // neither is the key check's.
    let short = String::from_utf8(random_key(rng, 16)).unwrap();
    let long = String::from_utf8(random_key(rng, 256)).unwrap();
    let presented = headers(&random_key(rng, 43));
    let uri: Uri = "/mcp".parse().unwrap();
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    for _ in 0..SAMPLES {
        let class = if rng.random::<bool>() { Class::Left } else { Class::Right };
        let (first, second) = if rng.random::<bool>() { (&short, &long) } else { (&long, &short) };
        let built = [
            authenticator(std::slice::from_ref(first)),
            authenticator(std::slice::from_ref(second)),
        ];
        let wanted = if matches!(class, Class::Left) { &short } else { &long };
        let auth = &built[usize::from(first != wanted)];
        for auth in &built {
            std::hint::black_box(auth.check_key(&presented, &uri, peer).is_ok());
        }
        runner.run_one(class, || auth.check_key(&presented, &uri, peer).is_ok());
    }
}

fn first_vs_last_of_100(runner: &mut CtRunner, rng: &mut BenchRng) {
    // Near misses of the first and of the last client's key: a comparison that stopped at the
    // entry that almost matched would take longer for the last one. (Which client a valid key
    // belongs to is the answer itself, not a secret from the one who presented it.)
    let keys: Vec<String> =
        (0..100).map(|_| String::from_utf8(random_key(rng, 43)).unwrap()).collect();
    let near = |key: &String| {
        let mut bytes = key.clone().into_bytes();
        *bytes.last_mut().unwrap() ^= 1;
        bytes
    };
    let (first, last) = (near(&keys[0]), near(&keys[99]));
    let auths = [authenticator(&keys)];
    measure(runner, rng, &auths, |class, _| match class {
        Class::Left => (0, headers(&first)),
        Class::Right => (0, headers(&last)),
    });
}

ctbench_main!(near_miss_vs_random, short_vs_long_accepted_key, first_vs_last_of_100);
