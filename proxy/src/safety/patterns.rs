//! Every known secret value in the forms it could travel in, as one `aho-corasick` automaton per
//! snapshot: raw; hex in both cases; percent-encoded (upper- and lower-case escapes); base64 and
//! base64url at each of the three alignments a value can have inside a longer encoded string
//! (only the characters the value alone determines, so padding and neighbours do not matter).
//! The log redactor and the safety net share it.
//!
//! Most text holds no secret, and the automaton looks at every byte. A sampling filter in front
//! of it (Wu and Manber's idea, reduced to a set) looks at one window of [`Q`] bytes in every
//! `step`: every pattern is at least `shortest` bytes long, so any occurrence contains the window
//! at a multiple of `step = shortest - Q + 1`, and that window is one of the pattern's. Only
//! where a window is in the set of every pattern's windows does the automaton run, over the span
//! an occurrence containing that window could cover. Its answer is the automaton's own, whole.
//!
//! The patterns are secrets. The list kept for the prefix test and the window set are zeroized
//! on drop; the automaton's own tables are freed through keyward's zeroizing allocator (see
//! `main.rs`).

use std::ops::Range;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, Input, MatchKind};
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine;
use zeroize::Zeroizing;

use crate::secrets::Snapshot;

/// Values shorter than this are not looked for: they would match ordinary text.
pub(crate) const MIN_LEN: usize = 6;
const _: () = assert!(MIN_LEN >= Q, "the sampling filter's window fits in every pattern");

/// The sampling filter's window: four bytes, read as one `u32`.
const Q: usize = 4;

/// One snapshot's patterns.
#[derive(Debug)]
pub struct Patterns {
    automaton: Option<AhoCorasick>,
    windows: Windows,
    /// The filter's stride: the shortest pattern's length less `Q - 1`.
    step: usize,
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
            windows: Windows::new([]),
            step: 1,
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
        let shortest = forms.iter().map(|(f, _)| f.len()).min().unwrap_or(0);
        let windows = Windows::new(
            forms.iter().flat_map(|(f, _)| (0..=f.len() - Q).map(move |at| window(f, at))),
        );
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
        let step = shortest - Q + 1;
        Self { automaton: Some(automaton), windows, step, owners, sorted, pairs, firsts, longest }
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
        let mut hits = Vec::new();
        for span in self.candidates(haystack) {
            hits.extend(automaton.find_iter(Input::new(haystack).range(span)).map(|m| Hit {
                start: m.start(),
                end: m.end(),
                secret: self.owners[m.pattern().as_usize()].clone(),
            }));
        }
        hits
    }

    /// Whether any occurrence is in `haystack`.
    pub fn is_match(&self, haystack: &[u8]) -> bool {
        let Some(automaton) = &self.automaton else { return false };
        self.candidates(haystack)
            .into_iter()
            .any(|span| automaton.is_match(Input::new(haystack).range(span)))
    }

    /// The disjoint spans of `haystack` that may hold an occurrence, in order: around each
    /// sampled window that is one of a pattern's, as far as an occurrence containing it reaches.
    /// An occurrence lies whole inside one span, so searching the spans alone finds what a
    /// search of all of `haystack` finds.
    fn candidates(&self, haystack: &[u8]) -> Vec<Range<usize>> {
        let mut spans: Vec<Range<usize>> = Vec::new();
        // A plain loop: `step_by` spent a checked addition and a branch on every window.
        let ends = haystack.len().saturating_sub(Q - 1);
        let mut next = 0;
        while next < ends {
            let at = next;
            next += self.step;
            if !self.windows.contains(window(haystack, at)) {
                continue;
            }
            let span =
                (at + Q).saturating_sub(self.longest)..(at + self.longest).min(haystack.len());
            match spans.last_mut() {
                Some(last) if last.end >= span.start => last.end = span.end,
                _ => spans.push(span),
            }
        }
        spans
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
        // From the longest candidate down: the first byte, then the first two, rule out most.
        (tail.len() - most..tail.len())
            .find(|&at| {
                let first = usize::from(tail[at]);
                self.firsts[first / 64] & 1 << (first % 64) != 0
                    && tail.get(at + 1).is_none_or(|&second| {
                        let pair = first << 8 | usize::from(second);
                        self.pairs[pair / 64] & 1 << (pair % 64) != 0
                    })
                    && {
                        let suffix = &tail[at..];
                        let next = self.sorted.partition_point(|p| p.as_slice() < suffix);
                        self.sorted.get(next).is_some_and(|p| p.starts_with(suffix))
                    }
            })
            .map_or(0, |at| tail.len() - at)
    }
}

