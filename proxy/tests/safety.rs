//! In-process service tests of the safety net: an upstream that echoes keyward's credential
//! back, a tool result carrying a client key in the middle of an SSE stream, a backend trying
//! to send a secret to an upstream, a compressed answer; in redact and in block mode.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use keyward::app::App;
use keyward_tests::backend::TestBackend;
use keyward_tests::client::{self, request, send};
use keyward_tests::config::Builder;
use keyward_tests::dir::TempDir;
use keyward_tests::process::eventually;

mod common;
use common::parse;

const CLIENT: &str = "safety-client-key-0123456789ab";
const APIM: &str = "safety-apim-key-5c3a1e9f7d2b";
const OTHER: &str = "safety-other-key-9f8e7d6c5b4a";

struct Pod {
    app: App,
    backend: TestBackend,
    apim: TestBackend,
    _secrets: TempDir,
}

async fn pod(mode: &str) -> Pod {
    let backend = TestBackend::start().await;
    let apim = TestBackend::start().await;
    let secrets = TempDir::new("safety");
    secrets.write_secret("client", CLIENT);
    secrets.write_secret("apim", APIM);
    secrets.write_secret("other", OTHER);
    let config = Builder::files(secrets.path())
        .backend(backend.addr)
        .client("alpha", "client")
        .route("/health/", &format!("http://{}/biotrackr/", apim.addr), "apim")
        .route("/other/", &format!("http://{}/", apim.addr), "other")
        .set("ingress.safety_net", mode)
        .set("egress.safety_net", mode);
    let app = App::start(parse(&config), Default::default()).await.expect("start");
    let pod = Pod { app, backend, apim, _secrets: secrets };
    let ready = eventually(Duration::from_secs(5), || async {
        let reply =
            send(&client::http1(), request(pod.egress(), "GET", "/health/x", &[], "")).await;
        reply.status == 200
    })
    .await;
    assert!(ready, "never ready");
    pod
}

impl Pod {
    fn egress(&self) -> std::net::SocketAddr {
        self.app.egress_addr.unwrap()
    }
}

fn base64(value: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(value)
}

#[tokio::test]
async fn an_upstream_echoing_its_credential_hands_the_backend_only_a_redaction() {
    let pod = pod("redact").await;
    let http = client::http1();
    let reply = send(
        &http,
        request(pod.egress(), "GET", "/health/echo", &[("accept-encoding", "gzip")], ""),
    )
    .await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    assert!(text.contains("[REDACTED]"), "{text}");
    assert!(!text.contains(APIM), "the key came back: {text}");
    let seen = pod.apim.seen();
    assert!(
        seen.last().unwrap().headers.get("accept-encoding").is_none(),
        "bodies must come plain"
    );
    let metrics = send(&http, request(pod.app.admin_addr, "GET", "/metrics", &[], "")).await.text();
    assert!(
        metrics
            .contains("keyward_secret_leaks_blocked_total{listener=\"egress\",secret=\"apim\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn in_block_mode_an_echoed_credential_is_a_502_before_any_byte() {
    let pod = pod("block").await;
    let reply = send(&client::http1(), request(pod.egress(), "GET", "/health/echo", &[], "")).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.error(), "secret_in_response");
    assert!(!reply.text().contains(APIM));
}

#[tokio::test]
async fn the_backend_cannot_send_a_secret_to_an_upstream_by_any_part_of_a_request() {
    let pod = pod("redact").await;
    let http = client::http1();
    let before = pod.apim.seen().len();
    let in_query = format!("/health/search?q={CLIENT}");
    let encoded = base64(OTHER);
    let cases = [
        request(pod.egress(), "GET", &in_query, &[], ""),
        request(pod.egress(), "GET", "/health/x", &[("x-note", &encoded)], ""),
        request(
            pod.egress(),
            "POST",
            "/other/x",
            &[("content-type", "application/json")],
            &format!("{{\"k\":\"{APIM}\"}}"),
        ),
    ];
    for case in cases {
        let reply = send(&http, case).await;
        assert_eq!((reply.status.as_u16(), reply.error()), (403, "secret_in_request".to_owned()));
    }
    assert_eq!(pod.apim.seen().len(), before, "a request carrying a secret was sent");
    // A clean POST body still goes, whole.
    let reply =
        send(&http, request(pod.egress(), "POST", "/other/x", &[], "{\"date\":\"2025-02-02\"}"))
            .await;
    assert_eq!(reply.status, 200);
    assert_eq!(pod.apim.seen().last().unwrap().body, "{\"date\":\"2025-02-02\"}");
}

#[tokio::test]
async fn a_key_in_the_third_sse_event_is_redacted_and_the_first_two_pass_as_they_come() {
    let pod = pod("redact").await;
    let request = http::Request::get(format!("http://{}/sse", pod.app.ingress_addr))
        .header("x-api-key", CLIENT)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = tokio::spawn(async move { client::streaming().request(request).await });
    let events = pod.backend.next_stream().await;
    let mut body = response.await.unwrap().unwrap().into_body();
    for event in ["data: {\"n\":1}\n\n", "data: {\"n\":2}\n\n"] {
        events.send(Bytes::from_static(event.as_bytes())).await.unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), event.as_bytes(), "held back");
    }
    let third = format!("data: {{\"result\":\"{CLIENT}\"}}\n\n");
    let (a, b) = third.split_at(20);
    events.send(Bytes::from(a.to_owned())).await.unwrap();
    events.send(Bytes::from(b.to_owned())).await.unwrap();
    drop(events);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, &b"data: {\"result\":\"[REDACTED]\"}\n\n"[..]);
}

#[tokio::test]
async fn a_compressed_answer_cannot_be_checked_and_is_a_502() {
    let pod = pod("redact").await;
    let reply = send(
        &client::http1(),
        request(
            pod.app.ingress_addr,
            "GET",
            "/gzip",
            &[("x-api-key", CLIENT), ("accept-encoding", "gzip")],
            "",
        ),
    )
    .await;
    assert_eq!((reply.status.as_u16(), reply.error()), (502, "unscannable_response".to_owned()));
    assert!(pod.backend.seen().last().unwrap().headers.get("accept-encoding").is_none());
}
