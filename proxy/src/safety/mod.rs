//! The safety net: no known secret value reaches a client, or the backend from an upstream, in
//! any encoding [`patterns`] knows, and none leaves by way of a backend's request to an
//! upstream. A last resort behind the first defences (secrets by type, credentials stripped).
//!
//! - Responses (egress to the backend, ingress to clients) are scanned as they stream, frame by
//!   frame: all but the end that could begin a match is passed on at once, so at most the
//!   longest pattern's length less one byte is ever held back, and an SSE event's own end
//!   (`\n\n`) is never held. Header values are scanned too.
//! - On a hit, `redact` (the default) replaces each occurrence with `[REDACTED]` (the body's
//!   length changes, so it goes out chunked or as h2 DATA, never with the upstream's
//!   `Content-Length`); `block` stops the response: before its headers, a 502; after, the
//!   stream is cut (HTTP/1.1 closes the connection, h2 resets the stream), an SSE stream first
//!   getting a last JSON-RPC error event at an event boundary.
//! - Compressed bodies cannot be scanned: keyward removes `Accept-Encoding` on the way to the
//!   backend and upstreams, and an answer that is compressed all the same is a 502.
//! - Each hit is counted (`keyward_secret_leaks_blocked_total{listener,secret}`, the name only)
//!   and audited at WARN with the secret's name and the route or client, never with the text
//!   around it.

pub mod patterns;

use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use serde::Deserialize;

use crate::metrics::{Listener, Metrics};
use crate::secrets::Snapshot;
pub use patterns::{Hit, Patterns};

/// What replaces an occurrence.
pub const REDACTED: &[u8] = b"[REDACTED]";

/// What happens on a hit (`ingress.safety_net`, `egress.safety_net`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Replace each occurrence with `[REDACTED]`.
    #[default]
    Redact,
    /// Stop the response.
    Block,
    /// Do not scan (for measuring the net's cost; `check-config` warns).
    Off,
}

/// The current snapshot's patterns, rebuilt on every snapshot; shared by the log redactor and
/// every listener.
#[derive(Debug)]
pub struct KnownSecrets {
    patterns: ArcSwap<Patterns>,
}

impl Default for KnownSecrets {
    fn default() -> Self {
        Self { patterns: ArcSwap::from_pointee(Patterns::empty()) }
    }
}

impl crate::secrets::Consumer for KnownSecrets {
    /// One automaton of every current and overlapping value's forms.
    fn rebuild(&self, snapshot: &Snapshot) {
        self.patterns.store(Arc::new(Patterns::build(snapshot)));
    }
}

impl KnownSecrets {
    /// The patterns now.
    pub fn patterns(&self) -> Arc<Patterns> {
        self.patterns.load_full()
    }

    /// `text` with every occurrence replaced; borrowed when there was none (the usual case).
    pub fn redact<'a>(&self, text: &'a [u8]) -> Cow<'a, [u8]> {
        let patterns = self.patterns.load();
        let hits = patterns.find(text);
        if hits.is_empty() {
            return Cow::Borrowed(text);
        }
        Cow::Owned(replace(text, &hits))
    }

    /// A string with every occurrence replaced.
    pub fn redact_str(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.redact(text.as_bytes())).into_owned()
    }
}

/// `text` with each hit replaced by [`REDACTED`].
fn replace(text: &[u8], hits: &[Hit]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    for hit in hits {
        out.extend_from_slice(&text[at..hit.start]);
        out.extend_from_slice(REDACTED);
        at = hit.end;
    }
    out.extend_from_slice(&text[at..]);
    out
}

/// Where a scan happens, for the audit event and the metric.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub(crate) listener: Listener,
    /// The client id (ingress) or route prefix (egress).
    pub(crate) name: Arc<str>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Place {
    /// Counts and audits each hit, by the secret's name only.
    pub(crate) fn report(&self, hits: &[Hit], what: &'static str, mode: Mode) {
        for hit in hits {
            self.metrics.record_leak(self.listener, &hit.secret);
            let listener = self.listener.label();
            tracing::warn!(
                target: "keyward::audit",
                decision = match mode { Mode::Block => "block", _ => "redact" },
                reason = "secret_in_response",
                listener,
                secret = &*hit.secret,
                place = &*self.name,
                what,
                "a known secret value was found in a response"
            );
        }
    }
}

