//! In-process service tests of what reaches keyward before a key is checked: the client's
//! address behind a front proxy, CORS preflights, OAuth discovery without OAuth, and request
//! framing (raw sockets, so that every byte is the test's).

use std::time::Duration;

use keyward_tests::client::{self, request, send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::{pod, pod_with, ALPHA};
use keyward_tests::config::Builder;

fn with_forwarded_for(key: &str, forwarded_for: &str) -> Vec<(&'static str, String)> {
    vec![("x-api-key", key.to_owned()), ("x-forwarded-for", forwarded_for.to_owned())]
}

/// A limiter allowing `burst` failures, then one a minute.
fn limited(config: Builder, burst: i64) -> Builder {
    config.set("ingress.auth_failure_burst", burst).set("ingress.auth_failures_per_minute", 1)
}

async fn status_of(addr: std::net::SocketAddr, headers: &[(&'static str, String)]) -> u16 {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    send(&client::http1(), request(addr, "GET", "/mcp", &headers, "")).await.status.as_u16()
}

#[tokio::test]
async fn behind_a_trusted_proxy_one_client_s_failures_do_not_lock_out_another() {
    let pod = pod_with(|c| limited(c, 3).set("ingress.trusted_proxies", vec!["127.0.0.0/8"])).await;
    let addr = pod.app.ingress_addr;
    for _ in 0..3 {
        assert_eq!(status_of(addr, &with_forwarded_for("wrong", "198.51.100.7")).await, 401);
    }
    assert_eq!(status_of(addr, &with_forwarded_for(ALPHA, "198.51.100.7")).await, 429);
    // Another client behind the same front proxy, and one whose chain has a forged first entry.
    assert_eq!(status_of(addr, &with_forwarded_for(ALPHA, "198.51.100.8")).await, 200);
    let forged = with_forwarded_for(ALPHA, "198.51.100.7, 198.51.100.9");
    assert_eq!(status_of(addr, &forged).await, 200, "the rightmost untrusted entry counts");
    let seen = pod.backend.seen();
    let last = seen.last().expect("forwarded");
    assert!(last.headers.get("x-forwarded-for").is_none(), "the client's chain was forwarded");
}

#[tokio::test]
async fn from_an_untrusted_peer_a_forged_forwarded_for_changes_nothing() {
    let pod = pod_with(|c| limited(c, 3)).await;
    let addr = pod.app.ingress_addr;
    for n in 0..3 {
        let forged = with_forwarded_for("wrong", &format!("198.51.100.{n}"));
        assert_eq!(status_of(addr, &forged).await, 401);
    }
    assert_eq!(status_of(addr, &with_forwarded_for(ALPHA, "203.0.113.1")).await, 429);
    let forwarded = vec![("x-api-key", ALPHA.to_owned()), ("forwarded", "for=203.0.113.2".into())];
    assert_eq!(status_of(addr, &forwarded).await, 429);
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_without_a_key() {
    let pod = pod().await;
    let before = pod.backend.seen().len();
    let http = client::http1();
    let addr = pod.app.ingress_addr;
    let preflight = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "x-api-key, content-type, mcp-session-id"),
    ];
    let reply = send(&http, request(addr, "OPTIONS", "/mcp", &preflight, "")).await;
    assert_eq!(reply.status, 204);
    assert_eq!(reply.headers["access-control-allow-origin"], "https://app.example");
    let allowed = reply.headers["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    for name in
        ["x-api-key", "content-type", "mcp-session-id", "mcp-protocol-version", "last-event-id"]
    {
        assert!(allowed.contains(name), "{name} not allowed: {allowed}");
    }
    let exposed = reply.headers["access-control-expose-headers"].to_str().unwrap().to_lowercase();
    assert!(exposed.contains("mcp-session-id") && exposed.contains("www-authenticate"));

    let evil = [("origin", "https://evil.example"), ("access-control-request-method", "POST")];
    let reply = send(&http, request(addr, "OPTIONS", "/mcp", &evil, "")).await;
    assert_eq!(reply.status, 403);
    assert!(reply.headers.get("access-control-allow-origin").is_none());
    assert_eq!(pod.backend.seen().len(), before, "a preflight was forwarded");

    // Answers to an allowed origin, refusals included, can be read by it.
    let refused = send(&http, request(addr, "POST", "/mcp", &[preflight[0]], "{}")).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.headers["access-control-allow-origin"], "https://app.example");
    let ok = [("x-api-key", ALPHA), preflight[0]];
    let served = send(&http, request(addr, "POST", "/mcp", &ok, "{}")).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.headers["access-control-allow-origin"], "https://app.example");
}

#[tokio::test]
async fn oauth_discovery_without_oauth_is_a_404_that_costs_no_failed_key_check() {
    let pod = pod_with(|c| limited(c, 2)).await;
    let http = client::http1();
    let addr = pod.app.ingress_addr;
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server/mcp",
    ] {
        for _ in 0..2 {
            let reply = send(&http, request(addr, "GET", path, &[], "")).await;
            assert_eq!(reply.status, 404, "{path}");
            assert_eq!(reply.error(), "not_found");
        }
    }
    // Not discovery: refused as ever, and still within the failure burst.
    let register = send(&http, request(addr, "POST", "/register", &[], "{}")).await;
    assert_eq!(register.status, 401);
    let lookalike =
        send(&http, request(addr, "GET", "/.well-known/openid-configurationx", &[], ""));
    assert_eq!(lookalike.await.status, 401);
    assert!(pod.backend.seen().is_empty() || pod.backend.seen().iter().all(|s| s.uri == "/"));
}

