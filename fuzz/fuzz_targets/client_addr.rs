//! The client address behind front proxies (`keyward::client_addr::TrustedProxies`) for any
//! trusted set, peer and forwarding headers.
//!
//! Input: line 1 the trusted networks (CIDRs or addresses, separated by spaces or commas, as
//! `ingress.trusted_proxies` takes them; the invalid ones skipped), line 2 the TCP peer
//! (`10.0.0.2` when it is not an address), then header lines in the format of `keyward_fuzz`.
//! Invariants:
//! - the result is the peer (IPv4-mapped IPv6 as IPv4) or an address written in an
//!   `X-Forwarded-For` or `Forwarded` line, and never an IPv4-mapped IPv6 address;
//! - it is the peer whenever the peer is not trusted or neither header is there;
//! - a client cannot choose its address: when the result is not a trusted proxy, a forged
//!   entry added in front (where a client writes) changes nothing.

#![no_main]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};

use http::header::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use keyward::client_addr::{TrustedProxies, FORWARDED, X_FORWARDED_FOR};
use keyward_fuzz::{headers, lines};
use libfuzzer_sys::fuzz_target;

const FORGED: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66));

fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

fn networks(line: &[u8]) -> Vec<IpNet> {
    String::from_utf8_lossy(line)
        .split([' ', ','])
        .filter_map(|text| {
            text.parse::<IpNet>()
                .map(|net| net.trunc())
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .ok()
        })
        .collect()
}

/// Every address written anywhere in the forwarding headers: each run of characters an
/// address can have, and each piece of it, parsed on its own.
fn written(headers: &HeaderMap) -> HashSet<IpAddr> {
    let mut found = HashSet::new();
    for name in [&X_FORWARDED_FOR, &FORWARDED] {
        for value in headers.get_all(name) {
            let text = String::from_utf8_lossy(value.as_bytes());
            let runs = text.split(|c: char| !(c.is_ascii_hexdigit() || c == ':' || c == '.'));
            for run in runs.filter(|run| !run.is_empty()) {
                // A run may hold an address and a port (`192.0.2.1:80`, `::1]:80` is split
                // at the bracket already): try every start and end inside it.
                for start in 0..run.len() {
                    for end in (start + 2..=run.len().min(start + 45)).rev() {
                        if let Ok(addr) = run[start..end].parse::<IpAddr>() {
                            found.insert(canonical(addr));
                        }
                    }
                }
            }
        }
    }
    found
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 2048 {
        return; // `written` is quadratic in a run's length; long inputs add nothing here.
    }
    let mut input = lines(data);
    let nets = networks(input.next().unwrap_or_default());
    let peer = std::str::from_utf8(input.next().unwrap_or_default())
        .ok()
        .and_then(|text| text.trim().parse::<IpAddr>().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
    let headers = headers(input);
    let trusts = |addr: IpAddr| nets.iter().any(|net| net.contains(&canonical(addr)));

    let proxies = TrustedProxies::new(nets.clone());
    assert_eq!(proxies.is_empty(), nets.is_empty());
    let client = proxies.client_addr(peer, &headers);

    assert_eq!(client, canonical(client), "not canonical: {client}");
    let forwarding = headers.contains_key(&X_FORWARDED_FOR) || headers.contains_key(&FORWARDED);
    if !trusts(peer) || !forwarding {
        assert_eq!(client, canonical(peer), "an untrusted or direct peer is the client");
    }
    if client != canonical(peer) {
        assert!(written(&headers).contains(&client), "{client} is written nowhere: {headers:?}");
    }

    if !trusts(client) && forwarding {
        let name =
            if headers.contains_key(&X_FORWARDED_FOR) { &X_FORWARDED_FOR } else { &FORWARDED };
        let forged =
            if name == X_FORWARDED_FOR { FORGED.to_string() } else { format!("for={FORGED}") };
        let mut more = HeaderMap::new();
        more.append(name.clone(), HeaderValue::from_str(&forged).unwrap());
        for (name, value) in &headers {
            more.append(name.clone(), value.clone());
        }
        assert_eq!(proxies.client_addr(peer, &more), client, "a forged entry moved the client");
    }
});
