//! In-process service tests of what keyward reads of MCP: per-client grants (calls refused
//! without reaching the backend, list answers filtered in JSON and in SSE as events arrive),
//! `Mcp-Method` / `Mcp-Name` agreeing with the body, and sessions bound to their client.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use keyward_tests::client::{self, request, send};
use serde_json::{json, Value};

mod common;
use common::{pod_with, ALPHA, BETA};

fn call(id: i64, tool: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool}})
        .to_string()
}

fn list(id: i64) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"}).to_string()
}

/// alpha may use the activity tools only; beta is unrestricted.
async fn granted() -> common::Pod {
    pod_with(|c| {
        let mut config = c;
        // The first client is alpha (see `common::config`).
        config = config.remove("ingress.clients");
        let mut alpha = keyward_tests::config::table([("id", "alpha"), ("secret", "alpha-key")]);
        alpha.insert("tools".into(), vec!["get_activity_*"].into());
        config.push("ingress.clients", alpha).client("beta", "beta-key")
    })
    .await
}

fn headers(key: &str) -> Vec<(&str, &str)> {
    vec![
        ("x-api-key", key),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ]
}

fn names(message: &Value) -> Vec<String> {
    message["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_call_outside_the_grants_is_answered_by_keyward_and_never_forwarded() {
    let pod = granted().await;
    let addr = pod.app.ingress_addr;
    let http = client::http1();
    let before = pod.backend.seen().len();
    let denied =
        send(&http, request(addr, "POST", "/mcp", &headers(ALPHA), &call(7, "get_sleep_by_date")))
            .await;
    assert_eq!(denied.status, 200);
    assert_eq!(denied.headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&denied.body).unwrap();
    assert_eq!(
        body,
        json!({"jsonrpc": "2.0", "id": 7,
        "error": {"code": -32602, "message": "tool not permitted for this client"}})
    );
    assert_eq!(pod.backend.seen().len(), before, "the denied call reached the backend");

    let allowed = send(
        &http,
        request(addr, "POST", "/mcp", &headers(ALPHA), &call(8, "get_activity_by_date")),
    )
    .await;
    assert_eq!(allowed.status, 200);
    let seen = pod.backend.seen();
    assert_eq!(seen.len(), before + 1);
    assert_eq!(seen.last().unwrap().body, call(8, "get_activity_by_date"));
    // An unrestricted client's call is forwarded as it came.
    let open =
        send(&http, request(addr, "POST", "/mcp", &headers(BETA), &call(9, "get_sleep_by_date")))
            .await;
    assert_eq!(open.status, 200);
    assert_eq!(pod.backend.seen().len(), before + 2);
    // Not JSON from a client with grants: a JSON-RPC parse error, nothing forwarded.
    let garbage =
        send(&http, request(addr, "POST", "/mcp", &headers(ALPHA), "{\"jsonrpc\":")).await;
    assert_eq!(garbage.status, 400);
    let body: Value = serde_json::from_slice(&garbage.body).unwrap();
    assert_eq!(body["error"]["code"], -32700);
    assert_eq!(pod.backend.seen().len(), before + 2);
}

#[tokio::test]
async fn a_json_tools_list_reaches_a_granted_client_filtered_and_others_whole() {
    let pod = granted().await;
    let http = client::http1();
    let addr = pod.app.ingress_addr;
    let reply = send(&http, request(addr, "POST", "/tools", &headers(ALPHA), &list(3))).await;
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(names(&body), ["get_activity_by_date", "get_activity_records"]);
    assert_eq!(body["result"]["nextCursor"], "page-2", "pagination still works");
    let reply = send(&http, request(addr, "POST", "/tools", &headers(BETA), &list(3))).await;
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(names(&body).len(), 3);
}

#[tokio::test]
async fn an_sse_tools_list_is_filtered_event_by_event_as_the_backend_writes() {
    let pod = granted().await;
    let request = http::Request::post(format!("http://{}/sse", pod.app.ingress_addr))
        .header("x-api-key", ALPHA)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::from(list(5))))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let response = tokio::spawn(async move { client.request(request).await });
    let events = pod.backend.next_stream().await;
    let progress =
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n";
    events.send(Bytes::from_static(progress.as_bytes())).await.unwrap();
    let mut body = response.await.unwrap().unwrap().into_body();
    // The first event arrives while the backend has not written the second.
    let first =
        tokio::time::timeout(Duration::from_secs(5), body.frame()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), progress.as_bytes());
    let answer =
        format!("event: message\ndata: {}\n\n", keyward_tests::backend::tools_list(&5.into()));
    let (a, b) = answer.split_at(answer.len() / 2);
    events.send(Bytes::from(a.to_owned())).await.unwrap();
    events.send(Bytes::from(b.to_owned())).await.unwrap();
    let second =
        tokio::time::timeout(Duration::from_secs(5), body.frame()).await.unwrap().unwrap().unwrap();
    let text = String::from_utf8(second.into_data().unwrap().to_vec()).unwrap();
    let data: Value =
        serde_json::from_str(text.strip_prefix("event: message\ndata: ").unwrap().trim_end())
            .unwrap();
    assert_eq!(names(&data), ["get_activity_by_date", "get_activity_records"]);
    // Once the list has come, later events pass as they are.
    events.send(Bytes::from_static(b"data: later\n\n")).await.unwrap();
    let third =
        tokio::time::timeout(Duration::from_secs(5), body.frame()).await.unwrap().unwrap().unwrap();
    assert_eq!(third.into_data().unwrap(), &b"data: later\n\n"[..]);
}

