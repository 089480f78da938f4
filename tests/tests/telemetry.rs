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

async fn one_request_and_its_span(keyward: &Keyward, receiver: &OtlpReceiver) -> String {
    let http = client::http1();
    let served = eventually(Duration::from_secs(10), || async {
        send(&http, request(keyward.ingress, "GET", "/mcp", &[("x-api-key", KEY)], "")).await.status
            == 200
    })
    .await;
    assert!(served);
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
