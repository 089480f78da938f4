//! What keyward counts and times, as one set of OpenTelemetry SDK instruments read two ways: the
//! admin `/metrics` endpoint collects them on demand and renders Prometheus text
//! ([`prometheus`]), and with an OTLP endpoint a periodic reader exports the same instruments
//! (see [`crate::telemetry::metric_reader`]). There is no second, hand-kept copy of any count.
//!
//! Every attribute value comes from a fixed set known at start (listener, configured client ids
//! and route prefixes, normalised methods, status codes, denial reasons, secret names, exactly
//! granted names): never a header, a path, a value a client sent, or a secret. Recording on the
//! request path is one histogram per exchange (two when it was forwarded), through a series
//! bound once per attribute set ([`series`]): nothing is formatted, hashed as text or allocated
//! per request.

mod prometheus;
mod secrets;
mod series;

use std::collections::HashSet;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use http::{Method, Response, StatusCode};
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider as _};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{ManualReader, MeterProviderBuilder, SdkMeterProvider};
use prometheus::Scrape;
use series::Durations;

use crate::auth::Denial;
use crate::config::TelemetryConfig;
use crate::error::ProxyError;
use crate::secrets::SecretStore;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// HTTP semantic-convention attribute keys.
const METHOD: &str = "http.request.method";
const STATUS: &str = "http.response.status_code";
const ROUTE: &str = "http.route";
const ERROR_TYPE: &str = "error.type";
/// keyward's own.
const LISTENER: &str = "keyward.listener";
const CLIENT: &str = "keyward.client";

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

/// The methods the HTTP conventions know; any other is `_OTHER` (a method is the client's to
/// choose, and must not make a new series).
const METHODS: [&str; 10] =
    ["GET", "POST", "DELETE", "HEAD", "OPTIONS", "PUT", "PATCH", "CONNECT", "TRACE", "_OTHER"];

/// The method's index in [`METHODS`].
fn method(method: &Method) -> usize {
    let name = method.as_str();
    METHODS[..METHODS.len() - 1].iter().position(|m| *m == name).unwrap_or(METHODS.len() - 1)
}

/// `error.type` of a forward without a response, and its series outcome (above any status).
fn error_type(err: &ProxyError) -> (&'static str, u16) {
    match err {
        ProxyError::UpstreamTimeout => ("timeout", 1000),
        ProxyError::UpstreamUnavailable => ("unavailable", 1001),
        _ => ("_OTHER", 1002),
    }
}

/// The metrics pipeline and its instruments, for the whole process.
#[derive(Debug)]
pub struct Metrics {
    provider: SdkMeterProvider,
    scrape: Arc<ManualReader>,
    exporting: bool,
    server: Durations,
    client: Durations,
    upstream_errors: Counter<u64>,
    auth_failures: Counter<u64>,
    grant_denials: Counter<u64>,
    leaks: Counter<u64>,
    refreshes: Counter<u64>,
    /// `keyward.client` of each configured client, then `unknown`.
    clients: Vec<KeyValue>,
    /// The same ids as the MCP denials' `client`.
    denial_clients: Vec<KeyValue>,
    /// `http.route` of each configured route prefix, then `none`.
    routes: Vec<KeyValue>,
    /// Names (exact, from the grants) that label MCP denials; any other is `other`.
    grant_names: HashSet<Arc<str>>,
    /// The store the secret gauges read at collection (set once it exists).
    store: Arc<OnceLock<Weak<SecretStore>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(Vec::new(), Vec::new())
    }
}

impl Metrics {
    /// Instruments labelled by these client ids and route prefixes, read by `/metrics` only.
    pub fn new(clients: Vec<String>, routes: Vec<String>) -> Self {
        Self::build(SdkMeterProvider::builder(), false, clients, routes)
    }

    /// The same, also exported over OTLP when `telemetry` (or the `OTEL_*` variables) name an
    /// endpoint, with the traces' resource. A broken exporter is logged and leaves `/metrics`
    /// alone. Must run inside the tokio runtime.
    pub fn with_telemetry(
        telemetry: &TelemetryConfig,
        clients: Vec<String>,
        routes: Vec<String>,
    ) -> Self {
        let builder =
            SdkMeterProvider::builder().with_resource(crate::telemetry::resource(telemetry));
        match crate::telemetry::metric_reader(telemetry) {
            Ok(Some(reader)) => Self::build(builder.with_reader(reader), true, clients, routes),
            Ok(None) => Self::build(builder, false, clients, routes),
            Err(problem) => {
                tracing::error!(error = %problem, "OTLP metrics export disabled");
                Self::build(builder, false, clients, routes)
            }
        }
    }

