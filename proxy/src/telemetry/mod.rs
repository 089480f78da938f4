//! Telemetry: JSON logs (or text) on stdout, OTLP traces, and the panic hook, all of which
//! pass through the redactor before anything leaves the process; and the OTLP side of the
//! metrics ([`metric_reader`], used by [`crate::metrics`]), with the same settings and resource.
//!
//! Events carry names, kinds and numbers: callers never pass a header map, a request, a URL
//! with a query string or a secret as a field. Below INFO, only keyward's own events are ever
//! written, whatever the filter says: dependencies' debug and trace output (HTTP frames, SDK
//! request dumps) is where credentials leak in other proxies, and no switch lifts this cap.

mod otlp;
pub mod redact;

pub(crate) use otlp::{metric_reader, resource};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Level, Metadata};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, FilterExt, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryConfig};
use redact::{RedactingStdout, Redactor};

/// True for events that may be written at any level: keyward's own, or INFO and above.
fn allowed(meta: &Metadata<'_>) -> bool {
    *meta.level() <= Level::INFO || is_keyward(meta)
}

fn is_keyward(meta: &Metadata<'_>) -> bool {
    meta.target() == "keyward" || meta.target().starts_with("keyward::")
}

/// Set once spans are exported: trace context is then continued and propagated.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Makes `span` a child of the W3C trace context in `headers`, if any. Without export this
/// does nothing, and the client's `traceparent` passes through untouched.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if EXPORTING.load(Ordering::Relaxed) {
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&opentelemetry_http::HeaderExtractor(headers))
        });
        let _ = span.set_parent(parent);
    }
}

/// Writes `span`'s context into `headers` (replacing `traceparent` and `tracestate`) when
/// spans are exported, so the backend and upstreams join the trace.
pub fn propagate(span: &tracing::Span, headers: &mut http::HeaderMap) {
    if EXPORTING.load(Ordering::Relaxed) {
        let context = span.context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut opentelemetry_http::HeaderInjector(headers))
        });
    }
}

/// What must be flushed at exit.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporter (bounded by the exporter's timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber, the OTLP exporter when configured, W3C trace-context
/// propagation and the panic hook. Must run inside the tokio runtime. `RUST_LOG` wins over
/// `log_level`; the default is `info`.
pub fn init(config: &TelemetryConfig, redactor: Arc<Redactor>) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(config.log_level.as_deref().unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Spans go to the exporter only; log lines are events.
    // The hint keeps the EnvFilter's level as the global maximum: without it the combined
    // filter has none, and every disabled event and span is evaluated on every call.
    let filter = filter.and(
        filter_fn(|meta| allowed(meta) && !meta.is_span()).with_max_level_hint(LevelFilter::TRACE),
    );
    let writer = RedactingStdout::new(redactor.clone());
    let logs = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        // Colour only on a terminal: escape codes in a file or a log pipeline are noise.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    let (provider, problem) = match otlp::provider(config, redactor) {
        Ok(provider) => (provider, None),
        Err(problem) => (None, Some(problem)),
    };
    let traces = provider.as_ref().map(|provider| {
        EXPORTING.store(true, Ordering::Relaxed);
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        tracing_opentelemetry::layer().with_tracer(provider.tracer("keyward")).with_filter(
            filter_fn(|meta| meta.is_span() && is_keyward(meta))
                .with_max_level_hint(LevelFilter::INFO),
        )
    });
    // `try_init` fails only when a subscriber is already set (tests that start several apps
    // in one process); the first one stays.
    // An absent layer (`Option::None`) declares interest in every callsite, which turns every
    // span and event, at any level, into a per-call filter evaluation: add it only if present.
    let registry = tracing_subscriber::registry().with(logs);
    let _ = match traces {
        Some(traces) => registry.with(traces).try_init(),
        None => registry.try_init(),
    };
    if let Some(problem) = problem {
        tracing::error!(error = %problem, "OTLP export disabled");
    }
    install_panic_hook();
    Telemetry { provider }
}

/// Panics are logged as events (and so redacted) instead of printed raw to stderr.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-string payload)".to_owned());
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
        // `panic`, not `message`: the event's own message is the JSON line's `message` key.
        tracing::error!(target: "keyward::panic", panic = %message, location, "a task panicked");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::callsite::Identifier;
    use tracing::field::FieldSet;
    use tracing::metadata::Kind;

    struct Site;
    impl tracing::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            unimplemented!()
        }
    }
    static SITE: Site = Site;

    fn meta(target: &'static str, level: Level) -> Metadata<'static> {
        let fields = FieldSet::new(&[], Identifier(&SITE));
        Metadata::new("event", target, level, None, None, None, fields, Kind::EVENT)
    }

    #[test]
    fn dependencies_are_capped_at_info_and_keyward_is_not() {
        assert!(allowed(&meta("keyward::access", Level::TRACE)));
        assert!(allowed(&meta("keyward", Level::DEBUG)));
        assert!(allowed(&meta("h2::codec", Level::INFO)));
        for target in ["h2::codec", "azure_core::http", "typespec_client_core", "keywardx"] {
            assert!(!allowed(&meta(target, Level::DEBUG)), "{target}");
            assert!(!allowed(&meta(target, Level::TRACE)), "{target}");
        }
    }
}