#[tokio::test]
async fn mcp_method_and_name_headers_must_agree_with_the_body() {
    let pod = granted().await;
    let http = client::http1();
    let addr = pod.app.ingress_addr;
    let before = pod.backend.seen().len();
    for key in [ALPHA, BETA] {
        let mut wrong = headers(key);
        wrong.push(("mcp-method", "tools/list"));
        let reply =
            send(&http, request(addr, "POST", "/mcp", &wrong, &call(1, "get_activity_by_date")))
                .await;
        assert_eq!(reply.status, 400, "{key}");
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["error"]["code"], -32020);
        let mut wrong_name = headers(key);
        wrong_name.extend([("mcp-method", "tools/call"), ("mcp-name", "get_activity_records")]);
        let reply = send(
            &http,
            request(addr, "POST", "/mcp", &wrong_name, &call(1, "get_activity_by_date")),
        )
        .await;
        assert_eq!(reply.status, 400);
    }
    assert_eq!(pod.backend.seen().len(), before);
    let mut right = headers(BETA);
    right.extend([("mcp-method", "tools/call"), ("mcp-name", "get_sleep_by_date")]);
    let reply =
        send(&http, request(addr, "POST", "/mcp", &right, &call(2, "get_sleep_by_date"))).await;
    assert_eq!(reply.status, 200);
    let seen = pod.backend.seen();
    assert_eq!(seen.last().unwrap().headers["mcp-method"], "tools/call");
}

#[tokio::test]
async fn a_session_is_its_client_s_and_the_backend_sees_its_own_id() {
    let pod = granted().await;
    let http = client::http1();
    let addr = pod.app.ingress_addr;
    let opened = send(&http, request(addr, "POST", "/session", &headers(BETA), &list(1))).await;
    let session = opened.headers["mcp-session-id"].to_str().unwrap().to_owned();
    let (id, mac) = session.rsplit_once('.').unwrap();
    assert_eq!(id, "backend-session-1");
    assert!(mac.len() >= 43, "{session}");
    let with = |key: &'static str, session: &str| {
        let mut h = headers(key);
        h.push(("mcp-session-id", session));
        request(addr, "POST", "/mcp", &h, &call(1, "get_activity_by_date"))
    };
    let before = pod.backend.seen().len();
    assert_eq!(send(&http, with(BETA, &session)).await.status, 200);
    assert_eq!(pod.backend.seen().last().unwrap().headers["mcp-session-id"], "backend-session-1");
    let replayed = send(&http, with(ALPHA, &session)).await;
    assert_eq!((replayed.status.as_u16(), replayed.error()), (404, "session_not_found".to_owned()));
    assert_eq!(send(&http, with(BETA, "backend-session-1")).await.status, 404, "the bare id");
    let mut forged = session.clone();
    forged.replace_range(..1, "x");
    assert_eq!(send(&http, with(BETA, &forged)).await.status, 404);
    let delete = {
        let h = [("x-api-key", ALPHA), ("mcp-session-id", session.as_str())];
        request(addr, "DELETE", "/mcp", &h, "")
    };
    assert_eq!(send(&http, delete).await.status, 404);
    assert_eq!(pod.backend.seen().len(), before + 1, "only the owner's request was forwarded");
}