/// One listener's net: its mode and the shared patterns.
#[derive(Debug, Clone)]
pub(crate) struct Net {
    known: Arc<KnownSecrets>,
    mode: Mode,
}

impl Net {
    pub(crate) fn new(known: Arc<KnownSecrets>, mode: Mode) -> Self {
        Self { known, mode }
    }

    /// Whether it looks at all.
    pub(crate) fn is_on(&self) -> bool {
        self.mode != Mode::Off
    }

    /// A response on its way. Refused if compressed (it cannot be read) or, in block mode, if
    /// a header carries a secret; header values carrying one are redacted. A body of known
    /// length up to [`WHOLE_BUFFER`] (in block mode [`BLOCK_BUFFER`], so that a hit is a 502
    /// before any byte is sent) is read whole and scanned once; any other is scanned as it
    /// streams.
    pub(crate) async fn response(
        &self,
        response: http::Response<crate::forward::UpstreamBody>,
        place: Place,
        head: bool,
    ) -> Result<http::Response<crate::Body>, crate::error::ProxyError> {
        use http_body_util::{Either, Full};
        if !self.is_on() {
            return Ok(response.map(Either::Left));
        }
        let (mut parts, body) = response.into_parts();
        let patterns = self.known.patterns();
        self.head(&patterns, &mut parts, &place, head)?;
        if head || patterns.is_empty() {
            return Ok(http::Response::from_parts(parts, Either::Left(body)));
        }
        let sse = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
        // A body of known, small length is read whole and scanned once: it keeps its
        // `Content-Length` framing, and in block mode a hit is a 502 before any byte of it.
        let limit = if self.mode == Mode::Block { BLOCK_BUFFER } else { WHOLE_BUFFER };
        let small = http_body::Body::size_hint(&body).exact().is_some_and(|n| n <= limit);
        if !sse && small {
            let bytes = whole(body).await?;
            let bytes = self.scan(&patterns, bytes, &place)?;
            return Ok(http::Response::from_parts(parts, Either::Right(Full::new(bytes))));
        }
        let scanner = Scanner::new(patterns, self.mode, place, sse);
        Ok(http::Response::from_parts(parts, Either::Left(body.rewritten(scanner))))
    }

    /// The parts of a response before its body: refused if its body is compressed (unless
    /// there is no body), header values checked.
    pub(crate) fn check_head(
        &self,
        parts: &mut http::response::Parts,
        place: &Place,
        head: bool,
    ) -> Result<(), crate::error::ProxyError> {
        if !self.is_on() {
            return Ok(());
        }
        self.head(&self.known.patterns(), parts, place, head)
    }

    fn head(
        &self,
        patterns: &Patterns,
        parts: &mut http::response::Parts,
        place: &Place,
        head: bool,
    ) -> Result<(), crate::error::ProxyError> {
        let coded = parts
            .headers
            .get(http::header::CONTENT_ENCODING)
            .is_some_and(|c| !c.as_bytes().eq_ignore_ascii_case(b"identity"));
        if coded && !head {
            tracing::warn!(
                listener = place.listener.label(),
                place = &*place.name,
                "a compressed answer cannot be checked for secrets; refused"
            );
            return Err(crate::error::ProxyError::Unscannable);
        }
        self.headers(patterns, &mut parts.headers, place)
    }

    /// A whole body keyward holds (a rewritten JSON answer): redacted, or refused in block mode.
    pub(crate) fn bytes(
        &self,
        bytes: Bytes,
        place: &Place,
    ) -> Result<Bytes, crate::error::ProxyError> {
        if !self.is_on() {
            return Ok(bytes);
        }
        self.scan(&self.known.patterns(), bytes, place)
    }

