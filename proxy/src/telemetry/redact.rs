//! The last line of defence: every formatted log line and exported span attribute is scanned
//! for the current secret values, raw and in the encodings a value travels in (base64, base64url,
//! hex, percent-encoding), and each occurrence is replaced by `[REDACTED]`.
//!
//! Redaction by type (`Secret`, sensitive header values) is the first defence; this one catches
//! what a future change might format by mistake. The patterns are themselves secrets and live in
//! zeroizing memory.

use std::io::{self, Write};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tracing_subscriber::fmt::MakeWriter;
use zeroize::Zeroizing;

use crate::secrets::Snapshot;

/// Values shorter than this are not scanned for: they would match ordinary words.
const MIN_LEN: usize = 6;

const REDACTED: &[u8] = b"[REDACTED]";

/// The current patterns, swapped whole when the secrets change.
#[derive(Debug, Default)]
pub struct Redactor {
    patterns: ArcSwap<Vec<Zeroizing<Vec<u8>>>>,
}

impl crate::secrets::Consumer for Redactor {
    /// Replaces the patterns with every value (current and overlapping) in `snapshot`.
    fn rebuild(&self, snapshot: &Snapshot) {
        let mut patterns = Vec::new();
        for versions in snapshot.values() {
            let values =
                std::iter::once(&versions.current).chain(versions.previous.iter().map(|(s, _)| s));
            for secret in values {
                patterns.extend(encodings(secret.expose()));
            }
        }
        patterns.retain(|p| p.len() >= MIN_LEN);
        // Longest first, so a value is replaced whole before a shorter encoding of it is tried.
        patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
        patterns.dedup();
        self.patterns.store(Arc::new(patterns));
    }
}

impl Redactor {
    /// `text` with every pattern replaced; borrowed when nothing matched (the common case).
    pub fn redact<'a>(&self, text: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        let patterns = self.patterns.load();
        let mut out: Option<Vec<u8>> = None;
        for pattern in patterns.iter() {
            let current: &[u8] = out.as_deref().unwrap_or(text);
            if let Some(replaced) = replace_all(current, pattern) {
                out = Some(replaced);
            }
        }
        match out {
            Some(redacted) => std::borrow::Cow::Owned(redacted),
            None => std::borrow::Cow::Borrowed(text),
        }
    }

    /// A string with every pattern replaced.
    pub fn redact_str(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.redact(text.as_bytes())).into_owned()
    }
}

fn replace_all(haystack: &[u8], needle: &[u8]) -> Option<Vec<u8>> {
    let first = find(haystack, needle)?;
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    let mut at = Some(first);
    while let Some(i) = at {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(REDACTED);
        rest = &rest[i + needle.len()..];
        at = find(rest, needle);
    }
    out.extend_from_slice(rest);
    Some(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// The forms a value is looked for in.
fn encodings(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let std64 = base64(value, STD);
    let url64: Vec<u8> = base64(value, URL).into_iter().filter(|b| *b != b'=').collect();
    let unpadded: Vec<u8> = std64.iter().copied().filter(|b| *b != b'=').collect();
    let hex_lower: Vec<u8> = value.iter().flat_map(|b| format!("{b:02x}").into_bytes()).collect();
    let hex_upper = hex_lower.to_ascii_uppercase();
    let percent = percent_encode(value);
    [value.to_vec(), std64, unpadded, url64, hex_lower, hex_upper, percent]
        .into_iter()
        .map(Zeroizing::new)
        .collect()
}

fn base64(value: &[u8], alphabet: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len().div_ceil(3) * 4);
    for chunk in value.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
fn percent_encode(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// A `MakeWriter` that redacts each formatted event before it reaches stdout.
#[derive(Debug, Clone)]
pub struct RedactingStdout {
    redactor: Arc<Redactor>,
}

impl RedactingStdout {
    /// Writes through `redactor`.
    pub fn new(redactor: Arc<Redactor>) -> Self {
        Self { redactor }
    }
}

/// One event's writer: it buffers the event and writes it redacted, in one piece, on drop.
#[derive(Debug)]
pub struct EventWriter {
    redactor: Arc<Redactor>,
    buffer: Zeroizing<Vec<u8>>,
}

impl Write for EventWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let redacted = self.redactor.redact(&self.buffer);
        let mut stdout = io::stdout().lock();
        let _ = stdout.write_all(&redacted);
        let _ = stdout.flush();
    }
}

impl<'a> MakeWriter<'a> for RedactingStdout {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            redactor: self.redactor.clone(),
            buffer: Zeroizing::new(Vec::with_capacity(256)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Consumer;
    use crate::secrets::Secret;
    use crate::secrets::{Loaded, SecretStore};
    use std::time::{Duration, Instant};

    const SENTINEL: &str = "s3ntinel/value+with=signs";

    fn redactor() -> Redactor {
        let store = SecretStore::new(vec!["k".into()], Duration::ZERO);
        store.apply(
            vec![("k".into(), Loaded::Value(Secret::from_string(SENTINEL.into())))],
            Instant::now(),
        );
        let redactor = Redactor::default();
        redactor.rebuild(&store.snapshot());
        redactor
    }

    #[test]
    fn every_encoding_is_replaced() {
        let redactor = redactor();
        let forms = encodings(SENTINEL.as_bytes());
        assert!(forms.len() >= 6);
        for form in forms {
            let line = [b"before ".as_slice(), &form, b" after ", &form].concat();
            let out = redactor.redact(&line).into_owned();
            assert_eq!(
                out,
                b"before [REDACTED] after [REDACTED]",
                "{}",
                String::from_utf8_lossy(&form)
            );
        }
    }

    #[test]
    fn known_encodings_are_right() {
        assert_eq!(
            base64(
                b"any carnal pleas",
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
            ),
            b"YW55IGNhcm5hbCBwbGVhcw=="
        );
        assert_eq!(percent_encode(b"a b/c"), b"a%20b%2Fc");
    }

    #[test]
    fn clean_text_is_borrowed() {
        let redactor = redactor();
        assert!(matches!(redactor.redact(b"nothing to see"), std::borrow::Cow::Borrowed(_)));
    }
}
