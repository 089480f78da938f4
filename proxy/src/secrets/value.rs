//! The `Secret` type: the only shape a credential takes inside keyward.
//!
//! A `Secret` is zeroized on drop, prints as `[REDACTED]` through `Debug` and `Display`, and
//! has no `Serialize`. The one way to read it is [`Secret::expose`], so every place that
//! touches a raw value can be found with `grep expose`. Nothing here may log a value.

use std::fmt;

use http::HeaderValue;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// A credential held in memory that is wiped when dropped.
pub struct Secret(Box<[u8]>);

impl Secret {
    /// Takes ownership of `bytes`; the buffer handed in is wiped as well.
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        // `into_boxed_slice` may reallocate when capacity exceeds length; copy explicitly so
        // that the only other copy is the one `Zeroizing` wipes on return.
        Self(Box::from(bytes.as_slice()))
    }

    /// Moves a `String` (as SDKs hand secrets over) into a `Secret`, wiping the string.
    pub fn from_string(value: String) -> Self {
        Self::new(Zeroizing::new(value.into_bytes()))
    }

    /// The raw bytes. The single, greppable way to read a secret: call it only where the value
    /// must leave keyward (a digest, an outgoing header) and never format the result.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes; not secret in itself, useful for validation messages.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the secret holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A header value carrying this secret, marked sensitive so that `Debug` elides it and
    /// HPACK never indexes it. `None` when the bytes are not a valid header value.
    pub fn to_header_value(&self) -> Option<HeaderValue> {
        let mut value = HeaderValue::from_bytes(self.expose()).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// Constant time in the contents; lengths are compared first (used for change detection of a
/// reloaded value, never for authentication, which compares digests).
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = "canary-7d1f0c5e";

    #[test]
    fn formatting_never_shows_the_value() {
        let secret = Secret::from_string(CANARY.to_owned());
        for rendered in [
            format!("{secret}"),
            format!("{secret:?}"),
            format!("{secret:#?}"),
            format!("{:?}", Some(&secret)),
        ] {
            assert!(!rendered.contains(CANARY), "{rendered}");
            assert!(rendered.contains("REDACTED"));
        }
        assert_eq!(secret.expose(), CANARY.as_bytes());
    }

    #[test]
    fn header_values_are_sensitive_and_elided_by_debug() {
        let secret = Secret::from_string(CANARY.to_owned());
        let value = secret.to_header_value().expect("valid header value");
        assert!(value.is_sensitive());
        let mut headers = http::HeaderMap::new();
        headers.insert("x-api-key", value);
        assert!(!format!("{headers:?}").contains(CANARY));
    }

    #[test]
    fn invalid_header_bytes_give_none() {
        let secret = Secret::new(Zeroizing::new(b"line\nbreak".to_vec()));
        assert!(secret.to_header_value().is_none());
    }

    #[test]
    fn equality_compares_contents() {
        let a = Secret::from_string("one".into());
        assert_eq!(a, a.clone());
        assert_ne!(a, Secret::from_string("two".into()));
        assert_ne!(a, Secret::from_string("one!".into()));
    }
}
