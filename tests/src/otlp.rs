//! A real OTLP receiver for tests, of traces and metrics, speaking both OTLP/HTTP
//! (`POST /v1/traces`, `POST /v1/metrics`) and OTLP/gRPC (`TraceService/Export`,
//! `MetricsService/Export` over h2c, with gRPC's length-prefixed messages and `grpc-status`
//! trailers). It decodes `ExportTraceServiceRequest` and `ExportMetricsServiceRequest` with the
//! opentelemetry-proto definitions and keeps every raw body too, so a test can both check span
//! and data point attributes and scan the exact bytes that left the process.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point, NumberDataPoint};
use prost::Message;
use tokio::net::TcpListener;

/// One received span, flattened.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// Span name.
    pub name: String,
    /// Trace id, lowercase hex.
    pub trace_id: String,
    /// Span id, lowercase hex.
    pub span_id: String,
    /// Parent span id, lowercase hex (empty for a root).
    pub parent_span_id: String,
    /// Attributes as strings.
    pub attributes: Vec<(String, String)>,
    /// Resource attributes as strings.
    pub resource: Vec<(String, String)>,
}

impl ReceivedSpan {
    /// The value of attribute `key`.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// One received metric data point, flattened.
#[derive(Debug, Clone)]
pub struct ReceivedPoint {
    /// The instrument's name.
    pub metric: String,
    /// Its unit.
    pub unit: String,
    /// `sum` (with `monotonic`), `gauge` or `histogram`.
    pub kind: &'static str,
    /// For a sum: whether it only grows (a counter).
    pub monotonic: bool,
    /// The value of a sum or gauge; a histogram's sum.
    pub value: f64,
    /// A histogram's count (0 for the others).
    pub count: u64,
    /// A histogram's bucket bounds (empty for the others).
    pub bounds: Vec<f64>,
    /// Attributes as strings.
    pub attributes: Vec<(String, String)>,
    /// Resource attributes as strings.
    pub resource: Vec<(String, String)>,
}

impl ReceivedPoint {
    /// The value of attribute `key`.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    points: Vec<ReceivedPoint>,
    bodies: Vec<Bytes>,
}

/// A receiver on `127.0.0.1:0`, stopped when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    /// Where it listens; the traces endpoint is `http://{addr}/v1/traces`.
    pub addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OtlpReceiver {
    /// Starts the receiver.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Received::default()));
        let state = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(receive(request, &state).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, received, task }
    }

    /// The base endpoint to configure (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.lock().unwrap().spans.clone()
    }

    /// Every metric data point received so far, in the order they came (a cumulative
    /// instrument appears once per export).
    pub fn points(&self) -> Vec<ReceivedPoint> {
        self.received.lock().unwrap().points.clone()
    }

    /// The latest data point of `metric` whose attributes include every pair of `with`.
    pub fn latest(&self, metric: &str, with: &[(&str, &str)]) -> Option<ReceivedPoint> {
        let received = self.received.lock().unwrap();
        received
            .points
            .iter()
            .rev()
            .find(|p| p.metric == metric && with.iter().all(|(k, v)| p.attribute(k) == Some(*v)))
            .cloned()
    }

    /// Every raw request body received so far (traces and metrics).
    pub fn bodies(&self) -> Vec<Bytes> {
        self.received.lock().unwrap().bodies.clone()
    }
}

const GRPC_TRACES: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const GRPC_METRICS: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

type Reply = Response<http_body_util::StreamBody<frames::Frames>>;

