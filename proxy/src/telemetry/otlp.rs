//! OTLP export of traces and metrics: gRPC (tonic, on hyper) or protobuf over HTTP on keyward's
//! own hyper client, both signals from the same settings and with the same resource. Every
//! exported span passes through the redactor first; metrics carry names and numbers only (see
//! [`crate::metrics`]). Export failures are the exporter's problem: spans and data points are
//! dropped, traffic never waits on a collector.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::{KeyValue, Value};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{MetricExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::PeriodicReader;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

use super::redact::Redactor;
use crate::config::{OtlpProtocol, TelemetryConfig};

/// Time one export may take, response included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the tracer provider when an endpoint is configured (in the file or the standard
/// `OTEL_EXPORTER_OTLP_*` variables). Must run inside the tokio runtime.
pub(super) fn provider(
    config: &TelemetryConfig,
    redactor: Arc<Redactor>,
) -> Result<Option<SdkTracerProvider>, String> {
    if !configured(config, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return Ok(None);
    }
    let exporter = match protocol(config) {
        OtlpProtocol::Grpc => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            if let Some(endpoint) = &config.otlp_endpoint {
                builder = builder.with_endpoint(endpoint.clone());
            }
            builder.with_timeout(EXPORT_TIMEOUT).build()
        }
        OtlpProtocol::HttpProtobuf => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(HyperExport::new())
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            if let Some(endpoint) = &config.otlp_endpoint {
                builder = builder.with_endpoint(traces_url(endpoint));
            }
            builder.with_timeout(EXPORT_TIMEOUT).build()
        }
    }
    .map_err(|err| format!("OTLP exporter: {err}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(Redacting { inner: exporter, redactor })
        .with_resource(resource(config))
        .build();
    Ok(Some(provider))
}

/// The periodic OTLP metrics reader, when an endpoint is configured (in the file, or
/// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`), unless
/// `OTEL_METRICS_EXPORTER=none`. Its interval is `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds,
/// default 60000), read by the SDK. It collects and exports on a thread of its own; the
/// exporter's timeout bounds every export. Cumulative temporality, as `/metrics` has. Must run
/// inside the tokio runtime.
pub(crate) fn metric_reader(
    config: &TelemetryConfig,
) -> Result<Option<PeriodicReader<MetricExporter>>, String> {
    let disabled = std::env::var("OTEL_METRICS_EXPORTER").is_ok_and(|v| v.trim() == "none");
    if disabled || !configured(config, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
        return Ok(None);
    }
    let exporter = match protocol(config) {
        OtlpProtocol::Grpc => {
            let mut builder = MetricExporter::builder().with_tonic();
            if let Some(endpoint) = &config.otlp_endpoint {
                builder = builder.with_endpoint(endpoint.clone());
            }
            builder.with_timeout(EXPORT_TIMEOUT).build()
        }
        OtlpProtocol::HttpProtobuf => {
            let mut builder = MetricExporter::builder()
                .with_http()
                .with_http_client(HyperExport::new())
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            if let Some(endpoint) = &config.otlp_endpoint {
                builder = builder.with_endpoint(metrics_url(endpoint));
            }
            builder.with_timeout(EXPORT_TIMEOUT).build()
        }
    }
    .map_err(|err| format!("OTLP metrics exporter: {err}"))?;
    Ok(Some(PeriodicReader::builder(exporter).build()))
}

/// Whether export is configured: in the file, or by the signal's variable or the general one.
fn configured(config: &TelemetryConfig, signal_var: &str) -> bool {
    config.otlp_endpoint.is_some()
        || [signal_var, "OTEL_EXPORTER_OTLP_ENDPOINT"]
            .iter()
            .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()))
}

/// The file's protocol, else `OTEL_EXPORTER_OTLP_PROTOCOL`, else gRPC.
fn protocol(config: &TelemetryConfig) -> OtlpProtocol {
    config.otlp_protocol.unwrap_or_else(|| {
        match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            Ok("http/protobuf") => OtlpProtocol::HttpProtobuf,
            _ => OtlpProtocol::Grpc,
        }
    })
}

