//! Collected OpenTelemetry metrics in the Prometheus text format (0.0.4), for `/metrics`.
//!
//! Names follow the OpenTelemetry-to-Prometheus mapping: `.` and any other character Prometheus
//! does not allow become `_`, a unit of seconds adds `_seconds` (annotations such as `{call}`
//! add nothing), and a monotonic sum is a counter ending in `_total`. Attribute keys become
//! label names the same way. Label values are escaped; series are sorted, so the text is the
//! same for the same counts. Cumulative temporality only (the reader's). It renders what it is
//! given: the values are the instruments', which hold configuration names, never a secret.

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{
    AggregatedMetrics, Gauge, Histogram, Metric, MetricData, ResourceMetrics, Sum,
};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};

/// The manual reader `/metrics` collects with, shared with the provider that feeds it.
#[derive(Debug)]
pub(super) struct Scrape(pub(super) Arc<ManualReader>);

impl MetricReader for Scrape {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// Renders every metric of every scope in `collected`.
pub(super) fn render(collected: &ResourceMetrics) -> String {
    let mut out = String::with_capacity(8192);
    for scope in collected.scope_metrics() {
        for metric in scope.metrics() {
            match metric.data() {
                AggregatedMetrics::F64(data) => family(&mut out, metric, data),
                AggregatedMetrics::U64(data) => family(&mut out, metric, data),
                AggregatedMetrics::I64(data) => family(&mut out, metric, data),
            }
        }
    }
    out
}

/// A number as Prometheus reads it.
trait Number: Copy {
    fn text(self) -> Cow<'static, str>;
}

impl Number for f64 {
    fn text(self) -> Cow<'static, str> {
        if self.is_nan() {
            "NaN".into()
        } else if self.is_infinite() {
            if self > 0.0 { "+Inf" } else { "-Inf" }.into()
        } else {
            self.to_string().into()
        }
    }
}

impl Number for u64 {
    fn text(self) -> Cow<'static, str> {
        self.to_string().into()
    }
}

impl Number for i64 {
    fn text(self) -> Cow<'static, str> {
        self.to_string().into()
    }
}

fn family<T: Number>(out: &mut String, metric: &Metric, data: &MetricData<T>) {
    let base = name(metric.name(), metric.unit());
    match data {
        MetricData::Sum(sum) if sum.is_monotonic() => {
            let name = match base.ends_with("_total") {
                true => base,
                false => format!("{base}_total"),
            };
            header(out, &name, "counter", metric.description());
            samples_of_sum(out, &name, sum);
        }
        MetricData::Sum(sum) => {
            header(out, &base, "gauge", metric.description());
            samples_of_sum(out, &base, sum);
        }
        MetricData::Gauge(gauge) => {
            header(out, &base, "gauge", metric.description());
            samples_of_gauge(out, &base, gauge);
        }
        MetricData::Histogram(histogram) => {
            header(out, &base, "histogram", metric.description());
            buckets(out, &base, histogram);
        }
        // Not an aggregation keyward configures; Prometheus text has no plain form for it.
        MetricData::ExponentialHistogram(_) => {}
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample per point, sorted by labels (a sum's points and a gauge's alike).
fn samples<T: Number>(out: &mut String, name: &str, mut series: Vec<(String, T)>) {
    series.sort_by(|a, b| a.0.cmp(&b.0));
    for (labels, value) in series {
        sample(out, name, &labels, &value.text());
    }
}

fn samples_of_sum<T: Number>(out: &mut String, name: &str, sum: &Sum<T>) {
    samples(out, name, sum.data_points().map(|p| (labels(p.attributes()), p.value())).collect());
}

fn samples_of_gauge<T: Number>(out: &mut String, name: &str, gauge: &Gauge<T>) {
    samples(out, name, gauge.data_points().map(|p| (labels(p.attributes()), p.value())).collect());
}

/// `_bucket` per bound, cumulative, then `+Inf`, `_sum` and `_count` (the SDK counts each
/// bucket on its own).
fn buckets<T: Number>(out: &mut String, name: &str, histogram: &Histogram<T>) {
    let mut points: Vec<_> = histogram.data_points().map(|p| (labels(p.attributes()), p)).collect();
    points.sort_by(|a, b| a.0.cmp(&b.0));
    let bucket = format!("{name}_bucket");
    for (labels, point) in points {
        let mut cumulative = 0;
        for (bound, count) in point.bounds().zip(point.bucket_counts()) {
            cumulative += count;
            let le = with_label(&labels, "le", &bound.text());
            sample(out, &bucket, &le, &cumulative.to_string());
        }
        let count = point.count().to_string();
        sample(out, &bucket, &with_label(&labels, "le", "+Inf"), &count);
        sample(out, &format!("{name}_sum"), &labels, &point.sum().text());
        sample(out, &format!("{name}_count"), &labels, &count);
    }
}

fn sample(out: &mut String, name: &str, labels: &str, value: &str) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// `a="x",b="y"`, sorted by label name.
fn labels<'a>(attributes: impl Iterator<Item = &'a KeyValue>) -> String {
    let mut pairs: Vec<(String, String)> =
        attributes.map(|kv| (sanitize(kv.key.as_str()), escape(&kv.value.as_str()))).collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{key}=\"{value}\"");
    }
    out
}