    fn scan(
        &self,
        patterns: &Patterns,
        bytes: Bytes,
        place: &Place,
    ) -> Result<Bytes, crate::error::ProxyError> {
        let hits = patterns.find(&bytes);
        if hits.is_empty() {
            return Ok(bytes);
        }
        place.report(&hits, "body", self.mode);
        match self.mode {
            Mode::Block => Err(crate::error::ProxyError::SecretInResponse),
            _ => Ok(Bytes::from(replace(&bytes, &hits))),
        }
    }

    /// Response header values: each one carrying a secret redacted whole, or the response
    /// refused in block mode.
    fn headers(
        &self,
        patterns: &Patterns,
        headers: &mut http::HeaderMap,
        place: &Place,
    ) -> Result<(), crate::error::ProxyError> {
        if patterns.is_empty() {
            return Ok(());
        }
        let mut found = false;
        for value in headers.values_mut() {
            if value.len() < patterns::MIN_LEN {
                continue;
            }
            let hits = patterns.find(value.as_bytes());
            if !hits.is_empty() {
                place.report(&hits, "header", self.mode);
                found = true;
                *value = http::HeaderValue::from_static("[REDACTED]");
            }
        }
        if found && self.mode == Mode::Block {
            return Err(crate::error::ProxyError::SecretInResponse);
        }
        Ok(())
    }

    /// The secrets in what the backend asks an upstream for: its target, its header values
    /// (before keyward adds the route's credential) and its body.
    pub(crate) fn request_hits(&self, parts: &http::request::Parts, body: &[u8]) -> Vec<Hit> {
        if !self.is_on() {
            return Vec::new();
        }
        let patterns = self.known.patterns();
        let target = parts.uri.path_and_query().map_or("", |p| p.as_str());
        let mut hits = patterns.find(target.as_bytes());
        for value in parts.headers.values() {
            hits.extend(patterns.find(value.as_bytes()));
        }
        hits.extend(patterns.find(body));
        hits
    }
}

/// A body of known length, read to its end: one frame as it came (the usual case), several
/// joined. It stops at the length instead of polling once more for the end, and a dropped
/// pooled body whose end was read hands its connection back.
async fn whole(body: crate::forward::UpstreamBody) -> Result<Bytes, crate::error::ProxyError> {
    use http_body::Body as _;
    use http_body_util::BodyExt;
    let mut body = std::pin::pin!(body);
    let mut first = Bytes::new();
    let mut joined = BytesMut::new();
    while !body.is_end_stream() {
        let Some(frame) = body.frame().await else { break };
        let frame = frame.map_err(|_| crate::error::ProxyError::UpstreamUnavailable)?;
        let Ok(data) = frame.into_data() else { continue };
        if first.is_empty() {
            first = data;
        } else {
            if joined.is_empty() {
                joined.extend_from_slice(&first);
            }
            joined.extend_from_slice(&data);
        }
    }
    Ok(if joined.is_empty() { first } else { joined.freeze() })
}

/// The largest body of known length that block mode reads whole before answering.
pub(crate) const BLOCK_BUFFER: u64 = 1024 * 1024;

/// The largest body of known length that redact mode reads whole (larger ones stream).
pub(crate) const WHOLE_BUFFER: u64 = 64 * 1024;

/// A response stopped by the net.
#[derive(Debug, thiserror::Error)]
#[error("the response carried a known secret value and was stopped")]
pub(crate) struct Stopped;

/// Scans one response body as it streams.
#[derive(Debug)]
pub(crate) struct Scanner {
    patterns: Arc<Patterns>,
    mode: Mode,
    place: Place,
    /// An SSE stream: a block ends it with a JSON-RPC error event.
    sse: bool,
    carry: BytesMut,
    /// The part of the last chunk after its seam with `carry`, not scanned yet.
    rest: Option<Bytes>,
    stopped: bool,
}

