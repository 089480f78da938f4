//! OTLP trace export: gRPC (tonic, on hyper) or protobuf over HTTP on keyward's own hyper
//! client. Every exported span passes through the redactor first. Export failures are the
//! exporter's problem: spans are dropped, traffic never waits on a collector.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::{KeyValue, Value};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
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
    let from_env = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()));
    if config.otlp_endpoint.is_none() && !from_env {
        return Ok(None);
    }
    let protocol = config.otlp_protocol.unwrap_or_else(|| {
        match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            Ok("http/protobuf") => OtlpProtocol::HttpProtobuf,
            _ => OtlpProtocol::Grpc,
        }
    });
    let exporter = match protocol {
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
    let service_name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| config.service_name.clone());
    let resource = Resource::builder()
        .with_service_name(service_name)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(Redacting { inner: exporter, redactor })
        .with_resource(resource)
        .build();
    Ok(Some(provider))
}

/// An OTLP/HTTP endpoint given as a base (`http://collector:4318`) gets the traces path.
fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let has_path = trimmed.split("://").nth(1).is_some_and(|rest| rest.contains('/'));
    if has_path {
        endpoint.to_owned()
    } else {
        format!("{trimmed}/v1/traces")
    }
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

/// OTLP/HTTP over hyper-util, run on the tokio runtime whatever thread exports.
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
}
