//! Header hygiene shared by both directions: hop-by-hop removal and credential stripping.
//!
//! Order matters and is the caller's to keep: hop-by-hop headers (and every header a
//! `Connection` header names) go first, before anything reads or adds a header, so that a
//! client can never name a header it wants dropped after keyward has set it.

use http::header::{self, HeaderMap, HeaderName};

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

/// Credentials a client may send that must never reach the backend.
const CLIENT_CREDENTIALS: [HeaderName; 4] =
    [X_API_KEY, header::AUTHORIZATION, OCP_APIM_SUBSCRIPTION_KEY, X_KEYWARD_CLIENT];

/// Removes hop-by-hop headers and every header named by a `Connection` header.
/// `Transfer-Encoding` is left to hyper, which owns message framing on both sides.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let present = present(headers, &HOP_BY_HOP);
    if present == 0 {
        return;
    }
    // Collect the named tokens first: removing while iterating `Connection` is not possible.
    // Hop-by-hop names are removed below anyway, so they need no (allocated) name of their own.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| !HOP_BY_HOP.iter().any(|h| h.as_str().eq_ignore_ascii_case(token)))
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect();
    for name in &named {
        headers.remove(name);
    }
    remove_present(headers, &HOP_BY_HOP, present);
}

/// Removes every client credential and any client-sent identity header.
pub fn strip_client_credentials(headers: &mut HeaderMap) {
    let present = present(headers, &CLIENT_CREDENTIALS);
    remove_present(headers, &CLIENT_CREDENTIALS, present);
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
    use http::HeaderValue;

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
    fn section_size_counts_framing() {
        assert_eq!(section_size(&map(&[("ab", "cd")])), 8);
    }
}