    fn build(
        builder: MeterProviderBuilder,
        exporting: bool,
        clients: Vec<String>,
        routes: Vec<String>,
    ) -> Self {
        let scrape = Arc::new(ManualReader::builder().build());
        let provider = builder.with_reader(Scrape(scrape.clone())).build();
        let scope = InstrumentationScope::builder("keyward")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let meter = provider.meter_with_scope(scope);
        let ids = clients.into_iter().map(Arc::<str>::from).chain(["unknown".into()]);
        let ids: Vec<Arc<str>> = ids.collect();
        let routes = routes.into_iter().map(Arc::<str>::from).chain(["none".into()]);
        let store = Arc::new(OnceLock::new());
        secrets::register(&meter, &store);
        let server = duration(
            &meter,
            "http.server.request.duration",
            "Duration of HTTP server requests: from a request's headers to its response's, by \
             listener, client or route, method and status.",
        );
        let client = duration(
            &meter,
            "http.client.request.duration",
            "Duration of the requests keyward forwards (to the backend from ingress, to an \
             upstream from egress), to the response's headers.",
        );
        let metrics = Self {
            server: Durations::new(server),
            client: Durations::new(client),
            upstream_errors: counter(
                &meter,
                "keyward.upstream.errors",
                "{error}",
                "Backend or upstream failures, by listener and kind.",
            ),
            auth_failures: counter(
                &meter,
                "keyward.auth.failures",
                "{failure}",
                "Refused authentications, by reason.",
            ),
            grant_denials: counter(
                &meter,
                "keyward.mcp.denials",
                "{call}",
                "MCP calls refused by a client's grants, by client, kind and name.",
            ),
            leaks: counter(
                &meter,
                "keyward.secret.leaks.blocked",
                "{value}",
                "Known secret values the safety net stopped, by listener and secret name.",
            ),
            refreshes: counter(
                &meter,
                "keyward.secret.refreshes",
                "{load}",
                "Secret loads, by result.",
            ),
            clients: ids.iter().map(|id| KeyValue::new(CLIENT, id.clone())).collect(),
            denial_clients: ids.iter().map(|id| KeyValue::new("client", id.clone())).collect(),
            routes: routes.map(|route| KeyValue::new(ROUTE, route)).collect(),
            grant_names: HashSet::new(),
            store,
            provider,
            scrape,
            exporting,
        };
        // The fixed label sets start at zero, so that a first failure is an increase.
        for denial in Denial::ALL {
            metrics.auth_failures.add(0, &[KeyValue::new("reason", denial.reason())]);
        }
        for listener in LISTENERS {
            for kind in ["timeout", "unavailable"] {
                let labels = [KeyValue::new("kind", kind), KeyValue::new("listener", listener)];
                metrics.upstream_errors.add(0, &labels);
            }
        }
        for result in ["failure", "success"] {
            metrics.refreshes.add(0, &[KeyValue::new("result", result)]);
        }
        metrics
    }

    /// Names granted exactly (no `*`) in the configuration: the only names MCP denials are
    /// labelled with (a name a client sends is not configuration, and becomes `other`).
    pub fn with_grant_names(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.grant_names = names.into_iter().map(Arc::from).collect();
        self
    }

    /// Lets the secret gauges read `store` at each collection (it is not kept alive by them).
    pub fn observe(&self, store: &Arc<SecretStore>) {
        let _ = self.store.set(Arc::downgrade(store));
    }

    /// Counts one occurrence of the secret `name` stopped by the safety net on `listener`.
    pub fn record_leak(&self, listener: Listener, name: &str) {
        let labels =
            [KeyValue::new("listener", listener.label()), KeyValue::new("secret", name.to_owned())];
        self.leaks.add(1, &labels);
    }

    /// Counts one MCP call refused by `client`'s grants.
    pub fn record_grant_denial(&self, client: usize, kind: &'static str, name: &str) {
        let row = row(Some(client), self.denial_clients.len());
        let name = match self.grant_names.get(name) {
            Some(name) => KeyValue::new("name", name.clone()),
            None => KeyValue::new("name", "other"),
        };
        let labels = [self.denial_clients[row].clone(), KeyValue::new("kind", kind), name];
        self.grant_denials.add(1, &labels);
    }

    /// Times one ingress exchange; `client` is the configured client's index.
    pub fn record_ingress(
        &self,
        request: &Method,
        client: Option<usize>,
        status: StatusCode,
        started: Instant,
    ) {
        let row = row(client, self.clients.len());
        self.record_server(Listener::Ingress, row, &self.clients[row], request, status, started);
    }

    /// Times one egress exchange; `route` is the route's index in [`Metrics::new`]'s list.
    pub fn record_egress(
        &self,
        request: &Method,
        route: Option<usize>,
        status: StatusCode,
        started: Instant,
    ) {
        let row = row(route, self.routes.len());
        self.record_server(Listener::Egress, row, &self.routes[row], request, status, started);
    }

