//! In-process service tests: the whole ingress stack (listener, auth, header hygiene,
//! forwarding) on loopback in front of a recording, streaming test backend.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use keyward::app::App;
use keyward_tests::backend::TestBackend;
use keyward_tests::client::{self, get_with_key, request, send};
use keyward_tests::dir::TempDir;
use keyward_tests::process::eventually;

mod common;
use common::{config, open_stream, parse, pod, pod_with, ALPHA, BETA};

fn unauthorized(reply: &client::Reply) {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.headers["www-authenticate"], "ApiKey header=\"X-Api-Key\"");
    assert_eq!(reply.error(), "unauthorized");
    assert!(reply.text().contains("\"message\":\"a valid X-Api-Key header is required\""));
}

#[tokio::test]
async fn a_good_key_reaches_the_backend_without_any_credential() {
    let pod = pod().await;
    let before = pod.backend.seen().len();
    let headers = [
        ("x-api-key", BETA),
        ("authorization", "Bearer client-token"),
        ("ocp-apim-subscription-key", "client-apim"),
        ("x-keyward-client", "admin"),
        ("mcp-protocol-version", "2025-06-18"),
        ("mcp-param-date", "2025-02-02"),
        ("last-event-id", "42"),
        ("content-type", "application/json"),
    ];
    let reply =
        send(&client::http1(), request(pod.app.ingress_addr, "POST", "/mcp?x=1", &headers, "{}"))
            .await;
    assert_eq!(reply.status, 200);
    assert!(reply.headers.get("x-backend-private").is_none(), "hop-by-hop response header");
    let seen = &pod.backend.seen()[before..];
    assert_eq!(seen.len(), 1);
    let got = &seen[0];
    assert_eq!(got.uri, "/mcp?x=1");
    assert_eq!(got.body, "{}");
    assert!(got.headers.get("x-api-key").is_none());
    assert!(got.headers.get("authorization").is_none());
    assert!(got.headers.get("ocp-apim-subscription-key").is_none());
    let ids: Vec<_> = got.headers.get_all("x-keyward-client").iter().collect();
    assert_eq!(ids, ["beta"]);
    assert_eq!(got.headers["host"], pod.backend.addr.to_string());
    for (name, value) in &headers[4..] {
        assert_eq!(got.headers[*name], *value, "{name}");
    }
    let dump = format!("{:?}", pod.backend.seen());
    assert!(!dump.contains(ALPHA) && !dump.contains(BETA), "a key reached the backend");
}

#[tokio::test]
async fn near_miss_keys_and_bad_shapes_get_the_same_401() {
    let pod = pod().await;
    let before = pod.backend.seen().len();
    let addr = pod.app.ingress_addr;
    let one_off = ALPHA.replace('f', "e");
    let longer = format!("{ALPHA}0");
    for key in [one_off.as_str(), &ALPHA[..ALPHA.len() - 1], longer.as_str(), "wrong"] {
        unauthorized(&get_with_key(addr, "/", key).await);
    }
    let http = client::http1();
    unauthorized(&send(&http, request(addr, "GET", "/", &[], "")).await);
    let twice = [("x-api-key", ALPHA), ("x-api-key", ALPHA)];
    unauthorized(&send(&http, request(addr, "GET", "/", &twice, "")).await);
    let huge = "k".repeat(4096);
    unauthorized(&get_with_key(addr, "/", &huge).await);
    unauthorized(&get_with_key(addr, &format!("/mcp?api_key={ALPHA}"), ALPHA).await);
    unauthorized(&get_with_key(addr, "/mcp?x-api-key=1", ALPHA).await);
    // A Connection header naming the key removes it before authentication: still refused.
    let hidden = [("connection", "x-api-key"), ("x-api-key", ALPHA)];
    unauthorized(&send(&http, request(addr, "GET", "/", &hidden, "")).await);
    assert_eq!(pod.backend.seen().len(), before, "nothing refused reached the backend");
}

#[tokio::test]
async fn a_connection_header_cannot_spoof_or_drop_the_identity() {
    let pod = pod().await;
    let headers = [
        ("x-api-key", ALPHA),
        ("connection", "x-keyward-client, keep-alive"),
        ("x-keyward-client", "beta"),
    ];
    let reply =
        send(&client::http1(), request(pod.app.ingress_addr, "GET", "/spoof", &headers, "")).await;
    assert_eq!(reply.status, 200);
    let got = pod.backend.seen().into_iter().find(|s| s.uri == "/spoof").unwrap();
    let ids: Vec<_> = got.headers.get_all("x-keyward-client").iter().collect();
    assert_eq!(ids, ["alpha"]);
    assert!(got.headers.get("connection").is_none());
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let pod = pod().await;
    let reply = send(
        &client::h2c(),
        request(pod.app.ingress_addr, "GET", "/h2", &[("x-api-key", ALPHA)], ""),
    )
    .await;
    assert_eq!(reply.status, 200);
    let got = pod.backend.seen().into_iter().find(|s| s.uri == "/h2").unwrap();
    assert_eq!(got.headers["x-keyward-client"], "alpha");
    assert!(got.headers.get("x-api-key").is_none());
}

