//! In-process service tests of the connection timeouts: no connection holds a slot for free,
//! and none of the timeouts ever cuts a request in flight.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::{open_stream, pod_with, ALPHA};
use keyward_tests::config::Builder;

/// Short header-read, unauthenticated and idle timeouts.
fn timeouts(config: Builder) -> Builder {
    config
        .set("ingress.header_read_timeout", "300ms")
        .set("ingress.unauthenticated_timeout", "500ms")
        .set("ingress.idle_timeout", "700ms")
}

/// How long until keyward closes `stream` (reading and discarding what it sends).
async fn closed_after(mut stream: TcpStream) -> Duration {
    let started = Instant::now();
    let mut sink = [0u8; 1024];
    let wait = async { while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {} };
    tokio::time::timeout(Duration::from_secs(5), wait).await.expect("never closed");
    started.elapsed()
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
    let pod = pod_with(timeouts).await;
    let stream = TcpStream::connect(pod.app.ingress_addr).await.unwrap();
    let held = closed_after(stream).await;
    assert!(held >= Duration::from_millis(250) && held < Duration::from_secs(2), "{held:?}");
}

#[tokio::test]
async fn an_h2_connection_that_never_authenticates_is_closed() {
    let pod = pod_with(timeouts).await;
    let stream = TcpStream::connect(pod.app.ingress_addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(100))
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let started = Instant::now();
    let driven = tokio::spawn(conn);
    // Requests that earn 401s, and pings answered, do not keep it open.
    for _ in 0..3 {
        let request = http::Request::get("http://keyward/mcp").body(Empty::<Bytes>::new()).unwrap();
        let status = sender.send_request(request).await.unwrap().status();
        assert_eq!(status, 401);
    }
    tokio::time::timeout(Duration::from_secs(5), driven).await.expect("never closed").ok();
    let held = started.elapsed();
    assert!(held >= Duration::from_millis(400) && held < Duration::from_secs(3), "{held:?}");
}

#[tokio::test]
async fn an_idle_authenticated_connection_is_closed_but_a_stream_in_flight_is_never_cut() {
    let pod = pod_with(timeouts).await;
    let (response, events) = open_stream(&pod, "data: 0\n\n").await;
    let mut body = response.into_body();

    let stream = TcpStream::connect(pod.app.ingress_addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    let driven = tokio::spawn(conn);
    let request = http::Request::get("/idle")
        .header("host", "keyward")
        .header("x-api-key", ALPHA)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    let idle_since = Instant::now();

    // The stream outlives every timeout, event by event.
    for n in 0..15 {
        let frame = tokio::time::timeout(Duration::from_secs(2), body.frame())
            .await
            .expect("the stream stalled")
            .expect("the stream was cut")
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), format!("data: {n}\n\n"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        events.send(Bytes::from(format!("data: {}\n\n", n + 1))).await.unwrap();
    }
    assert!(driven.is_finished(), "the idle connection is still open");
    assert!(idle_since.elapsed() > Duration::from_millis(1500));
}

#[tokio::test]
async fn a_client_that_sends_only_the_start_of_a_preface_is_closed_after_the_header_read_timeout() {
    let pod = pod_with(timeouts).await;
    let mut stream = TcpStream::connect(pod.app.ingress_addr).await.unwrap();
    stream.write_all(b"PRI * HTTP").await.unwrap();
    let held = closed_after(stream).await;
    assert!(held >= Duration::from_millis(250) && held < Duration::from_secs(2), "{held:?}");
}

#[tokio::test]
async fn requests_whose_first_bytes_come_apart_are_served_on_either_protocol() {
    let pod = pod_with(timeouts).await;
    // An HTTP/1.1 request whose first byte could still begin an h2 preface.
    let mut stream = TcpStream::connect(pod.app.ingress_addr).await.unwrap();
    stream.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let rest = format!(
        "OST /split HTTP/1.1\r\nHost: keyward\r\nX-Api-Key: {ALPHA}\r\nContent-Length: 2\r\n\
         Connection: close\r\n\r\n{{}}"
    );
    stream.write_all(rest.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&reply));
    // An h2 preface in two pieces, then an empty SETTINGS frame: keyward's SETTINGS comes back.
    let mut stream = TcpStream::connect(pod.app.ingress_addr).await.unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(b"\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head[3], 0x04, "a SETTINGS frame: {head:?}");
}