impl Scanner {
    pub(crate) fn new(patterns: Arc<Patterns>, mode: Mode, place: Place, sse: bool) -> Self {
        Self { patterns, mode, place, sse, carry: BytesMut::new(), rest: None, stopped: false }
    }

    /// What to send for the next chunk.
    pub(crate) fn data(&mut self, chunk: Bytes) -> Result<Bytes, Stopped> {
        if self.stopped {
            return Err(Stopped);
        }
        let buffer = if self.carry.is_empty() {
            chunk
        } else if chunk.len() > self.patterns.longest() {
            return self.seam(chunk);
        } else {
            self.carry.extend_from_slice(&chunk);
            self.carry.split().freeze()
        };
        let mut hits = self.patterns.find(&buffer);
        // A match at the very end may grow into a longer pattern: hold it until it is whole.
        let mut hold_at = None;
        if let Some(last) = hits.last() {
            if self.patterns.extends(&buffer[last.start..]) {
                hold_at = Some(last.start);
                hits.pop();
            }
        }
        if hits.is_empty() && hold_at.is_none() {
            let hold = self.patterns.partial_suffix(&buffer);
            let send = buffer.len() - hold;
            self.carry.extend_from_slice(&buffer[send..]);
            // What is sent is a view of what came, not a copy.
            return Ok(buffer.slice(..send));
        }
        if !hits.is_empty() {
            self.place.report(&hits, "body", self.mode);
            if self.mode == Mode::Block {
                return self.stop(&buffer[..hits[0].start]);
            }
        }
        let upto = hold_at.unwrap_or_else(|| {
            let after = hits.last().map_or(0, |h| h.end);
            buffer.len() - self.patterns.partial_suffix(&buffer[after..])
        });
        let out = replace(&buffer[..upto], &hits);
        self.carry.extend_from_slice(&buffer[upto..]);
        Ok(Bytes::from(out))
    }

    /// What was held back, with as much of `chunk` as an occurrence beginning in it can
    /// reach, scanned on its own so that `chunk` is not copied behind it: what is sent now.
    /// The rest of `chunk` is scanned and sent next ([`Scanner::pending`]).
    fn seam(&mut self, chunk: Bytes) -> Result<Bytes, Stopped> {
        let held = self.carry.len();
        self.carry.extend_from_slice(&chunk[..self.patterns.longest() - 1]);
        let seam = self.carry.split().freeze();
        // An occurrence beginning in what was held lies whole in the seam; one beginning
        // after it is found again in the rest.
        let mut hits = self.patterns.find(&seam);
        hits.retain(|hit| hit.start < held);
        if !hits.is_empty() {
            self.place.report(&hits, "body", self.mode);
            if self.mode == Mode::Block {
                return self.stop(&seam[..hits[0].start]);
            }
        }
        let resume = hits.last().map_or(held, |hit| hit.end.max(held));
        self.rest = Some(chunk.slice(resume - held..));
        Ok(Bytes::from(replace(&seam[..resume], &hits)))
    }

    /// The rest of the last chunk after its seam, scanned.
    pub(crate) fn pending(&mut self) -> Result<Option<Bytes>, Stopped> {
        match self.rest.take() {
            Some(rest) => self.data(rest).map(Some),
            None => Ok(None),
        }
    }

    /// Stops the stream: an error, or for SSE what came before the event with the hit and a
    /// last error event (then an error).
    fn stop(&mut self, before: &[u8]) -> Result<Bytes, Stopped> {
        self.stopped = true;
        if !self.sse {
            return Err(Stopped);
        }
        let boundary = before.windows(2).rposition(|w| w == b"\n\n").map_or(0, |i| i + 2);
        let mut out = BytesMut::from(&before[..boundary]);
        // The error answers the request the stopped event answered, so that the client's call
        // ends at once (a null id would be no answer at all).
        let id = event_id(&before[boundary..]).unwrap_or(b"\"keyward-stopped\"");
        out.extend_from_slice(b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":");
        out.extend_from_slice(id);
        out.extend_from_slice(STOPPED_ERROR);
        Ok(out.freeze())
    }

