//! The per-request cost of the constant-time key check, with 1, 10 and 100 clients.
//!
//! Run: `cargo bench -p keyward --bench auth`. The check digests the presented key once and
//! compares it with every accepted digest, so its cost grows with the number of clients.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue, Uri};
use keyward::auth::{Authenticator, FailureLimiter};
use keyward::config::ClientConfig;
use keyward::secrets::Secret;
use keyward::secrets::{Consumer, Loaded, SecretStore};

fn key(i: usize) -> String {
    format!("client-{i:03}-key-0123456789abcdef0123456789")
}

fn setup(clients: usize) -> Authenticator {
    let configs: Vec<ClientConfig> = (0..clients)
        .map(|i| ClientConfig {
            id: format!("client-{i}"),
            secret: Some(format!("secret-{i}")),
            token_ids: Vec::new(),
        })
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

criterion_group!(benches, key_check);
criterion_main!(benches);
