//! Header hygiene shared by both directions: hop-by-hop removal, message framing and credential
//! stripping.
//!
//! Order matters and is the caller's to keep: hop-by-hop headers (and every header a
//! `Connection` header names) go first, before anything reads or adds a header, so that a
//! client can never name a header it wants dropped after keyward has set it.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The client credential header.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// The identity keyward tells the backend.
pub const X_KEYWARD_CLIENT: HeaderName = HeaderName::from_static("x-keyward-client");
/// The APIM subscription key header.
pub const OCP_APIM_SUBSCRIPTION_KEY: HeaderName =
    HeaderName::from_static("ocp-apim-subscription-key");

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the legacy `Proxy-Connection` and `Keep-Alive`).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Credentials: never passed on as they were sent, in either direction (ingress strips the
/// client's, egress the backend's before adding the route's own).
pub const CREDENTIALS: [HeaderName; 4] =
    [X_API_KEY, header::AUTHORIZATION, OCP_APIM_SUBSCRIPTION_KEY, X_KEYWARD_CLIENT];

/// A client's claims about where it connects from: keyward says who the client is (see
/// `client_addr`), so these never reach the backend either.
const ADDRESS_CLAIMS: [HeaderName; 3] = [
    crate::client_addr::X_FORWARDED_FOR,
    crate::client_addr::FORWARDED,
    HeaderName::from_static("x-real-ip"),
];

/// Why a message's framing is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A malformed `Transfer-Encoding` (400 for a request).
    Invalid,
    /// A transfer coding other than `chunked` (501 for a request, RFC 9112 §6.1).
    UnsupportedCoding,
}

/// Checks a message's `Transfer-Encoding` and removes it and `Content-Length`, leaving the next
/// hop to frame the body as keyward sends it. hyper has already framed the body by them, so
/// a hop that reads them another way (the first of two `Transfer-Encoding` lines, say) never
/// sees them. Only `chunked`, once, is accepted: keyward decodes no other coding and must not
/// pass on one it did not undo. `keep_length` keeps `Content-Length` where it describes a body
/// that is not sent (a response to HEAD, a 304).
pub fn take_framing(headers: &mut HeaderMap, keep_length: bool) -> Result<(), Framing> {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty());
    if let Some(first) = codings.next() {
        if !first.eq_ignore_ascii_case(b"chunked") {
            return Err(Framing::UnsupportedCoding);
        }
        if codings.next().is_some() {
            // `chunked` applied twice, or another coding after it.
            return Err(Framing::Invalid);
        }
    } else if headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(Framing::Invalid);
    }
    headers.remove(header::TRANSFER_ENCODING);
    if !keep_length {
        headers.remove(header::CONTENT_LENGTH);
    }
    Ok(())
}

/// Asks hyper for chunked framing when `body`'s length is not known in advance; a known length
/// gets its `Content-Length` from hyper. (hyper would send an unknown-length GET body as empty.)
pub fn frame_for(headers: &mut HeaderMap, body: &impl http_body::Body) {
    if body.size_hint().exact().is_none() {
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
}

/// Whether a request names its host once and consistently: HTTP/1.1 needs exactly one `Host`
/// (RFC 9112 §3.2), HTTP/1.0 at most one, and on h2 a `Host` beside `:authority` must agree
/// with it (RFC 9113 §8.3.1).
pub fn host_is_sound(parts: &http::request::Parts) -> bool {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let (host, more) = (hosts.next(), hosts.next().is_some());
    if more {
        return false;
    }
    match parts.version {
        http::Version::HTTP_11 => host.is_some(),
        http::Version::HTTP_2 | http::Version::HTTP_3 => match (parts.uri.authority(), host) {
            (Some(authority), Some(host)) => {
                authority.as_str().as_bytes().eq_ignore_ascii_case(host.as_bytes())
            }
            _ => true,
        },
        _ => true,
    }
}

/// Removes hop-by-hop headers and every header named by a `Connection` header.
/// `Transfer-Encoding` and `Content-Length` are [`take_framing`]'s.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let present = present(headers, &HOP_BY_HOP);
    if present == 0 {
        return;
    }
    // Collect the named tokens first: removing while iterating `Connection` is not possible.
    // Hop-by-hop names are removed below anyway, so they need no (allocated) name of their own.
    // Bytes, not text: one non-ASCII token must not hide the others.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter_map(|token| HeaderName::from_bytes(token).ok())
        .filter(|name| !HOP_BY_HOP.contains(name))
        .collect();
    for name in &named {
        headers.remove(name);
    }
    remove_present(headers, &HOP_BY_HOP, present);
}

/// Removes every client credential, any client-sent identity header and address claim.
pub fn strip_client_credentials(headers: &mut HeaderMap) {
    strip(headers, &[&CREDENTIALS, &ADDRESS_CLAIMS]);
}

/// Removes every credential header (egress: whatever the backend set).
pub fn strip_credentials(headers: &mut HeaderMap) {
    strip(headers, &[&CREDENTIALS]);
}

