//! The in-process pod the ingress service tests share: the whole stack on loopback in front of
//! a recording, streaming test backend, with two clients whose keys are file secrets.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use keyward::app::App;
use keyward::config::Config;
use keyward_tests::backend::TestBackend;
use keyward_tests::client::{self, get_with_key};
use keyward_tests::config::Builder;
use keyward_tests::dir::TempDir;
use keyward_tests::process::eventually;

pub const ALPHA: &str = "alpha-key-0123456789abcdef";
pub const BETA: &str = "beta-key-0123456789abcdef0";

/// A running keyward in front of a test backend.
pub struct Pod {
    pub app: App,
    pub backend: TestBackend,
    pub secrets: TempDir,
}

/// What every service test's configuration shares: two clients, one allowed origin, a short
/// backend timeout, file secrets watched every 50 ms with an hour's rotation overlap.
pub fn config(backend: &TestBackend, secrets: &TempDir) -> Builder {
    Builder::files(secrets.path())
        .backend(backend.addr)
        .set("ingress.allowed_origins", vec!["https://app.example"])
        .set("ingress.backend_timeout", "500ms")
        .client("alpha", "alpha-key")
        .client("beta", "beta-key")
        .set("secrets.rotation_overlap", "1h")
}

/// The configuration keyward parses from `builder`.
pub fn parse(builder: &Builder) -> Config {
    Config::parse(&builder.toml()).expect("test config")
}

/// A pod whose configuration is the shared one with `change` applied.
pub async fn pod_with(change: impl FnOnce(Builder) -> Builder) -> Pod {
    let backend = TestBackend::start().await;
    let secrets = TempDir::new("ingress");
    secrets.write_secret("alpha-key", &format!("{ALPHA}\n"));
    secrets.write_secret("beta-key", BETA);
    let app = App::start(parse(&change(config(&backend, &secrets))), Default::default())
        .await
        .expect("start");
    let pod = Pod { app, backend, secrets };
    assert!(
        eventually(Duration::from_secs(5), || async {
            get_with_key(pod.app.ingress_addr, "/", ALPHA).await.status == 200
        })
        .await,
        "keys never loaded"
    );
    pod
}

pub async fn pod() -> Pod {
    pod_with(|config| config).await
}

/// Opens `/sse` through keyward, has the backend send `first`, and returns the response (its
/// headers in, its body streaming) and the backend's sender for more events.
pub async fn open_stream(
    pod: &Pod,
    first: &'static str,
) -> (http::Response<hyper::body::Incoming>, tokio::sync::mpsc::Sender<Bytes>) {
    let request = http::Request::get(format!("http://{}/sse", pod.app.ingress_addr))
        .header("x-api-key", ALPHA)
        .header("accept", "text/event-stream")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = tokio::spawn(async move { client::streaming().request(request).await });
    let events = pod.backend.next_stream().await;
    events.send(Bytes::from_static(first.as_bytes())).await.unwrap();
    (response.await.unwrap().expect("response headers"), events)
}
