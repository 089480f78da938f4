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

pub fn config(backend: &TestBackend, secrets: &TempDir, extra: &str) -> Config {
    let text = format!(
        r#"
        [ingress]
        listen = "127.0.0.1:0"
        backend = "http://{backend}"
        allowed_origins = ["https://app.example"]
        backend_timeout = "500ms"
        {extra}
        [[ingress.clients]]
        id = "alpha"
        secret = "alpha-key"
        [[ingress.clients]]
        id = "beta"
        secret = "beta-key"
        [admin]
        listen = "127.0.0.1:0"
        [secrets]
        source = "file"
        dir = "{dir}"
        watch_interval = "50ms"
        rotation_overlap = "1h"
        "#,
        backend = backend.addr,
        dir = secrets.path().display(),
    );
    Config::parse(&text).expect("test config")
}

pub async fn pod_with(extra: &str) -> Pod {
    let backend = TestBackend::start().await;
    let secrets = TempDir::new("ingress");
    secrets.write_secret("alpha-key", &format!("{ALPHA}\n"));
    secrets.write_secret("beta-key", BETA);
    let app =
        App::start(config(&backend, &secrets, extra), Default::default()).await.expect("start");
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
    pod_with("").await
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