    /// Times one exchange on `listener`, whose client or route is `row` (labelled `which`).
    fn record_server(
        &self,
        listener: Listener,
        row: usize,
        which: &KeyValue,
        request: &Method,
        status: StatusCode,
        started: Instant,
    ) {
        let (method, status) = (method(request), status.as_u16());
        let key = series::key(listener as usize, row, method, status);
        self.server.record(key, started.elapsed().as_secs_f64(), || {
            vec![
                KeyValue::new(METHOD, METHODS[method]),
                KeyValue::new(STATUS, i64::from(status)),
                which.clone(),
                KeyValue::new(LISTENER, listener.label()),
            ]
        });
    }

    /// Counts an upstream failure answered with 502/504.
    pub fn record_upstream_error(&self, listener: Listener, err: &ProxyError) {
        let kind = match err {
            ProxyError::UpstreamTimeout => "timeout",
            ProxyError::UpstreamUnavailable => "unavailable",
            _ => return,
        };
        let labels = [KeyValue::new("kind", kind), KeyValue::new("listener", listener.label())];
        self.upstream_errors.add(1, &labels);
    }

    /// Counts one refused authentication.
    pub fn record_auth_failure(&self, denial: Denial) {
        self.auth_failures.add(1, &[KeyValue::new("reason", denial.reason())]);
    }

    /// Counts one secret load: `ok` when the source answered for every secret.
    pub fn record_refresh(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.refreshes.add(1, &[KeyValue::new("result", result)]);
    }

    /// Every instrument, now, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut collected = ResourceMetrics::default();
        match self.scrape.collect(&mut collected) {
            Ok(()) => prometheus::render(&collected),
            Err(_) => String::new(),
        }
    }

    /// Exports what is left and stops the OTLP reader (blocking, bounded by the exporter's
    /// timeout: call it off the runtime's workers). Without export there is nothing to do.
    pub fn shutdown(&self) {
        if self.exporting {
            let _ = self.provider.shutdown();
        }
    }
}

/// A forwarded request being timed: kept across the wait for the response, so only what the
/// record needs that the caller does not already have (hyper keeps a slot of the handler's
/// future per connection).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Forward {
    started: Instant,
    method: u8,
}

impl Forward {
    /// Starts timing `request`, as it leaves.
    pub(crate) fn start(request: &Method) -> Self {
        Self { started: Instant::now(), method: method(request) as u8 }
    }
}

impl Metrics {
    /// Times a request forwarded on `listener` (to the backend, or through `route` to an
    /// upstream): the response's status, or without a response the error's kind (`timeout`,
    /// `unavailable`, else `_OTHER`).
    pub(crate) fn record_forward<B>(
        &self,
        forward: Forward,
        listener: Listener,
        route: Option<usize>,
        result: &Result<Response<B>, ProxyError>,
    ) {
        let elapsed = forward.started.elapsed().as_secs_f64();
        let method = usize::from(forward.method);
        // A status, or without a response the error's kind (as a code above any status).
        let (code, kind) = match result {
            Ok(response) => (response.status().as_u16(), None),
            Err(err) => {
                let (kind, code) = error_type(err);
                (code, Some(kind))
            }
        };
        let route = match listener {
            Listener::Ingress => None,
            Listener::Egress => Some(row(route, self.routes.len())),
        };
        let key = series::key(listener as usize, route.unwrap_or(0), method, code);
        self.client.record(key, elapsed, || {
            let outcome = match kind {
                Some(kind) => KeyValue::new(ERROR_TYPE, kind),
                None => KeyValue::new(STATUS, i64::from(code)),
            };
            let mut attributes = vec![
                outcome,
                KeyValue::new(METHOD, METHODS[method]),
                KeyValue::new(LISTENER, listener.label()),
            ];
            attributes.extend(route.map(|row| self.routes[row].clone()));
            attributes.sort_by(|a, b| a.key.cmp(&b.key));
            attributes
        });
    }
}

/// The row of a configured client or route (`index`) among `len` rows whose last is the
/// catch-all (`unknown`, `none`): the catch-all for none or an index out of range.
fn row(index: Option<usize>, len: usize) -> usize {
    index.unwrap_or(len - 1).min(len - 1)
}

fn duration(meter: &Meter, name: &'static str, description: &'static str) -> Histogram<f64> {
    meter
        .f64_histogram(name)
        .with_unit("s")
        .with_description(description)
        .with_boundaries(BUCKETS.to_vec())
        .build()
}

