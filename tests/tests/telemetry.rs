//! OTLP export from the real binary, both ways it is configured: the `[telemetry]` keys with
//! gRPC, and the standard `OTEL_*` variables with protobuf over HTTP.

use std::time::Duration;

use keyward_tests::backend::TestBackend;
use keyward_tests::client::{self, request, send};
use keyward_tests::config::Builder;
use keyward_tests::dir::TempDir;
use keyward_tests::otlp::OtlpReceiver;
use keyward_tests::process::{eventually, Keyward};

const KEY: &str = "telemetry-client-key-0123456789";

fn config(dir: &TempDir, backend: &TestBackend) -> Builder {
    dir.write_secret("client", KEY);
    Builder::files(dir.path())
        .backend(backend.addr)
        .client("otel-client", "client")
        .set("secrets.watch_interval", "100ms")
}

/// Waits until keyward answers a request with the client's key with 200.
async fn serves_a_request(keyward: &Keyward) {
    let http = client::http1();
    let served = eventually(Duration::from_secs(10), || async {
        send(&http, request(keyward.ingress, "GET", "/mcp", &[("x-api-key", KEY)], "")).await.status
            == 200
    })
    .await;
    assert!(served);
}

async fn one_request_and_its_span(keyward: &Keyward, receiver: &OtlpReceiver) -> String {
    serves_a_request(keyward).await;
    let exported = eventually(Duration::from_secs(15), || async {
        receiver
            .spans()
            .iter()
            .any(|s| s.name == "ingress" && s.attribute("keyward.client") == Some("otel-client"))
    })
    .await;
    assert!(exported, "no span arrived:\n{}", keyward.output());
    let span = receiver.spans().into_iter().find(|s| s.name == "ingress").unwrap();
    span.resource
        .iter()
        .find(|(k, _)| k == "service.name")
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_grpc_from_the_config() {
    let (dir, backend, receiver) =
        (TempDir::new("otel-grpc"), TestBackend::start().await, OtlpReceiver::start().await);
    let config = config(&dir, &backend)
        .set("telemetry.otlp_endpoint", receiver.endpoint())
        .set("telemetry.otlp_protocol", "grpc");
    let keyward =
        Keyward::start_with_env(&config.write(&dir), &[("OTEL_BSP_SCHEDULE_DELAY", "100")]);
    assert_eq!(one_request_and_its_span(&keyward, &receiver).await, "keyward");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_otel_variables_work_too() {
    let (dir, backend, receiver) =
        (TempDir::new("otel-env"), TestBackend::start().await, OtlpReceiver::start().await);
    let endpoint = receiver.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_SERVICE_NAME", "keyward-from-env"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let keyward = Keyward::start_with_env(&config(&dir, &backend).write(&dir), &env);
    assert_eq!(one_request_and_its_span(&keyward, &receiver).await, "keyward-from-env");
}

/// The latency buckets keyward has always had, in seconds.
const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A client key and an egress route, both from files; metrics exported every 100 ms.
fn metrics_config(dir: &TempDir, backend: &TestBackend, upstream: &TestBackend) -> Builder {
    dir.write_secret("apim", "telemetry-apim-key-0123456789");
    config(dir, backend).route("/health/", &format!("http://{}/api/", upstream.addr), "apim")
}

const METRICS_ENV: (&str, &str) = ("OTEL_METRIC_EXPORT_INTERVAL", "100");

/// Drives keyward (a served request, a refused key, an egress call) and checks what the
/// receiver gets: every instrument with its attributes, from the resource `service`.
async fn metrics_arrive(keyward: &Keyward, receiver: &OtlpReceiver, service: &str) {
    let http = client::http1();
    serves_a_request(keyward).await;
    let wrong = request(keyward.ingress, "GET", "/mcp", &[("x-api-key", "a-wrong-key")], "");
    assert_eq!(send(&http, wrong).await.status, 401);
    let egress = keyward.egress.expect("egress");
    let out = send(&http, request(egress, "GET", "/health/activity/2025-02-02", &[], "")).await;
    assert_eq!(out.status, 200);

    let ingress_ok = [
        ("keyward.listener", "ingress"),
        ("keyward.client", "otel-client"),
        ("http.request.method", "GET"),
        ("http.response.status_code", "200"),
    ];
    let refused = [("keyward.listener", "ingress"), ("keyward.client", "unknown")];
    let refused = [refused[0], refused[1], ("http.response.status_code", "401")];
    let egress_ok = [
        ("keyward.listener", "egress"),
        ("http.route", "/health/"),
        ("http.response.status_code", "200"),
    ];
    let server = "http.server.request.duration";
    let client = "http.client.request.duration";
    let arrived = eventually(Duration::from_secs(15), || async {
        let has = |metric: &str, with: &[(&str, &str)]| receiver.latest(metric, with).is_some();
        has(server, &ingress_ok)
            && has(server, &refused)
            && has(server, &egress_ok)
            && has(client, &[("keyward.listener", "ingress"), ("http.response.status_code", "200")])
            && has(client, &egress_ok)
            && receiver
                .latest("keyward.auth.failures", &[("reason", "invalid")])
                .is_some_and(|p| p.value >= 1.0)
            && has("keyward.secret.snapshot.age", &[])
    })
    .await;
    let names: std::collections::BTreeSet<String> =
        receiver.points().into_iter().map(|p| p.metric).collect();
    assert!(arrived, "not every metric arrived; got {names:?}\n{}", keyward.output());

    let point = receiver.latest(server, &ingress_ok).unwrap();
    assert_eq!(
        (point.kind, point.unit.as_str(), point.bounds.as_slice()),
        ("histogram", "s", &BUCKETS[..])
    );
    assert!(point.count >= 1 && point.value > 0.0, "{point:?}");
    assert_eq!(point.attribute("http.route"), None, "no route on ingress");
    assert!(point.resource.iter().any(|(k, v)| k == "service.name" && v == service), "{point:?}");
    let point = receiver.latest(server, &egress_ok).unwrap();
    assert_eq!(
        (point.attribute("http.request.method"), point.attribute("keyward.client")),
        (Some("GET"), None)
    );
    let point = receiver.latest(client, &egress_ok).unwrap();
    assert_eq!(point.attribute("error.type"), None);

    let failures = receiver.latest("keyward.auth.failures", &[("reason", "invalid")]).unwrap();
    assert_eq!((failures.kind, failures.monotonic), ("sum", true));
    let untouched = receiver.latest("keyward.auth.failures", &[("reason", "missing")]);
    assert_eq!(untouched.map(|p| p.value), Some(0.0), "the fixed label sets start at zero");
    let gauge = |name| receiver.latest(name, &[]).map(|p| (p.kind, p.value));
    assert_eq!(gauge("keyward.secrets.referenced"), Some(("gauge", 2.0)));
    assert_eq!(gauge("keyward.secrets.missing"), Some(("gauge", 0.0)));
    let age = gauge("keyward.secret.snapshot.age").unwrap().1;
    assert!((0.0..60.0).contains(&age), "{age}");
    let errors =
        receiver.latest("keyward.upstream.errors", &[("listener", "egress"), ("kind", "timeout")]);
    assert_eq!(errors.map(|p| p.value), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exported_over_grpc_from_the_config() {
    let (dir, backend, upstream, receiver) = (
        TempDir::new("otel-metrics-grpc"),
        TestBackend::start().await,
        TestBackend::start().await,
        OtlpReceiver::start().await,
    );
    let config = metrics_config(&dir, &backend, &upstream)
        .set("telemetry.otlp_endpoint", receiver.endpoint())
        .set("telemetry.otlp_protocol", "grpc");
    let keyward = Keyward::start_with_env(&config.write(&dir), &[METRICS_ENV]);
    metrics_arrive(&keyward, &receiver, "keyward").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exported_over_http_with_the_otel_variables() {
    let (dir, backend, upstream, receiver) = (
        TempDir::new("otel-metrics-http"),
        TestBackend::start().await,
        TestBackend::start().await,
        OtlpReceiver::start().await,
    );
    let endpoint = receiver.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_SERVICE_NAME", "keyward-metrics-from-env"),
        METRICS_ENV,
    ];
    let keyward =
        Keyward::start_with_env(&metrics_config(&dir, &backend, &upstream).write(&dir), &env);
    metrics_arrive(&keyward, &receiver, "keyward-metrics-from-env").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tools_call_span_carries_the_mcp_conventions_and_no_session_id() {
    let (dir, backend, receiver) =
        (TempDir::new("otel-mcp"), TestBackend::start().await, OtlpReceiver::start().await);
    dir.write_secret("client", KEY);
    let mut client = keyward_tests::config::table([("id", "otel-client"), ("secret", "client")]);
    client.insert("tools".into(), vec!["get_activity"].into());
    let config = Builder::files(dir.path())
        .backend(backend.addr)
        .push("ingress.clients", client)
        .set("telemetry.otlp_endpoint", receiver.endpoint())
        .set("telemetry.otlp_protocol", "http/protobuf");
    let keyward =
        Keyward::start_with_env(&config.write(&dir), &[("OTEL_BSP_SCHEDULE_DELAY", "100")]);
    let http = client::http1();
    let json = [("x-api-key", KEY), ("content-type", "application/json")];
    let initialize = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
    let opened = eventually(Duration::from_secs(10), || async {
        send(&http, request(keyward.ingress, "POST", "/mcp/session", &json, initialize))
            .await
            .status
            == 200
    })
    .await;
    assert!(opened);
    let reply =
        send(&http, request(keyward.ingress, "POST", "/mcp/session", &json, initialize)).await;
    let session = reply.headers["mcp-session-id"].to_str().unwrap().to_owned();
    assert!(session.starts_with("backend-session-1."), "{session}");
    let with_session = [json[0], json[1], ("mcp-session-id", session.as_str())];
    let call = serde_json::json!({"jsonrpc": "2.0", "id": "call-7", "method": "tools/call",
        "params": {"name": "get_activity", "arguments": {"date": "2025-02-02"}}})
    .to_string();
    let called = send(&http, request(keyward.ingress, "POST", "/mcp", &with_session, &call)).await;
    assert_eq!(called.status, 200);
    let denied =
        r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"delete_everything"}}"#;
    let refused = send(&http, request(keyward.ingress, "POST", "/mcp", &json, denied)).await;
    assert_eq!(refused.status, 200);
    assert!(refused.text().contains("-32602"), "{}", refused.text());

    let tool = |span: &keyward_tests::otlp::ReceivedSpan, name: &str| {
        span.name == "ingress" && span.attribute("gen_ai.tool.name") == Some(name)
    };
    let exported = eventually(Duration::from_secs(15), || async {
        let spans = receiver.spans();
        spans.iter().any(|s| tool(s, "get_activity"))
            && spans.iter().any(|s| tool(s, "delete_everything"))
    })
    .await;
    assert!(exported, "the spans did not arrive:\n{}", keyward.output());
    let spans = receiver.spans();
    let span = spans.iter().find(|s| tool(s, "get_activity")).unwrap();
    assert_eq!(span.attribute("mcp.method.name"), Some("tools/call"));
    assert_eq!(span.attribute("gen_ai.operation.name"), Some("execute_tool"));
    assert_eq!(span.attribute("jsonrpc.request.id"), Some("call-7"));
    assert_eq!(span.attribute("rpc.response.status_code"), None, "the backend answered");
    let digest = span.attribute("mcp.session.id").expect("a session digest");
    assert!(digest.len() == 32 && digest.bytes().all(|b| b.is_ascii_hexdigit()), "{digest}");
    let backend_id = "backend-session-1";
    for body in receiver.bodies() {
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains(backend_id) && !text.contains(&session), "a raw session id left");
        assert!(!text.contains("2025-02-02"), "a tool argument left");
    }
    let span = spans.iter().find(|s| tool(s, "delete_everything")).unwrap();
    assert_eq!(span.attribute("jsonrpc.request.id"), Some("8"));
    assert_eq!(span.attribute("rpc.response.status_code"), Some("-32602"));
    assert_eq!(span.attribute("error.type"), Some("-32602"));
    assert_eq!(span.attribute("rpc.jsonrpc.error_code"), Some("-32602"));
    assert_eq!(span.attribute("mcp.session.id"), None, "no session was presented");
}
