//! Who the client is when keyward sits behind a front proxy (the Container Apps ingress, a
//! Kubernetes ingress controller): the address the failure limiter, the audit events and the
//! access log use.
//!
//! Forwarding headers are believed only from a TCP peer inside `ingress.trusted_proxies`, and
//! then only as far back as the chain of trusted hops goes: the client address is the rightmost
//! address that is not itself a trusted proxy. A client can therefore never choose its own
//! address, and a header it forged is ignored wherever a trusted hop appended behind it. This
//! module never forwards those headers; the ingress removes them.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// `X-Forwarded-For`: comma-separated addresses, the nearest hop last.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// RFC 7239 `Forwarded`.
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// The networks whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Trusts peers in `networks`; none trusts no one (the peer is the client).
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks)
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.0.iter().any(|net| net.contains(&addr))
    }

    /// The client's address for a request from TCP peer `peer`. `X-Forwarded-For` is read when
    /// present (it is what the Container Apps and most Kubernetes ingresses append), else
    /// `Forwarded: for=`. An entry that is not an address (`unknown`, an obfuscated name, a
    /// malformed value) ends the walk at the hop that wrote it.
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if self.0.is_empty() || !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<Option<IpAddr>> = if headers.contains_key(X_FORWARDED_FOR) {
            list(headers, &X_FORWARDED_FOR).map(parse_xff).collect()
        } else {
            list(headers, &FORWARDED).filter_map(parse_forwarded_for).collect()
        };
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            match hop {
                Some(addr) => {
                    client = canonical(addr);
                    if !self.trusts(client) {
                        break;
                    }
                }
                None => break,
            }
        }
        client
    }
}

/// The comma-separated elements of every line of `name`, in order; a line that is not text
/// counts as one malformed element.
fn list<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("\u{0}").split(','))
        .map(str::trim)
}

/// `192.0.2.1`, `2001:db8::1`, or with a port: `192.0.2.1:4711`, `[2001:db8::1]:4711`.
fn parse_xff(element: &str) -> Option<IpAddr> {
    let element = element.trim_matches('"');
    if let Ok(addr) = element.parse::<IpAddr>() {
        return Some(addr);
    }
    if let Ok(socket) = element.parse::<std::net::SocketAddr>() {
        return Some(socket.ip());
    }
    element.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// The `for=` of one `Forwarded` element: `Some(None)` when it names no usable address,
/// `None` when the element has no `for=` at all (it says nothing about this hop).
fn parse_forwarded_for(element: &str) -> Option<Option<IpAddr>> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim().eq_ignore_ascii_case("for").then(|| parse_xff(value.trim()))
    })
}

/// IPv4-mapped IPv6 addresses as IPv4, so `::ffff:10.0.0.1` is in `10.0.0.0/8`.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append((*name).clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_address() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let forged = headers(&[(&X_FORWARDED_FOR, "198.51.100.7"), (&FORWARDED, "for=1.2.3.4")]);
        assert_eq!(proxies.client_addr(ip("203.0.113.5"), &forged), ip("203.0.113.5"));
        assert_eq!(TrustedProxies::default().client_addr(ip("10.1.1.1"), &forged), ip("10.1.1.1"));
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let proxies = trusted(&["10.0.0.0/8", "fd00::/8"]);
        // The client forged the first entry; the trusted hops appended the rest.
        let chain =
            headers(&[(&X_FORWARDED_FOR, "1.1.1.1, 198.51.100.7"), (&X_FORWARDED_FOR, "10.0.0.3")]);
        assert_eq!(proxies.client_addr(ip("10.0.0.2"), &chain), ip("198.51.100.7"));
        let v6 = headers(&[(&X_FORWARDED_FOR, "[2001:db8::5]:443, fd00::1")]);
        assert_eq!(proxies.client_addr(ip("::ffff:10.0.0.2"), &v6), ip("2001:db8::5"));
        let with_port = headers(&[(&X_FORWARDED_FOR, "198.51.100.7:5050")]);
        assert_eq!(proxies.client_addr(ip("10.0.0.2"), &with_port), ip("198.51.100.7"));
    }

    #[test]
    fn a_malformed_entry_ends_the_walk_at_the_hop_that_wrote_it() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let chain = headers(&[(&X_FORWARDED_FOR, "198.51.100.7, garbage, 10.0.0.9")]);
        assert_eq!(proxies.client_addr(ip("10.0.0.2"), &chain), ip("10.0.0.9"));
        let none = HeaderMap::new();
        assert_eq!(proxies.client_addr(ip("10.0.0.2"), &none), ip("10.0.0.2"));
        let all_trusted = headers(&[(&X_FORWARDED_FOR, "10.9.9.9, 10.0.0.3")]);
        assert_eq!(proxies.client_addr(ip("10.0.0.2"), &all_trusted), ip("10.9.9.9"));
    }

    #[test]
    fn forwarded_is_read_when_x_forwarded_for_is_absent() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let chain = headers(&[(
            &FORWARDED,
            "for=1.1.1.1, for=\"[2001:db8::7]:80\";proto=https, by=10.0.0.1;for=10.0.0.4",
        )]);
        assert_eq!(proxies.client_addr(ip("10.0.0.2"), &chain), ip("2001:db8::7"));
        let hidden = headers(&[(&FORWARDED, "for=198.51.100.1, for=_hidden, for=10.0.0.4")]);
        assert_eq!(proxies.client_addr(ip("10.0.0.2"), &hidden), ip("10.0.0.4"));
    }
}