fn counter(
    meter: &Meter,
    name: &'static str,
    unit: &'static str,
    description: &'static str,
) -> Counter<u64> {
    meter.u64_counter(name).with_unit(unit).with_description(description).build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{Loaded, Secret};
    use std::time::Duration;

    #[test]
    fn one_set_of_instruments_renders_every_metric() {
        let metrics = Metrics::new(vec!["alpha".into()], vec!["/health/".into()])
            .with_grant_names(["get_activity".to_owned()]);
        let store = Arc::new(SecretStore::new(vec!["k".into(), "j".into()], Duration::ZERO));
        metrics.observe(&store);
        let t = Instant::now();
        metrics.record_ingress(&Method::POST, Some(0), StatusCode::OK, t);
        metrics.record_ingress(
            &Method::from_bytes(b"BREW").unwrap(),
            None,
            StatusCode::UNAUTHORIZED,
            t,
        );
        metrics.record_egress(&Method::GET, Some(0), StatusCode::BAD_GATEWAY, t);
        metrics.record_egress(&Method::GET, None, StatusCode::NOT_FOUND, t);
        let failed: Result<Response<()>, _> = Err(ProxyError::UpstreamUnavailable);
        metrics.record_forward(Forward::start(&Method::GET), Listener::Egress, Some(0), &failed);
        let answered = Ok(Response::new(()));
        metrics.record_forward(Forward::start(&Method::POST), Listener::Ingress, None, &answered);
        metrics.record_upstream_error(Listener::Egress, &ProxyError::UpstreamUnavailable);
        metrics.record_auth_failure(Denial::Invalid);
        metrics.record_refresh(true);
        metrics.record_grant_denial(0, "tool", "get_activity");
        metrics.record_grant_denial(0, "tool", "made-up-by-a-client");
        metrics.record_leak(Listener::Egress, "apim");
        let text = metrics.render();
        for line in [
            "http_server_request_duration_seconds_count{http_request_method=\"POST\",http_response_status_code=\"200\",keyward_client=\"alpha\",keyward_listener=\"ingress\"} 1\n",
            "http_server_request_duration_seconds_bucket{http_request_method=\"_OTHER\",http_response_status_code=\"401\",keyward_client=\"unknown\",keyward_listener=\"ingress\",le=\"+Inf\"} 1\n",
            "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_response_status_code=\"502\",http_route=\"/health/\",keyward_listener=\"egress\"} 1\n",
            "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_response_status_code=\"404\",http_route=\"none\",keyward_listener=\"egress\"} 1\n",
            "http_client_request_duration_seconds_count{error_type=\"unavailable\",http_request_method=\"GET\",http_route=\"/health/\",keyward_listener=\"egress\"} 1\n",
            "http_client_request_duration_seconds_count{http_request_method=\"POST\",http_response_status_code=\"200\",keyward_listener=\"ingress\"} 1\n",
            "keyward_upstream_errors_total{kind=\"unavailable\",listener=\"egress\"} 1\n",
            "keyward_upstream_errors_total{kind=\"timeout\",listener=\"ingress\"} 0\n",
            "keyward_auth_failures_total{reason=\"invalid\"} 1\n",
            "keyward_auth_failures_total{reason=\"missing\"} 0\n",
            "keyward_secret_refreshes_total{result=\"success\"} 1\n",
            "keyward_mcp_denials_total{client=\"alpha\",kind=\"tool\",name=\"get_activity\"} 1\n",
            "keyward_mcp_denials_total{client=\"alpha\",kind=\"tool\",name=\"other\"} 1\n",
            "keyward_secret_leaks_blocked_total{listener=\"egress\",secret=\"apim\"} 1\n",
            "keyward_secrets_referenced 2\n",
            "keyward_secrets_missing 2\n",
            "keyward_secret_snapshot_age_seconds -1\n",
            "# TYPE http_server_request_duration_seconds histogram\n",
            "# TYPE keyward_auth_failures_total counter\n",
            "# TYPE keyward_secret_snapshot_age_seconds gauge\n",
        ] {
            assert!(text.contains(line), "missing {line}in\n{text}");
        }
        assert!(!text.contains("made-up-by-a-client"));
        assert!(!text.contains("BREW"));

        let loaded = || Loaded::Value(Secret::from_string("v".into()));
        store.apply(vec![("k".into(), loaded()), ("j".into(), loaded())], Instant::now());
        let text = metrics.render();
        assert!(text.contains("keyward_secrets_missing 0\n"), "{text}");
        assert!(!text.contains("keyward_secret_snapshot_age_seconds -1\n"), "{text}");
    }

    #[test]
    fn the_gauges_do_not_keep_the_store_alive() {
        let metrics = Metrics::default();
        let store = Arc::new(SecretStore::new(vec!["k".into()], Duration::ZERO));
        metrics.observe(&store);
        assert!(metrics.render().contains("keyward_secrets_referenced 1\n"));
        drop(store);
        assert!(!metrics.render().contains("keyward_secrets_referenced"));
    }
}