fn with_label(labels: &str, key: &str, value: &str) -> String {
    match labels.is_empty() {
        true => format!("{key}=\"{value}\""),
        false => format!("{labels},{key}=\"{value}\""),
    }
}

/// A label value as the text format quotes it: backslash, double quote and line feed escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The Prometheus name of an instrument: sanitized, with the unit's suffix.
fn name(otel: &str, unit: &str) -> String {
    let mut name = sanitize(otel);
    let suffix = match unit {
        "s" => "_seconds",
        "ms" => "_milliseconds",
        "By" => "_bytes",
        _ => "",
    };
    if !name.ends_with(suffix) {
        name.push_str(suffix);
    }
    name
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`: every other character becomes `_`, a leading digit gets one.
fn sanitize(name: &str) -> String {
    let mut out: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    /// A provider and its reader, and what it renders after `record`.
    fn rendered(record: impl FnOnce(&opentelemetry::metrics::Meter)) -> String {
        let reader = Arc::new(ManualReader::builder().build());
        let provider = SdkMeterProvider::builder().with_reader(Scrape(reader.clone())).build();
        record(&provider.meter("test"));
        let mut collected = ResourceMetrics::default();
        reader.collect(&mut collected).unwrap();
        render(&collected)
    }

    #[test]
    fn counters_get_total_and_their_labels_sorted() {
        let text = rendered(|meter| {
            let counter = meter.u64_counter("keyward.auth.failures").with_unit("{failure}").build();
            counter.add(2, &[KeyValue::new("reason", "invalid"), KeyValue::new("a.b", "x")]);
            counter.add(1, &[KeyValue::new("reason", "invalid"), KeyValue::new("a.b", "x")]);
            let up_down = meter.i64_up_down_counter("in.flight").build();
            up_down.add(-3, &[]);
        });
        assert!(text.contains("# TYPE keyward_auth_failures_total counter\n"), "{text}");
        assert!(text.contains("keyward_auth_failures_total{a_b=\"x\",reason=\"invalid\"} 3\n"));
        assert!(text.contains("# TYPE in_flight gauge\nin_flight -3\n"), "{text}");
    }

    #[test]
    fn histograms_have_cumulative_buckets_a_sum_and_a_count() {
        let text = rendered(|meter| {
            let histogram = meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Duration.\nTwo lines \\ one backslash.")
                .with_boundaries(vec![0.1, 1.0, 10.0])
                .build();
            for value in [0.05, 0.5, 0.7, 20.0] {
                histogram.record(value, &[KeyValue::new("l", "v")]);
            }
        });
        let name = "http_server_request_duration_seconds";
        for line in [
            format!("# HELP {name} Duration.\\nTwo lines \\\\ one backslash.\n"),
            format!("# TYPE {name} histogram\n"),
            format!("{name}_bucket{{l=\"v\",le=\"0.1\"}} 1\n"),
            format!("{name}_bucket{{l=\"v\",le=\"1\"}} 3\n"),
            format!("{name}_bucket{{l=\"v\",le=\"10\"}} 3\n"),
            format!("{name}_bucket{{l=\"v\",le=\"+Inf\"}} 4\n"),
            format!("{name}_sum{{l=\"v\"}} 21.25\n"),
            format!("{name}_count{{l=\"v\"}} 4\n"),
        ] {
            assert!(text.contains(&line), "missing {line}in\n{text}");
        }
    }

    #[test]
    fn gauges_and_escaped_label_values() {
        let text = rendered(|meter| {
            meter
                .f64_observable_gauge("keyward.secret.snapshot.age")
                .with_unit("s")
                .with_callback(|gauge| gauge.observe(-1.0, &[]))
                .build();
            meter
                .u64_observable_gauge("odd-name.2")
                .with_callback(|gauge| {
                    gauge.observe(7, &[KeyValue::new("name", "a\"b\\c\nd")]);
                })
                .build();
        });
        assert!(text.contains("# TYPE keyward_secret_snapshot_age_seconds gauge\n"), "{text}");
        assert!(text.contains("keyward_secret_snapshot_age_seconds -1\n"), "{text}");
        assert!(text.contains("odd_name_2{name=\"a\\\"b\\\\c\\nd\"} 7\n"), "{text}");
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(name("keyward.secret.expiry", "s"), "keyward_secret_expiry_seconds");
        assert_eq!(name("x_seconds", "s"), "x_seconds");
        assert_eq!(name("keyward.mcp.denials", "{call}"), "keyward_mcp_denials");
        assert_eq!(sanitize("9lives/x"), "_9lives_x");
        assert_eq!(f64::NAN.text(), "NaN");
        assert_eq!(f64::INFINITY.text(), "+Inf");
        assert_eq!(0.0005f64.text(), "0.0005");
        assert_eq!(10.0f64.text(), "10");
    }
}
