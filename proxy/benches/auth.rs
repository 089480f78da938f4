//! The per-request cost of authentication: the constant-time key check with 1, 10 and 100
//! clients, and bearer-token validation (RS256, PS256, ES256) with the issuer's keys cached.
//!
//! Run: `cargo bench -p keyward --bench auth`. The key check digests the presented key once
//! and compares it with every accepted digest, so its cost grows with the number of clients.
//! A token's first sight costs its signature verification plus parsing its JSON; a token seen
//! before (clients present the same one for an hour) costs the SHA-256 of its text and a
//! cache lookup.

use std::future::Future;
use std::net::IpAddr;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue, Uri};
use keyward::auth::{Authenticator, FailureLimiter, Tokens};
use keyward::config::{ClientConfig, Config};
use keyward::secrets::Secret;
use keyward::secrets::{Consumer, Loaded, SecretStore};
use keyward_tests::fake_idp::{Alg, FakeIdp};

fn key(i: usize) -> String {
    format!("client-{i:03}-key-0123456789abcdef0123456789")
}

fn setup(clients: usize) -> Authenticator {
    let configs: Vec<ClientConfig> = (0..clients)
        .map(|i| ClientConfig::with_key(format!("client-{i}"), format!("secret-{i}")))
        .collect();
    let store =
        SecretStore::new(configs.iter().filter_map(|c| c.secret.clone()).collect(), Duration::ZERO);
    let values = (0..clients)
        .map(|i| (format!("secret-{i}"), Loaded::Value(Secret::from_string(key(i)))))
        .collect();
    store.apply(values, Instant::now());
    let auth = Authenticator::new(FailureLimiter::new(60, 10), configs);
    auth.rebuild(&store.snapshot());
    auth
}

fn key_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("key_check");
    let uri: Uri = "/mcp".parse().unwrap();
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    for clients in [1, 10, 100] {
        let auth = setup(clients);
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_str(&key(clients - 1)).unwrap());
        group.bench_with_input(BenchmarkId::new("clients", clients), &clients, |b, _| {
            b.iter(|| auth.check_key(&headers, &uri, peer).expect("accepted"))
        });
    }
    group.finish();
}

/// The future's output when it is ready at its first poll (a token whose key is cached never
/// waits); panics otherwise.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a token with a cached key waited"),
    }
}

fn token_check(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let idp = runtime.block_on(FakeIdp::start());
    let config = Config::parse(&format!(
        "[ingress.oauth]\nresource = \"https://mcp.example.com/mcp\"\n\
         [[ingress.oauth.issuers]]\nissuer = \"{}\"\naudiences = [\"{}\"]\n\
         [[ingress.clients]]\nid = \"agent\"\ntoken_ids = [\"agent-app\"]\n\
         [secrets]\nsource = \"file\"\ndir = \"/nonexistent\"\n",
        idp.issuer(),
        idp.resource_app_id()
    ))
    .expect("bench config");
    let oauth = config.ingress.oauth.as_ref().expect("oauth");
    let tokens = Tokens::new(oauth, &config.ingress.clients);
    assert!(tokens.install_keys(&idp.issuer(), idp.jwks().to_string().as_bytes()));
    let claims = idp.claims("agent-app");
    let mut group = c.benchmark_group("token_check");
    for alg in [Alg::Rs256, Alg::Ps256, Alg::Es256] {
        let token = idp.signed(alg, &claims);
        ready(tokens.validate(&token)).expect("a valid token");
        let first = format!("{}/first_sight", alg.name());
        group.bench_function(first, |b| b.iter(|| ready(tokens.validate_without_cache(&token))));
        let again = format!("{}/seen_before", alg.name());
        group.bench_function(again, |b| b.iter(|| ready(tokens.validate(&token))));
    }
    group.finish();
}

criterion_group!(benches, key_check, token_check);
criterion_main!(benches);
