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

/// The listener a response was sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Clients in.
    Ingress = 0,
    /// The backend out.
    Egress = 1,
}

const LISTENERS: [&str; 2] = ["ingress", "egress"];

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses by listener and status class 1xx..5xx.
    requests: [[AtomicU64; 5]; 2],
    auth_failures: [AtomicU64; REASONS.len()],
}

impl Metrics {
    /// Counts one response.
    pub fn record(&self, listener: Listener, status: StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.requests[listener as usize][class].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one refused authentication.
    pub fn record_auth_failure(&self, denial: Denial) {
        let index = REASONS.iter().position(|r| *r == denial.reason()).unwrap_or(0);
        self.auth_failures[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every metric, with the state of `snapshot`.
    pub fn render(&self, snapshot: &Snapshot, referenced: usize) -> String {
        let mut out = String::with_capacity(2048);
        out.push_str(
            "# HELP keyward_requests_total Responses sent, by listener and status class.\n",
        );
        out.push_str("# TYPE keyward_requests_total counter\n");
        for (listener, classes) in LISTENERS.iter().zip(&self.requests) {
            for (i, count) in classes.iter().enumerate() {
                let n = count.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "keyward_requests_total{{listener=\"{listener}\",class=\"{}xx\"}} {n}",
                    i + 1
                );
            }
        }
        out.push_str("# HELP keyward_auth_failures_total Refused authentications, by reason.\n");
        out.push_str("# TYPE keyward_auth_failures_total counter\n");
        for (reason, count) in REASONS.iter().zip(&self.auth_failures) {
            let n = count.load(Ordering::Relaxed);
            let _ = writeln!(out, "keyward_auth_failures_total{{reason=\"{reason}\"}} {n}");
        }
        out.push_str("# HELP keyward_secrets_missing Referenced secrets without a value.\n");
        out.push_str("# TYPE keyward_secrets_missing gauge\n");
        let _ = writeln!(out, "keyward_secrets_missing {}", snapshot.missing().len());
        out.push_str("# HELP keyward_secrets_referenced Secrets the configuration refers to.\n");
        out.push_str("# TYPE keyward_secrets_referenced gauge\n");
        let _ = writeln!(out, "keyward_secrets_referenced {referenced}");
        if let Some(at) = snapshot.loaded_at() {
            let age = SystemTime::now().duration_since(at).unwrap_or_default().as_secs_f64();
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
        metrics.record(Listener::Ingress, StatusCode::OK);
        metrics.record(Listener::Ingress, StatusCode::UNAUTHORIZED);
        metrics.record(Listener::Egress, StatusCode::BAD_GATEWAY);
        metrics.record_auth_failure(Denial::Invalid);
        let text = metrics.render(&Snapshot::default(), 2);
        assert!(text.contains("keyward_requests_total{listener=\"ingress\",class=\"2xx\"} 1\n"));
        assert!(text.contains("keyward_requests_total{listener=\"ingress\",class=\"4xx\"} 1\n"));
        assert!(text.contains("keyward_requests_total{listener=\"egress\",class=\"5xx\"} 1\n"));
        assert!(text.contains("keyward_auth_failures_total{reason=\"invalid\"} 1\n"));
        assert!(text.contains("keyward_secrets_referenced 2\n"));
    }
}
