//! In-process tests of the egress path: the backend's calls to allow-listed upstreams get the
//! route's credential over TLS (a CA made here, passed as the extra CA), and nothing else does.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use keyward::app::App;
use keyward_tests::backend::TestBackend;
use keyward_tests::client::{self, request, send, Reply};
use keyward_tests::config::{table, Builder};
use keyward_tests::dir::TempDir;
use keyward_tests::process::eventually;
use keyward_tests::tls::TestCa;

mod common;
use common::parse;

const CLIENT: &str = "ingress-client-key-0123456789";
const APIM: &str = "apim-subscription-key-1a2b3c4d5e6f";
const OTHER: &str = "other-upstream-key-9f8e7d6c5b4a";

struct Pod {
    app: App,
    apim: TestBackend,
    other: TestBackend,
    secrets: TempDir,
    _ingress_backend: TestBackend,
}

impl Pod {
    fn egress(&self) -> SocketAddr {
        self.app.egress_addr.expect("egress configured")
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        send(&client::http1(), request(self.egress(), "GET", path, headers, "")).await
    }
}

async fn pod() -> Pod {
    let ca = TestCa::new("egress test CA");
    let apim = TestBackend::start_tls(ca.issue(&["localhost"]).server_config()).await;
    let other = TestBackend::start().await;
    let ingress_backend = TestBackend::start().await;
    let secrets = TempDir::new("egress");
    secrets.write_secret("client", CLIENT);
    secrets.write_secret("apim-subscription-key", APIM);
    secrets.write_secret("other-key", OTHER);
    let ca_file = secrets.write("ca.pem", &ca.pem());
    let mut apim_route = table([
        ("prefix", "/health/"),
        ("upstream", &format!("https://localhost:{}/biotrackr/", apim.addr.port())),
        ("secret", "apim-subscription-key"),
        ("timeout", "300ms"),
    ]);
    apim_route.insert("headers".into(), table([("X-Static-Tenant", "biotrackr")]).into());
    let other_route = table([
        ("prefix", "/other/"),
        ("upstream", &format!("http://{}/", other.addr)),
        ("header", "X-Functions-Key"),
        ("secret", "other-key"),
    ]);
    let config = parse(
        &Builder::files(secrets.path())
            .backend(ingress_backend.addr)
            .client("c", "client")
            .route_with(apim_route)
            .route_with(other_route)
            .set("egress.extra_ca", ca_file.to_str().unwrap())
            .set("secrets.rotation_overlap", "1h"),
    );
    let app = App::start(config, Default::default()).await.expect("start");
    let pod = Pod { app, apim, other, secrets, _ingress_backend: ingress_backend };
    let up = eventually(Duration::from_secs(5), || async {
        pod.get("/other/ping", &[]).await.status == 200
    })
    .await;
    assert!(up, "egress never became usable");
    pod
}

