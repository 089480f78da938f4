//! The last line of defence: every formatted log line and exported span attribute is scanned
//! for the current secret values, raw and in the encodings a value travels in (base64, base64url,
//! hex, percent-encoding), and each occurrence is replaced by `[REDACTED]`.
//!
//! Redaction by type (`Secret`, sensitive header values) is the first defence; this one catches
//! what a future change might format by mistake. The patterns are themselves secrets and live in
//! zeroizing memory.

use std::io::{self, Write};
use std::sync::Arc;

use tracing_subscriber::fmt::MakeWriter;
use zeroize::Zeroizing;

/// The known secrets' patterns (one automaton per snapshot, shared with the safety net).
pub use crate::safety::KnownSecrets as Redactor;

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
    use crate::secrets::{Consumer, Loaded, Secret, SecretStore};
    use std::time::{Duration, Instant};

    const SENTINEL: &str = "s3ntinel/value+with=signs";

    #[test]
    fn every_encoding_is_replaced() {
        let store = SecretStore::new(vec!["k".into()], Duration::ZERO);
        store.apply(
            vec![("k".into(), Loaded::Value(Secret::from_string(SENTINEL.into())))],
            Instant::now(),
        );
        let redactor = Redactor::default();
        redactor.rebuild(&store.snapshot());
        let forms = crate::safety::patterns::encodings(SENTINEL.as_bytes());
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
        assert!(matches!(redactor.redact(b"nothing to see"), std::borrow::Cow::Borrowed(_)));
    }
}