#[tokio::test]
async fn origins_outside_the_list_are_forbidden() {
    let pod = pod().await;
    let http = client::http1();
    let addr = pod.app.ingress_addr;
    let ok = [("x-api-key", ALPHA), ("origin", "https://app.example")];
    assert_eq!(send(&http, request(addr, "GET", "/", &ok, "")).await.status, 200);
    let bad = [("x-api-key", ALPHA), ("origin", "https://evil.example")];
    let reply = send(&http, request(addr, "GET", "/", &bad, "")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.error(), "forbidden_origin");
}

#[tokio::test]
async fn sse_events_arrive_one_by_one_while_the_backend_writes() {
    let pod = pod().await;
    let (response, events) = open_stream(&pod, "data: one\n\n").await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    for event in ["one", "two", "three"] {
        if event != "one" {
            events.send(Bytes::from(format!("data: {event}\n\n"))).await.unwrap();
        }
        // The next frame arrives while the backend still holds the stream open.
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("event not buffered")
            .expect("frame")
            .expect("ok frame");
        assert_eq!(frame.into_data().unwrap(), format!("data: {event}\n\n"));
    }
}

#[tokio::test]
async fn a_client_disconnect_reaches_the_backend() {
    let pod = pod().await;
    let (response, events) = open_stream(&pod, "data: first\n\n").await;
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    tokio::time::timeout(Duration::from_secs(5), events.closed())
        .await
        .expect("the backend's stream was not cancelled");
}

#[tokio::test]
async fn oversize_bodies_and_headers_are_refused() {
    let pod =
        pod_with(|c| c.set("ingress.max_body_bytes", 1024).set("ingress.max_header_bytes", 2048))
            .await;
    let addr = pod.app.ingress_addr;
    let http = client::http1();
    let big = "x".repeat(2000);
    let reply = send(&http, request(addr, "POST", "/", &[("x-api-key", ALPHA)], &big)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.error(), "body_too_large");
    let long = "v".repeat(3000);
    let reply =
        send(&http, request(addr, "GET", "/", &[("x-api-key", ALPHA), ("x-long", &long)], ""))
            .await;
    assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(!reply.text().contains(&long));
}

#[tokio::test]
async fn a_chunked_body_over_the_cap_is_refused() {
    let pod = pod_with(|c| c.set("ingress.max_body_bytes", 1024)).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let body = keyward_tests::backend::ChannelBody::new(rx);
    let request = http::Request::post(format!("http://{}/upload", pod.app.ingress_addr))
        .header("x-api-key", ALPHA)
        .body(body)
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = tokio::spawn(async move { client.request(request).await });
    for _ in 0..3 {
        if tx.send(Bytes::from(vec![b'x'; 600])).await.is_err() {
            break;
        }
    }
    drop(tx);
    let response = response.await.unwrap().expect("a response");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn backend_faults_give_502_and_504() {
    let pod = pod().await;
    let slow = get_with_key(pod.app.ingress_addr, "/slow", ALPHA).await;
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(slow.error(), "upstream_timeout");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let secrets = TempDir::new("dead");
    secrets.write_secret("alpha-key", ALPHA);
    secrets.write_secret("beta-key", BETA);
    let config = parse(&config(&pod.backend, &secrets).backend(dead));
    let app = App::start(config, Default::default()).await.unwrap();
    let mut reply = get_with_key(app.ingress_addr, "/", ALPHA).await;
    for _ in 0..100 {
        if reply.status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        reply = get_with_key(app.ingress_addr, "/", ALPHA).await;
    }
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.error(), "upstream_unavailable");
}

#[tokio::test]
async fn repeated_failures_from_one_peer_get_429() {
    let pod = pod_with(|c| {
        c.set("ingress.auth_failure_burst", 3).set("ingress.auth_failures_per_minute", 1)
    })
    .await;
    let addr = pod.app.ingress_addr;
    for _ in 0..3 {
        assert_eq!(get_with_key(addr, "/", "wrong").await.status, 401);
    }
    let limited = get_with_key(addr, "/", "wrong").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
}

#[tokio::test]
async fn a_missing_secret_keeps_keyward_unready_and_closed() {
    let backend = TestBackend::start().await;
    let secrets = TempDir::new("missing");
    secrets.write("beta-key", "");
    let app = App::start(parse(&config(&backend, &secrets)), Default::default()).await.unwrap();
    let http = client::http1();
    let ready = |app: &App| request(app.admin_addr, "GET", "/readyz", &[], "");
    let reply = send(&http, ready(&app)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.text().contains("alpha-key"), "{}", reply.text());
    let refused = get_with_key(app.ingress_addr, "/", ALPHA).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(backend.seen().is_empty());

    secrets.write_secret("alpha-key", ALPHA);
    secrets.write_secret("beta-key", BETA);
    assert!(
        eventually(Duration::from_secs(5), || async {
            send(&http, ready(&app)).await.status == 200
        })
        .await
    );
    assert_eq!(get_with_key(app.ingress_addr, "/", ALPHA).await.status, 200);
}

