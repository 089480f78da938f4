//! What the fuzz targets share: a small text format for a request head, so that seed files are
//! readable requests and the fuzzer's mutations stay close to real ones, and a percent-decoder
//! that is written from RFC 3986, not from keyward.
//!
//! The format: lines separated by LF (a CR before it is dropped). The first line is a request
//! line (`GET /mcp?x=1 HTTP/1.1`; versions `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`, `HTTP/3`) when it
//! parses as one; otherwise the head is `GET / HTTP/1.1` and the first line is a header line.
//! A header line is `name: value`, with the value trimmed of spaces and tabs as an HTTP/1.1
//! parser does; `!name:value` keeps the value exactly as written (what an h2 peer can send).
//! A line that `http` would not accept as a header is skipped.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri, Version};

/// A request head built from fuzz input.
#[derive(Debug, Clone)]
pub struct Head {
    /// The request method.
    pub method: Method,
    /// The request target.
    pub uri: Uri,
    /// The HTTP version.
    pub version: Version,
    /// The header lines that `http` accepted, in order.
    pub headers: HeaderMap,
}

impl Head {
    /// The head as `http::request::Parts`, as hyper hands it to keyward.
    pub fn parts(&self) -> http::request::Parts {
        let mut request = http::Request::new(());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request.into_parts().0
    }
}

/// The lines of `data`, without their CR LF.
pub fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line))
}

/// Parses a whole head (see the module documentation).
pub fn parse_head(data: &[u8]) -> Head {
    let mut lines = lines(data).peekable();
    let mut head = Head {
        method: Method::GET,
        uri: Uri::from_static("/"),
        version: Version::HTTP_11,
        headers: HeaderMap::new(),
    };
    if let Some((method, uri, version)) = lines.peek().and_then(|line| request_line(line)) {
        (head.method, head.uri, head.version) = (method, uri, version);
        lines.next();
    }
    head.headers = headers(lines);
    head
}

/// The header lines among `lines` that `http` accepts.
pub fn headers<'a>(lines: impl Iterator<Item = &'a [u8]>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in lines.filter_map(header_line) {
        headers.append(name, value);
    }
    headers
}

fn request_line(line: &[u8]) -> Option<(Method, Uri, Version)> {
    let mut parts = line.split(|&b| b == b' ');
    let method = Method::from_bytes(parts.next()?).ok()?;
    let uri = Uri::try_from(parts.next()?).ok()?;
    let version = match parts.next()? {
        b"HTTP/1.0" => Version::HTTP_10,
        b"HTTP/1.1" => Version::HTTP_11,
        b"HTTP/2" | b"HTTP/2.0" => Version::HTTP_2,
        b"HTTP/3" => Version::HTTP_3,
        _ => return None,
    };
    parts.next().is_none().then_some((method, uri, version))
}

/// One `name: value` (or `!name:value`, untrimmed) line.
pub fn header_line(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let (verbatim, line) = match line.strip_prefix(b"!") {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let colon = line.iter().position(|&b| b == b':')?;
    let name = HeaderName::from_bytes(&line[..colon]).ok()?;
    let value = &line[colon + 1..];
    let value = if verbatim { value } else { trim_ows(value) };
    Some((name, HeaderValue::from_bytes(value).ok()?))
}

/// `bytes` without leading and trailing spaces and tabs (RFC 9110's OWS).
pub fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// RFC 3986 percent-decoding, once: `%` and two hex digits is that byte; any other `%` is
/// itself.
pub fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
            {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode(b"a%2Fb%2e%zz%4"), b"a/b.%zz%4");
        assert_eq!(percent_decode(b"%41"), b"A");
        assert_eq!(percent_decode(b"%"), b"%");
    }

    #[test]
    fn heads() {
        let head = parse_head(b"POST /mcp?a=1 HTTP/2\r\nHost: x\r\n!te:\ttrailers \nbad line\n");
        assert_eq!(head.method, Method::POST);
        assert_eq!(head.uri, "/mcp?a=1");
        assert_eq!(head.version, Version::HTTP_2);
        assert_eq!(head.headers["host"], "x");
        assert_eq!(head.headers["te"], "\ttrailers ");
        assert_eq!(head.headers.len(), 2);
        assert_eq!(parse_head(b"x: 1").headers["x"], "1");
    }
}