async fn receive(request: Request<Incoming>, state: &Mutex<Received>) -> Reply {
    let (grpc, metrics) = match request.uri().path() {
        "/v1/traces" => (false, false),
        "/v1/metrics" => (false, true),
        GRPC_TRACES => (true, false),
        GRPC_METRICS => (true, true),
        _ => return reply(StatusCode::NOT_FOUND, Bytes::new(), false),
    };
    let Ok(body) = request.into_body().collect().await.map(|b| b.to_bytes()) else {
        return reply(StatusCode::BAD_REQUEST, Bytes::new(), grpc);
    };
    // gRPC frames a message as: compressed flag (1 byte), length (4 bytes, big endian), bytes.
    let message = if grpc {
        if body.len() < 5 || body[0] != 0 {
            return reply(StatusCode::BAD_REQUEST, Bytes::new(), grpc);
        }
        body.slice(5..)
    } else {
        body.clone()
    };
    let response = if metrics {
        let Ok(export) = ExportMetricsServiceRequest::decode(message) else {
            return reply(StatusCode::BAD_REQUEST, Bytes::new(), grpc);
        };
        record_metrics(export, body, state);
        ExportMetricsServiceResponse::default().encode_to_vec()
    } else {
        let Ok(export) = ExportTraceServiceRequest::decode(message) else {
            return reply(StatusCode::BAD_REQUEST, Bytes::new(), grpc);
        };
        record(export, body, state);
        ExportTraceServiceResponse::default().encode_to_vec()
    };
    if grpc {
        let mut framed = vec![0];
        framed.extend_from_slice(&(response.len() as u32).to_be_bytes());
        framed.extend_from_slice(&response);
        reply(StatusCode::OK, framed.into(), true)
    } else {
        reply(StatusCode::OK, response.into(), false)
    }
}

fn record(export: ExportTraceServiceRequest, body: Bytes, state: &Mutex<Received>) {
    let mut received = state.lock().unwrap();
    received.bodies.push(body);
    for resource_spans in export.resource_spans {
        let resource = resource_spans.resource.map(|r| flatten(&r.attributes)).unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.spans.push(ReceivedSpan {
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: flatten(&span.attributes),
                    resource: resource.clone(),
                });
            }
        }
    }
}

fn record_metrics(export: ExportMetricsServiceRequest, body: Bytes, state: &Mutex<Received>) {
    let mut received = state.lock().unwrap();
    received.bodies.push(body);
    for resource_metrics in export.resource_metrics {
        let resource =
            resource_metrics.resource.map(|r| flatten(&r.attributes)).unwrap_or_default();
        for scope in resource_metrics.scope_metrics {
            for metric in scope.metrics {
                let point = |kind, monotonic, value, attributes: &[KeyValue]| ReceivedPoint {
                    metric: metric.name.clone(),
                    unit: metric.unit.clone(),
                    kind,
                    monotonic,
                    value,
                    count: 0,
                    bounds: Vec::new(),
                    attributes: flatten(attributes),
                    resource: resource.clone(),
                };
                match &metric.data {
                    Some(Data::Sum(sum)) => {
                        for p in &sum.data_points {
                            let value = number(p);
                            received.points.push(point(
                                "sum",
                                sum.is_monotonic,
                                value,
                                &p.attributes,
                            ));
                        }
                    }
                    Some(Data::Gauge(gauge)) => {
                        for p in &gauge.data_points {
                            received.points.push(point("gauge", false, number(p), &p.attributes));
                        }
                    }
                    Some(Data::Histogram(histogram)) => {
                        for p in &histogram.data_points {
                            let value = p.sum.unwrap_or_default();
                            let mut received_point =
                                point("histogram", false, value, &p.attributes);
                            received_point.count = p.count;
                            received_point.bounds = p.explicit_bounds.clone();
                            received.points.push(received_point);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

fn number(point: &NumberDataPoint) -> f64 {
    match point.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => f64::NAN,
    }
}

/// An OTLP/HTTP reply, or a gRPC one: status 200, the framed message, `grpc-status` trailers.
fn reply(status: StatusCode, body: Bytes, grpc: bool) -> Reply {
    let mut frames = vec![Frame::data(body)];
    let builder = if grpc {
        let mut trailers = http::HeaderMap::new();
        let code = if status == StatusCode::OK { "0" } else { "3" };
        trailers.insert("grpc-status", http::HeaderValue::from_static(code));
        frames.push(Frame::trailers(trailers));
        Response::builder().status(StatusCode::OK).header("content-type", "application/grpc")
    } else {
        Response::builder().status(status).header("content-type", "application/x-protobuf")
    };
    builder.body(http_body_util::StreamBody::new(frames::Frames(frames.into()))).expect("response")
}

/// The few stream helpers the reply body needs.
mod frames {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use hyper::body::Frame;

    /// A fixed list of frames, yielded in order.
    #[derive(Debug)]
    pub(super) struct Frames(pub(super) VecDeque<Frame<Bytes>>);

    impl futures::Stream for Frames {
        type Item = Result<Frame<Bytes>, Infallible>;

        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }
}

fn flatten(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