    /// What is held back, checked once more, at the end of the stream (after the rest of any
    /// seamed chunk has been taken: [`Scanner::pending`]).
    pub(crate) fn end(&mut self) -> Result<Bytes, Stopped> {
        debug_assert!(self.rest.is_none(), "end before the pending rest was taken");
        if self.stopped {
            return Err(Stopped);
        }
        let rest = self.carry.split().freeze();
        let hits = self.patterns.find(&rest);
        if hits.is_empty() {
            return Ok(rest);
        }
        self.place.report(&hits, "body", self.mode);
        if self.mode == Mode::Block {
            return self.stop(&rest[..hits[0].start]);
        }
        Ok(Bytes::from(replace(&rest, &hits)))
    }
}

impl crate::forward::Rewrite for Scanner {
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, crate::forward::BoxError> {
        Scanner::data(self, chunk).map_err(Into::into)
    }

    fn pending(&mut self) -> Result<Option<Bytes>, crate::forward::BoxError> {
        Scanner::pending(self).map_err(Into::into)
    }

    fn end(&mut self) -> Result<Bytes, crate::forward::BoxError> {
        Scanner::end(self).map_err(Into::into)
    }
}

/// The rest of the event an SSE stream gets before a block cuts it, after its id.
const STOPPED_ERROR: &[u8] = b",\"error\":{\"code\":-32603,\"message\":\"keyward stopped this \
response: it carried a credential\"}}\n\n";

