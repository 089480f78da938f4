//! Log output: JSON lines (or text for a terminal) on stdout, filtered by config or RUST_LOG.
//!
//! Events carry names, kinds and numbers: callers never pass a header map, a request, a URL
//! with a query string or a secret as a field.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetryConfig};

/// Installs the global subscriber. `RUST_LOG` wins over `log_level`; the default is `info`.
pub fn init(config: &TelemetryConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(config.log_level.as_deref().unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    // `try_init` fails only when a subscriber is already set (tests that start several apps
    // in one process); the first one stays.
    let _ = match config.log_format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
