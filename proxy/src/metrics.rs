//! Counters and histograms for the admin `/metrics` endpoint, in the Prometheus text format.
//!
//! Every label comes from a fixed set known at start (listener, configured client ids and route
//! prefixes, status class, denial reason, secret names): never a header, a path, a value a
//! client sent, or a secret. Recording is a few relaxed atomic adds, no lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use http::StatusCode;

use crate::auth::Denial;
use crate::error::ProxyError;
use crate::secrets::Snapshot;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The listener a response was sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Clients in.
    Ingress = 0,
    /// The backend out.
    Egress = 1,
}

const LISTENERS: [&str; 2] = ["ingress", "egress"];

impl Listener {
    /// `ingress` or `egress`.
    pub fn label(self) -> &'static str {
        LISTENERS[self as usize]
    }
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Responses by status class 1xx..5xx for one label value.
type Classes = [AtomicU64; 5];

/// Process-wide metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Configured client ids, then `unknown`.
    clients: Vec<String>,
    /// Configured route prefixes, then `none`.
    routes: Vec<String>,
    ingress: Vec<Classes>,
    egress: Vec<Classes>,
    latency: [Histogram; 2],
    /// Per listener: timeouts, then unavailable upstreams.
    upstream_errors: [[AtomicU64; 2]; 2],
    auth_failures: [AtomicU64; Denial::COUNT],
    /// Secret loads that completed, and loads where the source failed.
    refreshes: [AtomicU64; 2],
    /// Names (exact, from the grants) that label MCP denials; any other is `other`.
    grant_names: std::collections::HashSet<String>,
    /// Responses (or egress requests) in which the safety net found a secret: by listener and
    /// secret name.
    leaks: std::sync::Mutex<std::collections::BTreeMap<(&'static str, String), u64>>,
    /// MCP calls refused by grants: by client row, kind and name label.
    grant_denials: std::sync::Mutex<std::collections::BTreeMap<(usize, &'static str, String), u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(Vec::new(), Vec::new())
    }
}

impl Metrics {
    /// Metrics labelled by these client ids and route prefixes.
    pub fn new(mut clients: Vec<String>, mut routes: Vec<String>) -> Self {
        clients.push("unknown".into());
        routes.push("none".into());
        Self {
            ingress: clients.iter().map(|_| Classes::default()).collect(),
            egress: routes.iter().map(|_| Classes::default()).collect(),
            clients,
            routes,
            latency: Default::default(),
            upstream_errors: Default::default(),
            auth_failures: Default::default(),
            refreshes: Default::default(),
            grant_names: Default::default(),
            grant_denials: Default::default(),
            leaks: Default::default(),
        }
    }

    /// Names granted exactly (no `*`) in the configuration: the only names MCP denials are
    /// labelled with (a name a client sends is not configuration, and becomes `other`).
    pub fn with_grant_names(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.grant_names = names.into_iter().collect();
        self
    }

    /// Counts one occurrence of the secret `name` stopped by the safety net on `listener`.
    pub fn record_leak(&self, listener: Listener, name: &str) {
        let mut leaks = self.leaks.lock().unwrap_or_else(|p| p.into_inner());
        *leaks.entry((listener.label(), name.to_owned())).or_default() += 1;
    }

    /// Counts one MCP call refused by `client`'s grants.
    pub fn record_grant_denial(&self, client: usize, kind: &'static str, name: &str) {
        let row = client.min(self.clients.len() - 1);
        let name = if self.grant_names.contains(name) { name } else { "other" };
        let mut denials = self.grant_denials.lock().unwrap_or_else(|p| p.into_inner());
        *denials.entry((row, kind, name.to_owned())).or_default() += 1;
    }

    /// Counts one ingress response; `client` is the configured client's index.
    pub fn record_ingress(&self, client: Option<usize>, status: StatusCode, started: Instant) {
        let row = client.unwrap_or(self.clients.len() - 1).min(self.clients.len() - 1);
        self.record(Listener::Ingress, &self.ingress[row], status, started);
    }