#[tokio::test]
async fn rotating_a_file_secret_under_load_fails_no_request() {
    let pod = pod().await;
    let addr = pod.app.ingress_addr;
    let rotated = "alpha-rotated-0123456789abcdef";
    let load = tokio::spawn(async move {
        let mut statuses = Vec::new();
        for _ in 0..200 {
            statuses.push(get_with_key(addr, "/", ALPHA).await.status);
        }
        statuses
    });
    pod.secrets.write_secret("alpha-key", rotated);
    assert!(
        eventually(Duration::from_secs(5), || async {
            get_with_key(addr, "/", rotated).await.status == 200
        })
        .await,
        "the new key was never accepted"
    );
    let statuses = load.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "a request failed during rotation");
    // The old key stays accepted for the overlap window.
    assert_eq!(get_with_key(addr, "/", ALPHA).await.status, 200);
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let pod = pod().await;
    let addr = pod.app.ingress_addr;
    let in_flight = tokio::spawn(async move {
        let request = request(addr, "GET", "/sse", &[("x-api-key", ALPHA)], "");
        client::http1().request(request).await
    });
    let events = pod.backend.next_stream().await;
    pod.app.shutdown();
    events.send(Bytes::from_static(b"data: late\n\n")).await.unwrap();
    drop(events);
    let reply = client::collect(in_flight.await.unwrap().expect("in-flight answered")).await;
    assert_eq!(reply.body, "data: late\n\n");
    tokio::time::timeout(Duration::from_secs(5), pod.app.wait()).await.expect("drained");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pod = pod_with(|c| c.set("ingress.max_connections", 2)).await;
    let addr = pod.app.ingress_addr;
    let hello = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Api-Key: {ALPHA}\r\n\r\n");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket.write_all(hello.as_bytes()).await.unwrap();
        let mut buf = [0; 512];
        let n = socket.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(socket);
    }
    // The third connection is accepted by the kernel but not served while two are open.
    let third = tokio::spawn(async move { get_with_key(addr, "/", ALPHA).await.status });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "a third connection was served beyond the cap");
    drop(held.pop());
    let status =
        tokio::time::timeout(Duration::from_secs(5), third).await.expect("served").unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn backend_connections_are_kept_alive_and_reused() {
    let pod = pod_with(|c| c.set("ingress.workers", 1)).await;
    let client = client::http1();
    let opened = pod.backend.connections();
    for _ in 0..20 {
        let reply =
            send(&client, request(pod.app.ingress_addr, "GET", "/", &[("x-api-key", ALPHA)], ""))
                .await;
        assert_eq!(reply.status, 200);
    }
    // Sized and chunked (streamed) responses both hand their connection back when read through.
    let (response, events) = open_stream(&pod, "data: last\n\n").await;
    drop(events);
    let reply = client::collect(response).await;
    assert_eq!(reply.body, "data: last\n\n");
    let reply = get_with_key(pod.app.ingress_addr, "/", ALPHA).await;
    assert_eq!(reply.status, 200);
    assert!(pod.backend.connections() - opened <= 1, "a backend connection per request");
}

#[tokio::test]
async fn a_busy_stream_keeps_its_backend_connection_to_itself() {
    let pod = pod_with(|c| c.set("ingress.workers", 1)).await;
    let (response, events) = open_stream(&pod, "data: open\n\n").await;
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    // While the stream is open, other requests are answered on other connections.
    for _ in 0..5 {
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            get_with_key(pod.app.ingress_addr, "/", ALPHA),
        )
        .await
        .expect("a request waited for the busy stream");
        assert_eq!(reply.status, 200);
    }
    events.send(Bytes::from_static(b"data: still\n\n")).await.unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "data: still\n\n");
}

#[tokio::test]
async fn a_backend_that_closes_every_connection_costs_no_request() {
    let pod = pod_with(|c| c.set("ingress.workers", 1)).await;
    let client = client::http1();
    let opened = pod.backend.connections();
    for _ in 0..10 {
        let headers = [("x-api-key", ALPHA)];
        let reply =
            send(&client, request(pod.app.ingress_addr, "GET", "/close", &headers, "")).await;
        assert_eq!(reply.status, 200);
        assert!(reply.headers.get("connection").is_none(), "hop-by-hop header passed back");
    }
    // The first may reuse the connection the start-up check left idle; each later one needs a
    // new connection, since the one before was closed.
    assert!(pod.backend.connections() - opened >= 9, "a closed connection was reused");
}

#[tokio::test]
async fn no_other_socket_can_join_the_ingress_port() {
    // Containers of a pod share its network namespace (and may share a uid): a socket that
    // could join keyward's port with SO_REUSEPORT would receive a share of the clients.
    let pod = pod_with(|c| c.set("ingress.workers", 2)).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.set_reuseport(true).unwrap();
    let err = socket.bind(pod.app.ingress_addr).expect_err("joined keyward's listening port");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    // Both workers serve: more connections than workers, each answered.
    let replies =
        futures::future::join_all((0..8).map(|_| get_with_key(pod.app.ingress_addr, "/", ALPHA)))
            .await;
    assert!(replies.iter().all(|reply| reply.status == 200));
}