#[tokio::test]
async fn the_upstream_gets_its_key_and_no_other_credential() {
    let pod = pod().await;
    let headers = [
        ("ocp-apim-subscription-key", "set-by-the-backend"),
        ("authorization", "Bearer backend-token"),
        ("x-api-key", "backend-key"),
        ("x-keyward-client", "c"),
        ("connection", "ocp-apim-subscription-key"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ];
    let reply = pod.get("/health/activity/2025-02-02?pageNumber=2", &headers).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = pod.apim.seen();
    assert_eq!(seen.len(), 1);
    let got = &seen[0];
    assert_eq!(got.uri, "/biotrackr/activity/2025-02-02?pageNumber=2");
    assert_eq!(got.version, "HTTP/2.0", "h2 negotiated by ALPN");
    let keys: Vec<_> = got.headers.get_all("ocp-apim-subscription-key").iter().collect();
    assert_eq!(keys, [APIM], "exactly the injected key, despite Connection naming it");
    assert!(got.headers.get("authorization").is_none());
    assert!(got.headers.get("x-api-key").is_none());
    assert!(got.headers.get("x-keyward-client").is_none());
    assert_eq!(got.headers["x-static-tenant"], "biotrackr");
    assert_eq!(got.headers["traceparent"], headers[5].1);
    assert!(!format!("{:?}", pod.other.seen()).contains(APIM));
}

#[tokio::test]
async fn each_route_gets_only_its_own_key() {
    let pod = pod().await;
    assert_eq!(pod.get("/other/x", &[]).await.status, 200);
    let seen = pod.other.seen();
    let got = seen.iter().find(|s| s.uri == "/x").expect("reached the other upstream");
    assert_eq!(got.headers["x-functions-key"], OTHER);
    assert!(got.headers.get("ocp-apim-subscription-key").is_none());
    assert!(!format!("{seen:?}").contains(APIM));
}

#[tokio::test]
async fn unknown_and_escaping_paths_send_nothing() {
    let pod = pod().await;
    let (apim_before, other_before) = (pod.apim.connections(), pod.other.seen().len());
    for path in [
        "/",
        "/healthz",
        "/health",
        "/admin/x",
        "/health/../admin",
        "/health/%2e%2e/admin",
        "/health/a%2Fb",
    ] {
        let reply = pod.get(path, &[]).await;
        assert!(matches!(reply.status.as_u16(), 400 | 404), "{path}: {}", reply.status);
        assert!(!reply.text().contains("localhost"), "no upstream detail");
    }
    assert_eq!(pod.get("/nope", &[]).await.error(), "not_found");
    assert_eq!(pod.apim.connections(), apim_before, "a connection was made");
    assert_eq!(pod.other.seen().len(), other_before);
}

fn raw(addr: SocketAddr, request: &str) -> String {
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    socket.write_all(request.as_bytes()).unwrap();
    let mut response = vec![0; 1024];
    let n = socket.read(&mut response).unwrap();
    String::from_utf8_lossy(&response[..n]).into_owned()
}

#[tokio::test]
async fn forward_proxy_requests_are_refused() {
    let pod = pod().await;
    let egress = pod.egress();
    let before = pod.apim.connections();
    let absolute = tokio::task::spawn_blocking(move || {
        raw(
            egress,
            "GET http://localhost/health/activity/2025-02-02 HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )
    });
    assert!(absolute.await.unwrap().starts_with("HTTP/1.1 400"));
    let connect = tokio::task::spawn_blocking(move || {
        raw(egress, "CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n")
    });
    assert!(connect.await.unwrap().starts_with("HTTP/1.1 405"));
    assert_eq!(pod.apim.connections(), before);
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let pod = pod().await;
    let reply = pod.get("/health/redirect", &[]).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.headers["location"], "https://elsewhere.example/steal");
    assert_eq!(pod.apim.seen().len(), 1);
}

#[tokio::test]
async fn a_slow_upstream_gives_504_within_the_route_timeout() {
    let pod = pod().await;
    let started = std::time::Instant::now();
    let reply = pod.get("/health/slow", &[]).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(reply.error(), "upstream_timeout");
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
}

#[tokio::test]
async fn an_unreachable_upstream_gives_502_without_detail() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let secrets = TempDir::new("egress-dead");
    secrets.write_secret("client", CLIENT);
    secrets.write_secret("k", OTHER);
    let config = parse(&Builder::files(secrets.path()).client("c", "client").route(
        "/dead/",
        &format!("http://127.0.0.1:{port}/"),
        "k",
    ));
    let app = App::start(config, Default::default()).await.unwrap();
    let egress = app.egress_addr.unwrap();
    let mut reply = send(&client::http1(), request(egress, "GET", "/dead/x", &[], "")).await;
    for _ in 0..100 {
        if reply.status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        reply = send(&client::http1(), request(egress, "GET", "/dead/x", &[], "")).await;
    }
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.error(), "upstream_unavailable");
}

#[tokio::test]
async fn a_missing_route_secret_fails_closed() {
    let pod = pod().await;
    std::fs::remove_file(pod.secrets.path().join("other-key")).unwrap();
    let refused = eventually(Duration::from_secs(5), || async {
        pod.get("/other/probe", &[]).await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(refused);
    let reply = pod.get("/other/after", &[]).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(pod.other.seen().iter().all(|s| s.uri != "/after"), "sent without a key");
}

#[tokio::test]
async fn rotation_under_load_switches_keys_without_a_failed_request() {
    let pod = pod().await;
    let egress = pod.egress();
    let load = tokio::spawn(async move {
        let http = client::http1();
        let mut failures = 0;
        for _ in 0..150 {
            if send(&http, request(egress, "GET", "/health/sleep/2025-01-01", &[], "")).await.status
                != 200
            {
                failures += 1;
            }
        }
        failures
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let rotated = "apim-rotated-key-77aa88bb99cc";
    pod.secrets.write_secret("apim-subscription-key", rotated);
    assert_eq!(load.await.unwrap(), 0, "a request failed during rotation");
    let switched = eventually(Duration::from_secs(5), || async {
        pod.get("/health/probe", &[]).await;
        let seen = pod.apim.seen();
        seen.last().is_some_and(|s| s.headers["ocp-apim-subscription-key"] == rotated)
    })
    .await;
    assert!(switched, "the rotated key never reached the upstream");
    // Once switched, the old key never comes back.
    pod.get("/health/after", &[]).await;
    let last = pod.apim.seen().pop().unwrap();
    assert_eq!(last.headers["ocp-apim-subscription-key"], rotated);
}