/// The set of every pattern's `Q`-byte windows: a bit per hashed window in a table of fixed
/// size (8 KiB, so that it stays in the first-level cache and its index needs no bounds check),
/// which rules out most windows of ordinary text, then the sorted windows themselves, so that the
/// automaton runs only where a pattern's window really is.
#[derive(Debug)]
struct Windows {
    bits: Box<Zeroizing<[u64; 1024]>>,
    exact: Zeroizing<Vec<u32>>,
}

impl Windows {
    fn new(windows: impl IntoIterator<Item = u32>) -> Self {
        let mut exact: Vec<u32> = windows.into_iter().collect();
        exact.sort_unstable();
        exact.dedup();
        let mut bits = Box::new(Zeroizing::new([0u64; 1024]));
        for &window in &exact {
            let slot = slot(window);
            bits[slot / 64] |= 1 << (slot % 64);
        }
        Self { bits, exact: Zeroizing::new(exact) }
    }

    fn contains(&self, window: u32) -> bool {
        let slot = slot(window);
        self.bits[slot / 64] & 1 << (slot % 64) != 0 && self.exact.binary_search(&window).is_ok()
    }
}

/// A window's bit: Fibonacci hashing, whose multiplier's top 16 bits mix all four bytes.
fn slot(window: u32) -> usize {
    (window.wrapping_mul(0x9E37_79B1) >> 16) as usize
}

/// The `Q` bytes at `at` as one word.
fn window(bytes: &[u8], at: usize) -> u32 {
    // One bounds check and one load (indexing byte by byte was four of each, measured).
    u32::from_le_bytes(bytes[at..at + Q].try_into().expect("Q bytes"))
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

    /// What the automaton alone finds in all of `haystack`.
    fn unfiltered(patterns: &Patterns, haystack: &[u8]) -> Vec<(usize, usize)> {
        let automaton = patterns.automaton.as_ref().unwrap();
        automaton.find_iter(haystack).map(|m| (m.start(), m.end())).collect()
    }

    proptest::proptest! {
        #[test]
        fn the_filter_finds_what_the_automaton_finds_in_everything(
            noise in proptest::collection::vec(
                proptest::sample::select(b"abcdefgh0123456789+/=%-_ \n".to_vec()), 0..400),
            inserts in proptest::collection::vec((0usize..400, 0usize..40, 0usize..3), 0..6),
        ) {
            // Short values (the smallest step) and long ones, overlapping forms and prefixes.
            let patterns = patterns(&[("a", "abcdef"), ("b", "ab01cdef23gh45"), ("c", KEY)]);
            let forms: Vec<Vec<u8>> = patterns.sorted.iter().map(|f| f.to_vec()).collect();
            let mut haystack = noise;
            for (at, form, cut) in inserts {
                let form = &forms[form % forms.len()];
                // Whole, or missing its first or last byte (a near miss).
                let piece = match cut {
                    0 => &form[..],
                    1 => &form[1..],
                    _ => &form[..form.len() - 1],
                };
                let at = at.min(haystack.len());
                haystack.splice(at..at, piece.iter().copied());
            }
            let found: Vec<_> = patterns.find(&haystack).iter().map(|h| (h.start, h.end)).collect();
            proptest::prop_assert_eq!(&found, &unfiltered(&patterns, &haystack));
            proptest::prop_assert_eq!(patterns.is_match(&haystack), !found.is_empty());
        }
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