/// What every signal says about keyward: `service.name` (`OTEL_SERVICE_NAME` wins over the
/// file) and `service.version`.
pub(crate) fn resource(config: &TelemetryConfig) -> Resource {
    let service_name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| config.service_name.clone());
    Resource::builder()
        .with_service_name(service_name)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// An OTLP/HTTP endpoint given as a base (`http://collector:4318`) gets the traces path.
fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    if has_path(trimmed) {
        endpoint.to_owned()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

/// The metrics URL for the one configured endpoint: a base gets `/v1/metrics`, as does a base
/// with a path prefix (`https://c.example/otlp`); a traces URL (`…/v1/traces`, which traces
/// use as given) gets its metrics sibling.
fn metrics_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    match trimmed.strip_suffix("/v1/traces") {
        Some(base) if has_path(trimmed) => format!("{base}/v1/metrics"),
        _ if trimmed.ends_with("/v1/metrics") => trimmed.to_owned(),
        _ => format!("{trimmed}/v1/metrics"),
    }
}

fn has_path(url: &str) -> bool {
    url.split("://").nth(1).is_some_and(|rest| rest.contains('/'))
}

/// Redacts every string attribute, event attribute and span name before export.
#[derive(Debug)]
struct Redacting<E> {
    inner: E,
    redactor: Arc<Redactor>,
}

impl<E: SpanExporter> SpanExporter for Redacting<E> {
    async fn export(&self, mut batch: Vec<SpanData>) -> OTelSdkResult {
        for span in &mut batch {
            redact_all(&self.redactor, &mut span.attributes);
            for event in span.events.events.iter_mut() {
                redact_all(&self.redactor, &mut event.attributes);
                event.name = self.redactor.redact_str(&event.name).into();
            }
            span.name = self.redactor.redact_str(&span.name).into();
        }
        self.inner.export(batch).await
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

fn redact_all(redactor: &Redactor, attributes: &mut [KeyValue]) {
    for attribute in attributes {
        if let Value::String(text) = &attribute.value {
            let redacted = redactor.redact_str(text.as_str());
            if redacted != text.as_str() {
                attribute.value = Value::from(redacted);
            }
        }
    }
}

/// OTLP/HTTP over hyper-util, run on the tokio runtime whatever thread exports (the span
/// batcher's and the metrics reader's threads block on it).
#[derive(Debug, Clone)]
struct HyperExport {
    client: Client<HttpConnector, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
}

impl HyperExport {
    fn new() -> Self {
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        Self { client, runtime: tokio::runtime::Handle::current() }
    }
}

#[async_trait::async_trait]
impl HttpClient for HyperExport {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let exchange = async move {
            let response = client.request(request.map(Full::new)).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, 1024 * 1024).collect().await?.to_bytes();
            Ok::<_, HttpError>(http::Response::from_parts(parts, body))
        };
        let task =
            self.runtime.spawn(async move { tokio::time::timeout(EXPORT_TIMEOUT, exchange).await });
        match task.await? {
            Ok(result) => result,
            Err(_) => Err("OTLP export timed out".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_endpoint_gets_the_traces_path() {
        assert_eq!(traces_url("http://127.0.0.1:4318"), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://127.0.0.1:4318/"), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(
            traces_url("https://c.example/otlp/v1/traces"),
            "https://c.example/otlp/v1/traces"
        );
    }

    #[test]
    fn the_metrics_path_follows_the_one_endpoint() {
        for (endpoint, url) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/metrics"),
            ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/metrics"),
            ("https://c.example/otlp", "https://c.example/otlp/v1/metrics"),
            ("https://c.example/otlp/v1/traces", "https://c.example/otlp/v1/metrics"),
            ("https://c.example/otlp/v1/metrics", "https://c.example/otlp/v1/metrics"),
        ] {
            assert_eq!(metrics_url(endpoint), url, "{endpoint}");
        }
    }
}