/// The JSON-RPC id of the message an event's data begins, as JSON text (a number or a
/// string), read from the event's text so far: the first `"id":` and the token after it.
fn event_id(event: &[u8]) -> Option<&[u8]> {
    let at = event.windows(5).position(|w| w == b"\"id\":")? + 5;
    let rest = &event[at..];
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    let len = match rest.first()? {
        b'"' => {
            let mut escaped = false;
            let end = rest[1..].iter().position(|&b| {
                let end = b == b'"' && !escaped;
                escaped = b == b'\\' && !escaped;
                end
            })?;
            end + 2
        }
        b'-' | b'0'..=b'9' => rest.iter().take_while(|b| b.is_ascii_digit() || **b == b'-').count(),
        _ => return None,
    };
    Some(&rest[..len])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{Consumer, Loaded, Secret, SecretStore};
    use base64::Engine;
    use std::time::{Duration, Instant};

    const KEY: &str = "apim-key-5c3a1e9f7d2b4068";

    fn known() -> KnownSecrets {
        let store = SecretStore::new(vec!["apim".into()], Duration::ZERO);
        store.apply(
            vec![("apim".into(), Loaded::Value(Secret::from_string(KEY.into())))],
            Instant::now(),
        );
        let known = KnownSecrets::default();
        known.rebuild(&store.snapshot());
        known
    }

    fn scanner(mode: Mode, sse: bool) -> Scanner {
        let place =
            Place { listener: Listener::Egress, name: "/health/".into(), metrics: Arc::default() };
        Scanner::new(known().patterns(), mode, place, sse)
    }

    fn run(scanner: &mut Scanner, chunks: &[&[u8]]) -> Result<Vec<u8>, Stopped> {
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend_from_slice(&scanner.data(Bytes::copy_from_slice(chunk))?);
            while let Some(rest) = scanner.pending()? {
                out.extend_from_slice(&rest);
            }
        }
        out.extend_from_slice(&scanner.end()?);
        Ok(out)
    }

    #[test]
    fn a_value_split_anywhere_across_frames_is_redacted() {
        let text = format!(
            "{{\"echo\":\"{KEY}\",\"b64\":\"{}\"}}",
            base64::engine::general_purpose::STANDARD.encode(KEY)
        );
        for split in 1..text.len() {
            let (a, b) = text.as_bytes().split_at(split);
            let out = run(&mut scanner(Mode::Redact, false), &[a, b]).unwrap();
            assert_eq!(out, br#"{"echo":"[REDACTED]","b64":"[REDACTED]"}"#, "split at {split}");
        }
    }

    #[test]
    fn a_stream_in_any_frames_comes_out_as_the_whole_text_redacted() {
        // Values in every form, next to each other and to text that begins them, in frames
        // of every size from one byte to longer than the longest pattern: what comes out is
        // what redacting the whole text gives, however it was cut.
        let b64 = base64::engine::general_purpose::STANDARD.encode(KEY);
        let hex: String = KEY.bytes().map(|b| format!("{b:02x}")).collect();
        let text = format!("apim-{KEY}{KEY} x {b64}apim-ke {hex}a{KEY}apim-key-5c3a1e9f7d2b406");
        let want = known().redact(text.as_bytes()).into_owned();
        assert!(!want.windows(KEY.len()).any(|w| w == KEY.as_bytes()));
        for size in 1..=text.len() {
            for offset in 0..size.min(7) {
                let bytes = text.as_bytes();
                let mut chunks = vec![&bytes[..offset]];
                chunks.extend(bytes[offset..].chunks(size));
                let out = run(&mut scanner(Mode::Redact, false), &chunks).unwrap();
                assert_eq!(out, want, "frames of {size} after {offset}");
            }
        }
    }

    #[test]
    fn a_long_frame_after_a_held_end_is_sent_as_it_came() {
        let mut scanner = scanner(Mode::Redact, false);
        assert_eq!(scanner.data(Bytes::from_static(b"text apim-")).unwrap(), &b"text "[..]);
        let long = Bytes::from(format!("{}{}", "x".repeat(200), "y".repeat(200)));
        let head = scanner.data(long.clone()).unwrap();
        assert_eq!(head.len(), b"apim-".len(), "the held bytes only");
        let rest = scanner.pending().unwrap().unwrap();
        assert_eq!(rest.as_ptr(), long[head.len() - b"apim-".len()..].as_ptr(), "not copied");
        assert_eq!([head, rest].concat(), [&b"apim-"[..], &long].concat());
        assert!(scanner.pending().unwrap().is_none());
    }

    #[test]
    fn clean_frames_pass_at_once_and_an_event_s_end_is_never_held() {
        let mut scanner = scanner(Mode::Redact, true);
        let event = Bytes::from_static(b"data: {\"ok\":true}\n\n");
        assert_eq!(scanner.data(event.clone()).unwrap(), event);
        // A frame ending in what could begin the key holds only that.
        let out = scanner.data(Bytes::from_static(b"data: apim-")).unwrap();
        assert_eq!(out, &b"data: "[..]);
        assert_eq!(scanner.data(Bytes::from_static(b"other\n\n")).unwrap(), &b"apim-other\n\n"[..]);
    }

    #[test]
    fn block_cuts_the_stream_and_an_sse_stream_gets_a_last_error_event() {
        let leak = format!("data: {KEY}\n\n");
        assert!(run(&mut scanner(Mode::Block, false), &[leak.as_bytes()]).is_err());
        let mut sse = scanner(Mode::Block, true);
        let first = sse.data(Bytes::from_static(b"data: one\n\n")).unwrap();
        assert_eq!(first, &b"data: one\n\n"[..]);
        let second = sse.data(Bytes::from(format!("data: two\n\ndata: x{KEY}\n\n"))).unwrap();
        assert!(
            second.starts_with(b"data: two\n\nevent: message\ndata: {\"jsonrpc\""),
            "{second:?}"
        );
        assert!(!String::from_utf8_lossy(&second).contains(KEY));
        assert!(sse.data(Bytes::from_static(b"more")).is_err());
    }

    #[test]
    fn the_redactor_replaces_every_form() {
        let known = known();
        let hex: String = KEY.bytes().map(|b| format!("{b:02x}")).collect();
        let line = format!("a {KEY} b {hex} c");
        assert_eq!(known.redact(line.as_bytes()), &b"a [REDACTED] b [REDACTED] c"[..]);
        assert!(matches!(known.redact(b"nothing"), Cow::Borrowed(_)));
    }
}
