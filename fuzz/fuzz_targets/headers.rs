//! Header hygiene (`keyward::headers`) on any request head.
//!
//! Input: a request head in the format of `keyward_fuzz` (request line, `name: value` lines).
//! Invariants, each checked against the untouched head:
//! - `remove_hop_by_hop` removes every hop-by-hop header and every header a `Connection` token
//!   names, and nothing else (every other header keeps its values, in order);
//! - `take_framing` accepts exactly "no `Transfer-Encoding`" or `chunked` once, and then leaves
//!   no `Transfer-Encoding` and (unless `keep_length`) no `Content-Length`, every other header
//!   untouched; an `Err` carries the reason (`UnsupportedCoding` when the first coding is not
//!   `chunked`, else `Invalid`) and leaves the head as it was;
//! - `strip_client_credentials` leaves none of the credential and address-claim headers
//!   (`X-Forwarded-For`, `Forwarded`, `X-Real-IP`), `strip_credentials` (egress) none of the
//!   credential headers, and both every other header as it was;
//! - `host_is_sound`: never with two `Host` lines, HTTP/1.1 needs one, h2 needs it to match
//!   `:authority`; and every head that obeys those rules is sound;
//! - in the ingress's order (hop-by-hop, framing, credentials), nothing of the above survives.

#![no_main]

use std::collections::HashSet;

use http::header::{self, HeaderMap, HeaderName};
use http::Version;
use keyward::headers::{self as hygiene, Framing};
use keyward_fuzz::{parse_head, trim_ows, Head};
use libfuzzer_sys::fuzz_target;

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

const CREDENTIALS: [&str; 4] =
    ["x-api-key", "authorization", "ocp-apim-subscription-key", "x-keyward-client"];

const ADDRESS_CLAIMS: [&str; 3] = ["x-forwarded-for", "forwarded", "x-real-ip"];

fuzz_target!(|data: &[u8]| {
    let head = parse_head(data);
    check_hop_by_hop(&head.headers);
    check_framing(&head.headers, false);
    check_framing(&head.headers, true);
    check_strip(&head.headers);
    check_host(&head);
    check_pipeline(&head.headers);
});

/// Every header of `before` whose name `dropped` does not claim is in `after` with the same
/// values in the same order, and `after` has no header that `before` lacked.
fn only_dropped(before: &HeaderMap, after: &HeaderMap, dropped: impl Fn(&HeaderName) -> bool) {
    for name in before.keys() {
        if dropped(name) {
            assert!(!after.contains_key(name), "{name} survived: {after:?}");
        } else {
            assert!(
                before.get_all(name).iter().eq(after.get_all(name).iter()),
                "{name} changed: {before:?} -> {after:?}"
            );
        }
    }
    assert!(after.keys().all(|name| before.contains_key(name)), "{after:?} gained a header");
}

fn check_hop_by_hop(before: &HeaderMap) {
    // The tokens of every Connection line, read from its bytes: a token that is not text
    // must not hide the others (a finding of this target, fixed in 03c7908).
    let named: HashSet<HeaderName> = before
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|token| HeaderName::from_bytes(trim_ows(token)).ok())
        .collect();
    let mut after = before.clone();
    hygiene::remove_hop_by_hop(&mut after);
    only_dropped(before, &after, |name| {
        HOP_BY_HOP.contains(&name.as_str()) || named.contains(name)
    });
}

fn check_framing(before: &HeaderMap, keep_length: bool) {
    let codings: Vec<&[u8]> = before
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(trim_ows)
        .filter(|coding| !coding.is_empty())
        .collect();
    let expected = match codings.as_slice() {
        [] if before.contains_key(header::TRANSFER_ENCODING) => Err(Framing::Invalid),
        [] => Ok(()),
        [first, ..] if !first.eq_ignore_ascii_case(b"chunked") => Err(Framing::UnsupportedCoding),
        [_] => Ok(()),
        [_, _, ..] => Err(Framing::Invalid),
    };
    let mut after = before.clone();
    let outcome = hygiene::take_framing(&mut after, keep_length);
    assert_eq!(outcome, expected, "{before:?}");
    match outcome {
        Ok(()) => only_dropped(before, &after, |name| {
            name == header::TRANSFER_ENCODING || (!keep_length && name == header::CONTENT_LENGTH)
        }),
        Err(_) => assert_eq!(&after, before, "a refused head must be left as it was"),
    }
}

fn check_strip(before: &HeaderMap) {
    let mut after = before.clone();
    hygiene::strip_client_credentials(&mut after);
    only_dropped(before, &after, |name| {
        CREDENTIALS.contains(&name.as_str()) || ADDRESS_CLAIMS.contains(&name.as_str())
    });
    let mut after = before.clone();
    hygiene::strip_credentials(&mut after);
    only_dropped(before, &after, |name| CREDENTIALS.contains(&name.as_str()));
}

fn check_host(head: &Head) {
    let parts = head.parts();
    let sound = hygiene::host_is_sound(&parts);
    let hosts: Vec<_> = head.headers.get_all(header::HOST).iter().collect();
    let authority = head.uri.authority();
    let agrees = match (authority, hosts.first()) {
        (Some(authority), Some(host)) => {
            authority.as_str().as_bytes().eq_ignore_ascii_case(host.as_bytes())
        }
        _ => true,
    };
    let h2 = matches!(head.version, Version::HTTP_2 | Version::HTTP_3);
    if sound {
        assert!(hosts.len() <= 1, "two Host lines are never sound: {head:?}");
        if head.version == Version::HTTP_11 {
            assert_eq!(hosts.len(), 1, "HTTP/1.1 needs a Host: {head:?}");
        }
        if h2 {
            assert!(agrees, "Host must agree with :authority: {head:?}");
        }
    } else {
        let needed_one = head.version == Version::HTTP_11 && hosts.is_empty();
        let mismatch = h2 && !agrees;
        assert!(hosts.len() > 1 || needed_one || mismatch, "refused a sound head: {head:?}");
    }
}

/// The ingress's order: nothing hop-by-hop, no framing, no credential survives all three.
fn check_pipeline(before: &HeaderMap) {
    let mut headers = before.clone();
    hygiene::remove_hop_by_hop(&mut headers);
    if hygiene::take_framing(&mut headers, false).is_err() {
        return;
    }
    hygiene::strip_client_credentials(&mut headers);
    let framing = ["transfer-encoding", "content-length"];
    let gone = HOP_BY_HOP.iter().chain(&CREDENTIALS).chain(&ADDRESS_CLAIMS).chain(&framing);
    for name in gone {
        assert!(!headers.contains_key(*name), "{name} reached the backend: {headers:?}");
    }
    assert_eq!(
        hygiene::section_size(&headers),
        headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum::<usize>()
    );
}