    /// Counts one egress response; `route` is the route's index in [`Metrics::new`]'s list.
    pub fn record_egress(&self, route: Option<usize>, status: StatusCode, started: Instant) {
        let row = route.unwrap_or(self.routes.len() - 1).min(self.routes.len() - 1);
        self.record(Listener::Egress, &self.egress[row], status, started);
    }

    fn record(&self, listener: Listener, row: &Classes, status: StatusCode, started: Instant) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        row[class].fetch_add(1, Ordering::Relaxed);
        self.latency[listener as usize].observe(started.elapsed());
    }

    /// Counts an upstream failure answered with 502/504.
    pub fn record_upstream_error(&self, listener: Listener, err: &ProxyError) {
        let kind = match err {
            ProxyError::UpstreamTimeout => 0,
            ProxyError::UpstreamUnavailable => 1,
            _ => return,
        };
        self.upstream_errors[listener as usize][kind].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one refused authentication.
    pub fn record_auth_failure(&self, denial: Denial) {
        self.auth_failures[denial.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one secret load: `ok` when the source answered for every secret.
    pub fn record_refresh(&self, ok: bool) {
        self.refreshes[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every metric, with the state of `snapshot`.
    pub fn render(&self, snapshot: &Snapshot, referenced: &[String]) -> String {
        let mut out = String::with_capacity(4096);
        help(
            &mut out,
            "keyward_requests_total",
            "counter",
            "Responses sent, by listener, client or route, and status class.",
        );
        for (client, classes) in self.clients.iter().zip(&self.ingress) {
            for (i, count) in classes.iter().enumerate() {
                let n = count.load(Ordering::Relaxed);
                let _ = writeln!(out, "keyward_requests_total{{listener=\"ingress\",client=\"{client}\",route=\"\",class=\"{}xx\"}} {n}", i + 1);
            }
        }
        for (route, classes) in self.routes.iter().zip(&self.egress) {
            for (i, count) in classes.iter().enumerate() {
                let n = count.load(Ordering::Relaxed);
                let _ = writeln!(out, "keyward_requests_total{{listener=\"egress\",client=\"\",route=\"{route}\",class=\"{}xx\"}} {n}", i + 1);
            }
        }
        help(
            &mut out,
            "keyward_request_duration_seconds",
            "histogram",
            "Time from request to response headers, by listener.",
        );
        for (listener, histogram) in LISTENERS.iter().zip(&self.latency) {
            histogram.render(
                &mut out,
                "keyward_request_duration_seconds",
                &format!("listener=\"{listener}\""),
            );
        }
        help(
            &mut out,
            "keyward_upstream_errors_total",
            "counter",
            "Backend or upstream failures, by listener and kind.",
        );
        for (listener, kinds) in LISTENERS.iter().zip(&self.upstream_errors) {
            for (kind, count) in ["timeout", "unavailable"].iter().zip(kinds) {
                let n = count.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "keyward_upstream_errors_total{{listener=\"{listener}\",kind=\"{kind}\"}} {n}"
                );
            }
        }
        help(
            &mut out,
            "keyward_auth_failures_total",
            "counter",
            "Refused authentications, by reason.",
        );
        for (denial, count) in Denial::ALL.iter().zip(&self.auth_failures) {
            let (reason, n) = (denial.reason(), count.load(Ordering::Relaxed));
            let _ = writeln!(out, "keyward_auth_failures_total{{reason=\"{reason}\"}} {n}");
        }
        help(
            &mut out,
            "keyward_mcp_denials_total",
            "counter",
            "MCP calls refused by a client's grants, by client, kind and name.",
        );
        let denials = self.grant_denials.lock().unwrap_or_else(|p| p.into_inner());
        for ((row, kind, name), n) in denials.iter() {
            let client = &self.clients[*row];
            let name = name.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "keyward_mcp_denials_total{{client=\"{client}\",kind=\"{kind}\",name=\"{name}\"}} {n}"
            );
        }
        drop(denials);
        help(
            &mut out,
            "keyward_secret_leaks_blocked_total",
            "counter",
            "Known secret values the safety net stopped, by listener and secret name.",
        );
        let leaks = self.leaks.lock().unwrap_or_else(|p| p.into_inner());
        for ((listener, secret), n) in leaks.iter() {
            let _ = writeln!(
                out,
                "keyward_secret_leaks_blocked_total{{listener=\"{listener}\",secret=\"{secret}\"}} {n}"
            );
        }
        drop(leaks);
        help(&mut out, "keyward_secret_refreshes_total", "counter", "Secret loads, by result.");
        for (result, count) in ["success", "failure"].iter().zip(&self.refreshes) {
            let n = count.load(Ordering::Relaxed);
            let _ = writeln!(out, "keyward_secret_refreshes_total{{result=\"{result}\"}} {n}");
        }
        help(
            &mut out,
            "keyward_secrets_referenced",
            "gauge",
            "Secrets the configuration refers to.",
        );
        let _ = writeln!(out, "keyward_secrets_referenced {}", referenced.len());
        help(&mut out, "keyward_secrets_missing", "gauge", "Referenced secrets without a value.");
        let _ = writeln!(out, "keyward_secrets_missing {}", snapshot.missing().len());
        help(
            &mut out,
            "keyward_secret_snapshot_age_seconds",
            "gauge",
            "Time since the source last answered for every secret (-1: never).",
        );
        let age = snapshot.loaded_at().map_or(-1.0, |at| {
            SystemTime::now().duration_since(at).unwrap_or_default().as_secs_f64()
        });
        let _ = writeln!(out, "keyward_secret_snapshot_age_seconds {age:.3}");
        help(&mut out, "keyward_secret_expiry_seconds", "gauge", "Seconds until each secret's current version expires (exp), for versions that have one.");
        let now = Instant::now();
        for name in referenced {
            if let Some(until) = snapshot.get(name).and_then(|v| v.current_until) {
                let left = until.saturating_duration_since(now).as_secs_f64();
                let _ =
                    writeln!(out, "keyward_secret_expiry_seconds{{secret=\"{name}\"}} {left:.0}");
            }
        }
        out
    }
}

fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let metrics = Metrics::new(vec!["alpha".into()], vec!["/health/".into()]);
        let t = Instant::now();
        metrics.record_ingress(Some(0), StatusCode::OK, t);
        metrics.record_ingress(None, StatusCode::UNAUTHORIZED, t);
        metrics.record_egress(Some(0), StatusCode::BAD_GATEWAY, t);
        metrics.record_upstream_error(Listener::Egress, &ProxyError::UpstreamUnavailable);
        metrics.record_auth_failure(Denial::Invalid);
        metrics.record_refresh(true);
        let text = metrics.render(&Snapshot::default(), &["k".into(), "j".into()]);
        for line in [
            "keyward_requests_total{listener=\"ingress\",client=\"alpha\",route=\"\",class=\"2xx\"} 1\n",
            "keyward_requests_total{listener=\"ingress\",client=\"unknown\",route=\"\",class=\"4xx\"} 1\n",
            "keyward_requests_total{listener=\"egress\",client=\"\",route=\"/health/\",class=\"5xx\"} 1\n",
            "keyward_request_duration_seconds_count{listener=\"ingress\"} 2\n",
            "keyward_request_duration_seconds_bucket{listener=\"ingress\",le=\"+Inf\"} 2\n",
            "keyward_upstream_errors_total{listener=\"egress\",kind=\"unavailable\"} 1\n",
            "keyward_auth_failures_total{reason=\"invalid\"} 1\n",
            "keyward_secret_refreshes_total{result=\"success\"} 1\n",
            "keyward_secrets_referenced 2\n",
            "keyward_secret_snapshot_age_seconds -1.000\n",
        ] {
            assert!(text.contains(line), "missing {line}in\n{text}");
        }
    }
}
