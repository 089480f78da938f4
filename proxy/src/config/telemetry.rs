//! `[telemetry]`: logs and trace export. An endpoint is a place, never a credential.

use serde::Deserialize;

use super::{invalid, ConfigError};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable.
    Text,
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum OtlpProtocol {
    /// gRPC (port 4317 by convention).
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// Protobuf over HTTP (port 4318 by convention).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// `[telemetry]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `json` (default) or `text`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `keyward=debug`; `RUST_LOG` overrides it.
    pub log_level: Option<String>,
    /// OTLP collector for traces and metrics; `OTEL_EXPORTER_OTLP_ENDPOINT` works too. None: no export.
    pub otlp_endpoint: Option<String>,
    /// `grpc` (default) or `http/protobuf`; `OTEL_EXPORTER_OTLP_PROTOCOL` works too.
    pub otlp_protocol: Option<OtlpProtocol>,
    /// The `service.name` resource attribute; `OTEL_SERVICE_NAME` overrides it.
    #[serde(default = "service_name")]
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::default(),
            log_level: None,
            otlp_endpoint: None,
            otlp_protocol: None,
            service_name: service_name(),
        }
    }
}

impl TelemetryConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(endpoint) = &self.otlp_endpoint {
            super::url::CheckedUrl::parse(endpoint, &super::url::OTLP)
                .map_err(|problem| invalid("telemetry.otlp_endpoint", problem))?;
        }
        Ok(())
    }
}

fn service_name() -> String {
    "keyward".into()
}