/// Writes `raw` on a fresh connection and reads the answer until keyward closes it (or 3 s).
async fn raw_exchange(addr: std::net::SocketAddr, raw: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Every framing trick a smuggler tries: the backend sees one well-framed request with the
/// body the client meant, or nothing; never the client's framing.
#[tokio::test]
async fn the_backend_never_sees_the_client_s_framing() {
    let pod = pod().await;
    let addr = pod.app.ingress_addr;
    let cases: [(&str, &str, &[u16]); 9] = [
        (
            "transfer-encoding: identity\r\ntransfer-encoding: chunked",
            "5\r\nhello\r\n0\r\n\r\n",
            &[501],
        ),
        ("transfer-encoding: chunked, identity", "5\r\nhello\r\n0\r\n\r\n", &[400]),
        ("transfer-encoding: CHUNKED", "5\r\nhello\r\n0\r\n\r\n", &[200]),
        ("transfer-encoding:\tchunked", "5\r\nhello\r\n0\r\n\r\n", &[200]),
        ("content-length: +5", "hello", &[400]),
        ("content-length: 05", "hello", &[200]),
        ("content-length: 5, 5", "hello", &[200, 400]),
        ("content-length: 5\r\ncontent-length: 6", "hello", &[400]),
        ("content-length: 5\r\ntransfer-encoding: chunked", "5\r\nhello\r\n0\r\n\r\n", &[200, 400]),
    ];
    for (framing, body, statuses) in cases {
        let before = pod.backend.seen().len();
        let raw = format!(
            "POST /framed HTTP/1.1\r\nhost: keyward\r\nconnection: close\r\nx-api-key: {ALPHA}\r\n\
             {framing}\r\n\r\n{body}"
        );
        let answer = raw_exchange(addr, &raw).await;
        let status: u16 = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        assert!(statuses.contains(&status), "{framing:?}: {status}\n{answer}");
        let framed = pod.backend.seen().split_off(before);
        assert!(framed.len() <= 1, "{framing:?}: {} requests", framed.len());
        if status == 200 {
            let got = framed.first().unwrap_or_else(|| panic!("{framing:?}: nothing forwarded"));
            assert_eq!(got.body, "hello", "{framing:?}");
            let te: Vec<_> = got.headers.get_all("transfer-encoding").iter().collect();
            let cl: Vec<_> = got.headers.get_all("content-length").iter().collect();
            assert!(te.len() + cl.len() <= 1, "{framing:?}: te {te:?} cl {cl:?}");
            assert!(te.iter().all(|v| *v == "chunked"), "{framing:?}: te {te:?}");
            assert!(cl.iter().all(|v| *v == "5"), "{framing:?}: cl {cl:?}");
        } else {
            assert!(framed.is_empty(), "{framing:?}: a refused request was forwarded");
        }
    }
}
