//! Log output: JSON lines (or text for a terminal) on stdout, filtered by config or RUST_LOG.
//!
//! Events carry names, kinds and numbers: callers never pass a header map, a request, a URL
//! with a query string or a secret as a field. Below INFO, only keyward's own events are ever
//! written, whatever the filter says: dependencies' debug and trace output (HTTP frames, SDK
//! request dumps) is where credentials leak in other proxies, and no switch lifts this cap.

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryConfig};

/// True for events that may be written at any level: keyward's own, or INFO and above.
fn allowed(meta: &Metadata<'_>) -> bool {
    *meta.level() <= Level::INFO
        || meta.target() == "keyward"
        || meta.target().starts_with("keyward::")
}

/// Installs the global subscriber. `RUST_LOG` wins over `log_level`; the default is `info`.
pub fn init(config: &TelemetryConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(config.log_level.as_deref().unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = filter.and(filter_fn(allowed));
    let layer = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stdout)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stdout)
            .with_filter(filter)
            .boxed(),
    };
    // `try_init` fails only when a subscriber is already set (tests that start several apps
    // in one process); the first one stays.
    let _ = tracing_subscriber::registry().with(layer).try_init();
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
