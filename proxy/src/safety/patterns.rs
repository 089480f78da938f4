//! Every known secret value in the forms it could travel in, as one `aho-corasick` automaton per
//! snapshot: raw; hex in both cases; percent-encoded (upper- and lower-case escapes); base64 and
//! base64url at each of the three alignments a value can have inside a longer encoded string
//! (only the characters the value alone determines, so padding and neighbours do not matter).
//! The log redactor and the safety net share it.
//!
//! The patterns are secrets. The list kept for the prefix test is zeroized on drop; the
//! automaton's own tables are freed through keyward's zeroizing allocator (see `main.rs`).

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use zeroize::Zeroizing;

use crate::secrets::Snapshot;

/// Values shorter than this are not looked for: they would match ordinary text.
pub(crate) const MIN_LEN: usize = 6;

/// One snapshot's patterns.
#[derive(Debug)]
pub struct Patterns {
    automaton: Option<AhoCorasick>,
    /// The secret each pattern is a form of, by pattern id.
    owners: Vec<Arc<str>>,
    /// Every pattern, sorted, for "is this a prefix of one".
    sorted: Vec<Zeroizing<Vec<u8>>>,
    /// The patterns' first two bytes (a bit per pair) and first bytes (a bit per byte): most
    /// ends of a frame are ruled out by these before any search.
    pairs: Zeroizing<Vec<u64>>,
    firsts: Zeroizing<[u64; 4]>,
    longest: usize,
}

/// One occurrence: where, and whose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Start in the haystack.
    pub start: usize,
    /// End in the haystack.
    pub end: usize,
    /// The secret's name.
    pub secret: Arc<str>,
}

impl Patterns {
    /// No patterns: nothing matches.
    pub fn empty() -> Self {
        Self {
            automaton: None,
            owners: Vec::new(),
            sorted: Vec::new(),
            pairs: Zeroizing::new(vec![0; 1024]),
            firsts: Zeroizing::new([0; 4]),
            longest: 0,
        }
    }

    /// The forms of every current and overlapping value in `snapshot`.
    pub fn build(snapshot: &Snapshot) -> Self {
        let mut forms: Vec<(Zeroizing<Vec<u8>>, Arc<str>)> = Vec::new();
        for (name, versions) in snapshot.iter() {
            let name: Arc<str> = name.into();
            let values =
                std::iter::once(&versions.current).chain(versions.previous.iter().map(|(s, _)| s));
            for secret in values {
                if secret.len() < MIN_LEN {
                    continue;
                }
                for form in encodings(secret.expose()) {
                    if form.len() >= MIN_LEN && !forms.iter().any(|(f, _)| *f == form) {
                        forms.push((form, name.clone()));
                    }
                }
            }
        }
        if forms.is_empty() {
            return Self::empty();
        }
        // A DFA without a prefilter: the patterns begin with alphanumerics like most of what
        // is scanned, so a prefilter's candidates come every few bytes and each restarts the
        // search (measured: 0.95 ms per 64 KiB of base64 text with it, 0.15 ms without).
        let automaton = AhoCorasick::builder()
            .kind(Some(AhoCorasickKind::DFA))
            .prefilter(false)
            .match_kind(MatchKind::LeftmostLongest)
            .build(forms.iter().map(|(f, _)| f.as_slice()))
            .expect("a few hundred literal patterns always build");
        let longest = forms.iter().map(|(f, _)| f.len()).max().unwrap_or(0);
        let owners = forms.iter().map(|(_, n)| n.clone()).collect();
        let mut sorted: Vec<Zeroizing<Vec<u8>>> = forms.into_iter().map(|(f, _)| f).collect();
        sorted.sort_by(|a, b| a.as_slice().cmp(b.as_slice()));
        let mut pairs = Zeroizing::new(vec![0u64; 1024]);
        let mut firsts = Zeroizing::new([0u64; 4]);
        for pattern in &sorted {
            let first = usize::from(pattern[0]);
            firsts[first / 64] |= 1 << (first % 64);
            let pair = first << 8 | usize::from(pattern[1]);
            pairs[pair / 64] |= 1 << (pair % 64);
        }
        Self { automaton: Some(automaton), owners, sorted, pairs, firsts, longest }
    }

    /// Whether there is nothing to look for.
    pub fn is_empty(&self) -> bool {
        self.automaton.is_none()
    }

    /// The longest pattern's length.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// Every occurrence in `haystack`, leftmost-longest, not overlapping.
    pub fn find(&self, haystack: &[u8]) -> Vec<Hit> {
        let Some(automaton) = &self.automaton else { return Vec::new() };
        automaton
            .find_iter(haystack)
            .map(|m| Hit {
                start: m.start(),
                end: m.end(),
                secret: self.owners[m.pattern().as_usize()].clone(),
            })
            .collect()
    }

    /// Whether any occurrence is in `haystack`.
    pub fn is_match(&self, haystack: &[u8]) -> bool {
        self.automaton.as_ref().is_some_and(|a| a.is_match(haystack))
    }

    /// Whether `text` is the beginning of a longer pattern (a match found at the end of what
    /// has come so far may still grow into a longer one).
    pub fn extends(&self, text: &[u8]) -> bool {
        let at = self.sorted.partition_point(|p| p.as_slice() < text);
        self.sorted[at..].iter().take_while(|p| p.starts_with(text)).any(|p| p.len() > text.len())
    }