/// Removes every header of `sets`, in one pass over the names present.
fn strip(headers: &mut HeaderMap, sets: &[&[HeaderName]]) {
    let mut offset = 0;
    let mut bits = 0u32;
    let all = || sets.iter().flat_map(|set| set.iter());
    for name in headers.keys() {
        if let Some(i) = all().position(|n| n == name) {
            bits |= 1 << i;
        }
    }
    if bits == 0 {
        return;
    }
    for set in sets {
        remove_present(headers, set, bits >> offset);
        offset += set.len();
    }
}

/// Which of `names` (at most 32) occur in `headers`, as a bit set: one pass over the few names
/// a message carries, rather than a hashed lookup per name whether it is there or not.
fn present(headers: &HeaderMap, names: &[HeaderName]) -> u32 {
    let mut bits = 0;
    for name in headers.keys() {
        if let Some(i) = names.iter().position(|n| n == name) {
            bits |= 1 << i;
        }
    }
    bits
}

fn remove_present(headers: &mut HeaderMap, names: &[HeaderName], bits: u32) {
    for (i, name) in names.iter().enumerate() {
        if bits & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Total size of a header section as HTTP/1.1 would carry it (names, values, `: ` and CRLF).
pub fn section_size(headers: &HeaderMap) -> usize {
    headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn connection_named_headers_go_with_the_hop_by_hop_set() {
        let mut headers = map(&[
            ("connection", "keep-alive, X-Custom , x-keyward-client"),
            ("connection", "upgrade"),
            ("keep-alive", "timeout=5"),
            ("x-custom", "1"),
            ("x-keyward-client", "spoofed"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("mcp-session-id", "abc"),
            ("content-type", "application/json"),
        ]);
        remove_hop_by_hop(&mut headers);
        let mut names: Vec<_> = headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "mcp-session-id"]);
    }

    #[test]
    fn a_non_ascii_connection_token_hides_no_other() {
        let mut headers = HeaderMap::new();
        headers.append("connection", HeaderValue::from_bytes(b"x-foo, \xe9").unwrap());
        headers.append("x-foo", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut headers);
        assert!(headers.is_empty(), "{headers:?}");
    }

    #[test]
    fn a_connection_header_cannot_protect_a_credential_from_stripping() {
        // "Connection: x-api-key" removes the key early; stripping still leaves nothing.
        let mut headers =
            map(&[("connection", "close"), ("x-api-key", "k"), ("authorization", "Bearer t")]);
        remove_hop_by_hop(&mut headers);
        strip_client_credentials(&mut headers);
        assert!(headers.is_empty());
    }

    #[test]
    fn credentials_are_stripped_and_mcp_headers_kept() {
        let mut headers = map(&[
            ("x-api-key", "k1"),
            ("x-api-key", "k2"),
            ("authorization", "Bearer t"),
            ("ocp-apim-subscription-key", "s"),
            ("x-keyward-client", "spoofed"),
            ("mcp-protocol-version", "2025-06-18"),
            ("mcp-method", "tools/call"),
            ("mcp-param-name", "x"),
            ("last-event-id", "7"),
        ]);
        strip_client_credentials(&mut headers);
        let mut names: Vec<_> = headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["last-event-id", "mcp-method", "mcp-param-name", "mcp-protocol-version"]
        );
    }

    #[test]
    fn only_chunked_once_is_accepted_and_framing_never_passes_on() {
        let framing = |pairs: &[(&str, &str)]| {
            let mut headers = map(pairs);
            let outcome = take_framing(&mut headers, false);
            (
                outcome,
                headers.contains_key("transfer-encoding") || headers.contains_key("content-length"),
            )
        };
        for ok in [
            vec![("transfer-encoding", "chunked")],
            vec![("transfer-encoding", "CHUNKED")],
            vec![("transfer-encoding", " chunked\t")],
            vec![("transfer-encoding", "chunked,")],
            vec![("content-length", "5")],
            vec![("content-length", "05"), ("content-length", "5")],
            vec![],
        ] {
            assert_eq!(framing(&ok), (Ok(()), false), "{ok:?}");
        }
        for (bad, why) in [
            (
                vec![("transfer-encoding", "identity"), ("transfer-encoding", "chunked")],
                Framing::UnsupportedCoding,
            ),
            (vec![("transfer-encoding", "gzip, chunked")], Framing::UnsupportedCoding),
            (vec![("transfer-encoding", "chun\tked")], Framing::UnsupportedCoding),
            (vec![("transfer-encoding", "chunked, identity")], Framing::Invalid),
            (
                vec![("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")],
                Framing::Invalid,
            ),
            (vec![("transfer-encoding", "")], Framing::Invalid),
        ] {
            assert_eq!(framing(&bad).0, Err(why), "{bad:?}");
        }
        let mut head = map(&[("content-length", "42"), ("transfer-encoding", "chunked")]);
        assert_eq!(take_framing(&mut head, true), Ok(()));
        assert_eq!(head["content-length"], "42");
        assert!(!head.contains_key("transfer-encoding"));
    }

    #[test]
    fn forwarding_claims_are_stripped_with_the_credentials() {
        let mut headers = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("accept", "*/*"),
        ]);
        strip_client_credentials(&mut headers);
        assert_eq!(headers.keys().map(|n| n.as_str()).collect::<Vec<_>>(), ["accept"]);
    }

    #[test]
    fn section_size_counts_framing() {
        assert_eq!(section_size(&map(&[("ab", "cd")])), 8);
    }
}
