//! The egress path matcher (`keyward::egress::stays_below`) on any path remainder.
//!
//! Input: UTF-8 text, checked twice: as the string itself, and as the egress hands it over
//! (the remainder after the route prefix `/health/` of a request target that `http` parses).
//! Invariant: when `stays_below` says yes, the remainder percent-decoded once (RFC 3986) has,
//! in no `/`-separated segment of the undecoded text, a `.` or `..` segment, a `/` (an encoded
//! slash), a backslash or a NUL; nor has the undecoded text a backslash or a NUL.

#![no_main]

use http::Uri;
use keyward::egress::stays_below;
use keyward_fuzz::percent_decode;
use libfuzzer_sys::fuzz_target;

const PREFIX: &str = "/health/";

fn check(rest: &str) {
    if !stays_below(rest) {
        return;
    }
    assert!(!rest.contains('\\'), "backslash passed: {rest:?}");
    assert!(!rest.contains('\0'), "NUL passed: {rest:?}");
    for segment in rest.split('/') {
        let decoded = percent_decode(segment.as_bytes());
        assert!(decoded != b"." && decoded != b"..", "dot segment {segment:?} passed: {rest:?}");
        for (bad, what) in [(b'/', "encoded slash"), (b'\\', "backslash"), (0, "NUL")] {
            assert!(!decoded.contains(&bad), "{what} in {segment:?} passed: {rest:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check(text);
    if let Ok(uri) = Uri::try_from(format!("{PREFIX}{text}")) {
        if let Some(rest) = uri.path().strip_prefix(PREFIX) {
            check(rest);
        }
    }
});