    /// The length of the longest end of `tail` that begins some pattern (what a stream must
    /// hold back until more comes: a match may be starting there).
    pub fn partial_suffix(&self, tail: &[u8]) -> usize {
        let most = tail.len().min(self.longest.saturating_sub(1));
        (1..=most)
            .rev()
            .find(|&k| {
                let suffix = &tail[tail.len() - k..];
                let first = usize::from(suffix[0]);
                let possible = match suffix.get(1) {
                    Some(&second) => {
                        let pair = first << 8 | usize::from(second);
                        self.pairs[pair / 64] & 1 << (pair % 64) != 0
                    }
                    None => self.firsts[first / 64] & 1 << (first % 64) != 0,
                };
                possible && {
                    let at = self.sorted.partition_point(|p| p.as_slice() < suffix);
                    self.sorted.get(at).is_some_and(|p| p.starts_with(suffix))
                }
            })
            .unwrap_or(0)
    }
}

/// The forms a value is looked for in.
pub(crate) fn encodings(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let mut forms = vec![Zeroizing::new(value.to_vec())];
    let hex_lower: Vec<u8> = value.iter().flat_map(|b| format!("{b:02x}").into_bytes()).collect();
    forms.push(Zeroizing::new(hex_lower.to_ascii_uppercase()));
    forms.push(Zeroizing::new(hex_lower));
    let percent = percent_encode(value);
    forms.push(Zeroizing::new(percent.to_ascii_lowercase_escapes()));
    forms.push(Zeroizing::new(percent));
    for engine in [&STANDARD, &URL_SAFE] {
        // Padded, whole: a value encoded on its own.
        forms.push(Zeroizing::new(engine.encode(value).into_bytes()));
        // Inside a longer encoding, at offset 0, 1 or 2 of a 3-byte group: skip the bytes
        // that share a group with what precedes, keep the characters the rest determines.
        for skip in 0..3 {
            let Some(rest) = value.get(skip..) else { continue };
            let determined = rest.len() * 8 / 6;
            let mut encoded = engine.encode(rest).into_bytes();
            encoded.truncate(determined);
            forms.push(Zeroizing::new(encoded));
        }
    }
    forms
}

/// RFC 3986 percent-encoding of everything but unreserved characters (upper-case escapes).
pub(crate) fn percent_encode(value: &[u8]) -> Vec<u8> {
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

trait LowerEscapes {
    fn to_ascii_lowercase_escapes(&self) -> Vec<u8>;
}

impl LowerEscapes for Vec<u8> {
    /// The same percent-encoding with lower-case hex digits in the escapes.
    fn to_ascii_lowercase_escapes(&self) -> Vec<u8> {
        let mut out = self.clone();
        let mut i = 0;
        while i < out.len() {
            if out[i] == b'%' && i + 2 < out.len() {
                out[i + 1] = out[i + 1].to_ascii_lowercase();
                out[i + 2] = out[i + 2].to_ascii_lowercase();
                i += 3;
            } else {
                i += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{Loaded, Secret, SecretStore};
    use std::time::{Duration, Instant};

    const KEY: &str = "s3ntinel/value+with=signs-0123";

    fn patterns(values: &[(&str, &str)]) -> Patterns {
        let names = values.iter().map(|(n, _)| (*n).to_owned()).collect();
        let store = SecretStore::new(names, Duration::ZERO);
        store.apply(
            values
                .iter()
                .map(|(n, v)| ((*n).to_owned(), Loaded::Value(Secret::from_string((*v).into()))))
                .collect(),
            Instant::now(),
        );
        Patterns::build(&store.snapshot())
    }

    #[test]
    fn a_value_is_found_in_every_form_and_inside_longer_base64_at_any_offset() {
        let patterns = patterns(&[("apim", KEY)]);
        for prefix in ["", "x", "xy", "xyz"] {
            for suffix in ["", "!", "!!"] {
                let text = format!("{prefix}{KEY}{suffix}");
                for engine in [&STANDARD, &URL_SAFE] {
                    let encoded = engine.encode(text.as_bytes()).into_bytes();
                    let hits = patterns.find(&encoded);
                    assert_eq!(
                        hits.len(),
                        1,
                        "{prefix:?} {suffix:?} {}",
                        String::from_utf8_lossy(&encoded)
                    );
                    assert_eq!(&*hits[0].secret, "apim");
                }
            }
        }
        let hex: String = KEY.bytes().map(|b| format!("{b:02X}")).collect();
        // The key has no upper-case letter: lowering all of it lowers its escapes only.
        let lower_percent =
            String::from_utf8(percent_encode(KEY.as_bytes())).unwrap().to_lowercase();
        for form in [KEY.to_owned(), hex.clone(), hex.to_lowercase(), lower_percent] {
            assert!(patterns.is_match(format!("a {form} b").as_bytes()), "{form}");
        }
        assert!(!patterns.is_match(b"an ordinary tools/list answer"));
    }

    #[test]
    fn the_partial_suffix_is_what_could_begin_a_match() {
        let patterns = patterns(&[("k", "abcdefgh")]);
        assert_eq!(patterns.partial_suffix(b"xxxabc"), 3);
        assert_eq!(patterns.partial_suffix(b"xxxab\n\n"), 0);
        assert_eq!(patterns.partial_suffix(b"abcdefg"), 7);
        assert_eq!(Patterns::empty().partial_suffix(b"abc"), 0);
    }

    #[test]
    fn percent_encoding_leaves_only_unreserved_characters() {
        assert_eq!(percent_encode(b"a b/c"), b"a%20b%2Fc");
    }

    #[test]
    fn short_values_are_not_looked_for() {
        assert!(patterns(&[("tiny", "abc")]).is_empty());
    }
}
