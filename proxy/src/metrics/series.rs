//! The request path's histograms, one bound series per attribute set. An unbound record hashes
//! and compares the whole attribute set (keys and values, some 100 bytes) in every pipeline;
//! here each set is found by a small packed key the caller computes from indexes it already
//! has, and recorded through the SDK's bound handle, which goes straight to the set's buckets.
//! A set is bound the first time it is seen and kept: every value of every attribute comes from
//! a fixed set (see the module above), so there are at most a few thousand, and the SDK's
//! cardinality limit still applies.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::RwLock;

use opentelemetry::metrics::{BoundHistogram, Histogram};
use opentelemetry::KeyValue;

/// A histogram and its bound series by key.
#[derive(Debug)]
pub(super) struct Durations {
    histogram: Histogram<f64>,
    series: RwLock<HashMap<u64, BoundHistogram<f64>, BuildHasherDefault<Spread>>>,
}

impl Durations {
    pub(super) fn new(histogram: Histogram<f64>) -> Self {
        Self { histogram, series: RwLock::default() }
    }

    /// Records `seconds` in the series `key` names; `attributes` makes its attribute set the
    /// first time (the same key must always mean the same set).
    pub(super) fn record(
        &self,
        key: u64,
        seconds: f64,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) {
        let series = self.series.read().unwrap_or_else(|p| p.into_inner());
        if let Some(bound) = series.get(&key) {
            bound.record(seconds);
            return;
        }
        drop(series);
        let mut series = self.series.write().unwrap_or_else(|p| p.into_inner());
        let bound = series.entry(key).or_insert_with(|| self.histogram.bind(&attributes()));
        bound.record(seconds);
    }
}

/// Packs a series key: the listener, a row (client or route), the method's index and an
/// outcome (a status code, or 1000 and up for an error kind).
pub(super) fn key(listener: usize, row: usize, method: usize, outcome: u16) -> u64 {
    let row = row.min(0xffff) as u64;
    (listener as u64) << 40 | row << 20 | (method as u64) << 12 | u64::from(outcome & 0xfff)
}

/// Fibonacci hashing of a packed key: keys are distinct small integers, which only need their
/// bits spread over the whole word (the table looks at the top ones).
#[derive(Debug, Default)]
pub(super) struct Spread(u64);

impl Hasher for Spread {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_parts_apart() {
        let keys = [
            key(0, 0, 0, 200),
            key(1, 0, 0, 200),
            key(0, 1, 0, 200),
            key(0, 0, 1, 200),
            key(0, 0, 0, 201),
            key(0, 0, 0, 1001),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
