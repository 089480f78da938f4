//! Counters for the admin `/metrics` endpoint, in the Prometheus text format.
//!
//! Labels are fixed sets (listener, status class, denial reason): never a header, a path with a
//! query, a client-supplied value or a secret.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use http::StatusCode;

use crate::auth::Denial;
use crate::secrets::Snapshot;

const REASONS: [&str; 7] = [
    "missing",
    "repeated",
    "oversize",
    "key_in_query",
    "invalid",
    "rate_limited",
    "no_keys_loaded",
];

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Ingress responses by status class 1xx..5xx.
    ingress: [AtomicU64; 5],
    auth_failures: [AtomicU64; REASONS.len()],
}

impl Metrics {
    /// Counts one ingress response.
    pub fn record_ingress(&self, status: StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.ingress[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one refused authentication.
    pub fn record_auth_failure(&self, denial: Denial) {
        let index = REASONS
            .iter()
            .position(|r| *r == denial.reason())
            .unwrap_or(0);
        self.auth_failures[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every metric, with the state of `snapshot`.
    pub fn render(&self, snapshot: &Snapshot, referenced: usize) -> String {
        let mut out = String::with_capacity(2048);
        out.push_str(
            "# HELP keyward_requests_total Responses sent, by listener and status class.\n",
        );
        out.push_str("# TYPE keyward_requests_total counter\n");
        for (i, count) in self.ingress.iter().enumerate() {
            let n = count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "keyward_requests_total{{listener=\"ingress\",class=\"{}xx\"}} {n}",
                i + 1
            );
        }
        out.push_str("# HELP keyward_auth_failures_total Refused authentications, by reason.\n");
        out.push_str("# TYPE keyward_auth_failures_total counter\n");
        for (reason, count) in REASONS.iter().zip(&self.auth_failures) {
            let n = count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "keyward_auth_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str("# HELP keyward_secrets_missing Referenced secrets without a value.\n");
        out.push_str("# TYPE keyward_secrets_missing gauge\n");
        let _ = writeln!(out, "keyward_secrets_missing {}", snapshot.missing().len());
        out.push_str("# HELP keyward_secrets_referenced Secrets the configuration refers to.\n");
        out.push_str("# TYPE keyward_secrets_referenced gauge\n");
        let _ = writeln!(out, "keyward_secrets_referenced {referenced}");
        if let Some(at) = snapshot.loaded_at() {
            let age = SystemTime::now()
                .duration_since(at)
                .unwrap_or_default()
                .as_secs_f64();
            out.push_str("# HELP keyward_secret_snapshot_age_seconds Time since the source last answered for every secret.\n");
            out.push_str("# TYPE keyward_secret_snapshot_age_seconds gauge\n");
            let _ = writeln!(out, "keyward_secret_snapshot_age_seconds {age:.3}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_by_class_and_reason() {
        let metrics = Metrics::default();
        metrics.record_ingress(StatusCode::OK);
        metrics.record_ingress(StatusCode::UNAUTHORIZED);
        metrics.record_auth_failure(Denial::Invalid);
        let text = metrics.render(&Snapshot::default(), 2);
        assert!(text.contains("keyward_requests_total{listener=\"ingress\",class=\"2xx\"} 1\n"));
        assert!(text.contains("keyward_requests_total{listener=\"ingress\",class=\"4xx\"} 1\n"));
        assert!(text.contains("keyward_auth_failures_total{reason=\"invalid\"} 1\n"));
        assert!(text.contains("keyward_secrets_referenced 2\n"));
    }
}
