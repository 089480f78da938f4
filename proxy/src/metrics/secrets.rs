//! The secret store's gauges: observed from the current snapshot at each collection (by
//! `/metrics` or the OTLP reader), through a weak reference, so that the metrics never keep a
//! store alive. They carry counts, ages and secret names, never a value.

use std::sync::{Arc, OnceLock, Weak};
use std::time::{Instant, SystemTime};

use opentelemetry::metrics::{AsyncInstrument, Meter};
use opentelemetry::KeyValue;

use crate::secrets::SecretStore;

/// The secret store's state, read from the current snapshot at each collection.
pub(super) fn register(meter: &Meter, store: &Arc<OnceLock<Weak<SecretStore>>>) {
    meter
        .u64_observable_gauge("keyward.secrets.referenced")
        .with_unit("{secret}")
        .with_description("Secrets the configuration refers to.")
        .with_callback(observed(store, |store, gauge| {
            gauge.observe(store.names().len() as u64, &[]);
        }))
        .build();
    meter
        .u64_observable_gauge("keyward.secrets.missing")
        .with_unit("{secret}")
        .with_description("Referenced secrets without a value.")
        .with_callback(observed(store, |store, gauge| {
            gauge.observe(store.snapshot().missing().len() as u64, &[]);
        }))
        .build();
    meter
        .f64_observable_gauge("keyward.secret.snapshot.age")
        .with_unit("s")
        .with_description("Time since the source last answered for every secret (-1: never).")
        .with_callback(observed(store, |store, gauge| {
            let age = store.snapshot().loaded_at().map_or(-1.0, |at| {
                let age = SystemTime::now().duration_since(at).unwrap_or_default();
                (age.as_secs_f64() * 1000.0).round() / 1000.0
            });
            gauge.observe(age, &[]);
        }))
        .build();
    meter
        .f64_observable_gauge("keyward.secret.expiry")
        .with_unit("s")
        .with_description(
            "Time until each secret's current version expires (exp), for versions that have one.",
        )
        .with_callback(observed(store, |store, gauge| {
            let (snapshot, now) = (store.snapshot(), Instant::now());
            for name in store.names() {
                if let Some(until) = snapshot.get(name).and_then(|v| v.current_until) {
                    let left = until.saturating_duration_since(now).as_secs() as f64;
                    gauge.observe(left, &[KeyValue::new("secret", name.clone())]);
                }
            }
        }))
        .build();
}

/// A gauge's callback that observes the store while it lives (and nothing once it is gone or
/// before it is set).
fn observed<T>(
    store: &Arc<OnceLock<Weak<SecretStore>>>,
    observe: impl Fn(&SecretStore, &dyn AsyncInstrument<T>) + Send + Sync + 'static,
) -> impl Fn(&dyn AsyncInstrument<T>) + Send + Sync + 'static {
    let store = store.clone();
    move |gauge| {
        if let Some(store) = store.get().and_then(Weak::upgrade) {
            observe(&store, gauge);
        }
    }
}
