//! The backend in-process on 127.0.0.1:0, driven with hand-built JSON-RPC over HTTP POST,
//! against the health-API stand-in (the same module the `health-api` binary runs).
//!
//! A small in-test "egress" sits between them, as keyward's does: it maps `/health/` to the
//! stand-in's `/biotrackr/` and adds the subscription key. A second backend points straight at
//! the stand-in to show that it sends no credential of its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::health_api::HealthApi;
use crate::server;

#[allow(dead_code)] // the binary uses parts of the stand-in this test does not
#[path = "../../tests/src/bin/health_api/mod.rs"]
mod stand_in;

const KEY: &str = "stand-in-subscription-key";
const CLIENT_ID: &str = "e2e-client";
const PROTOCOL: &str = "2025-06-18";
const SESSION_HEADER: &str = "mcp-session-id";

/// A scratch directory, removed on drop.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("mcp-backend-e2e-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Everything the test started, stopped in `stop`.
#[derive(Debug)]
struct Rig {
    _scratch: Scratch,
    record: PathBuf,
    backend: SocketAddr,
    keyless_backend: SocketAddr,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Rig {
    async fn start() -> Self {
        Self::start_with(&server::McpOptions::default()).await
    }

    /// Both backends with `options` (e.g. stateful).
    async fn start_with(options: &server::McpOptions) -> Self {
        let scratch = Scratch::new();
        let key_file = scratch.0.join("key");
        std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
        let record = scratch.0.join("record.jsonl");
        let api = Arc::new(
            stand_in::HealthApi::new(
                key_file,
                "/biotrackr/",
                Some(record.clone()),
                stand_in::leak::Leaks::new(Default::default(), None).unwrap(),
            )
            .unwrap(),
        );
        let mut tasks = Vec::new();

        // The stand-in as the internet would see it.
        let (direct, direct_addr) = bind().await;
        let handler_api = Arc::clone(&api);
        tasks.push(tokio::spawn(stand_in::serve(direct, move |request| {
            let api = Arc::clone(&handler_api);
            async move { api.handle(request).await }
        })));

        // The egress stand-in: route `/health/` to `/biotrackr/` and add the key.
        let (egress, egress_addr) = bind().await;
        tasks.push(tokio::spawn(stand_in::serve(egress, move |mut request| {
            let api = Arc::clone(&api);
            async move {
                let path = request.uri().path_and_query().map_or("", |p| p.as_str());
                let rewritten = match path.strip_prefix("/health/") {
                    Some(rest) => format!("/biotrackr/{rest}"),
                    None => "/not-routed".to_owned(),
                };
                *request.uri_mut() = rewritten.parse().unwrap();
                request
                    .headers_mut()
                    .insert(stand_in::SUBSCRIPTION_KEY_HEADER, http::HeaderValue::from_static(KEY));
                api.handle(request).await
            }
        })));

        let mut stops = Vec::new();
        let mut start_backend = |base: String| {
            let api = HealthApi::new(&base).unwrap();
            let service = server::mcp_service(api, options);
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            async move {
                let (listener, addr) = bind().await;
                let task = tokio::spawn(server::serve(listener, service, async {
                    let _ = stopped.await;
                }));
                (addr, task)
            }
        };
        let (backend, task) = start_backend(format!("http://{egress_addr}/health/")).await;
        tasks.push(task);
        let (keyless_backend, task) =
            start_backend(format!("http://{direct_addr}/biotrackr/")).await;
        tasks.push(task);

        Self { _scratch: scratch, record, backend, keyless_backend, stops, tasks }
    }

    fn recorded(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    async fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A JSON-RPC-over-HTTP client for one MCP endpoint.
#[derive(Debug)]
struct McpClient {
    http: Client<HttpConnector, Full<Bytes>>,
    url: String,
    next_id: u64,
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    content_type: String,
    session_id: Option<String>,
    body: String,
}

impl McpClient {
    fn new(addr: SocketAddr) -> Self {
        Self {
            http: Client::builder(TokioExecutor::new()).build_http(),
            url: format!("http://{addr}{}", server::MCP_PATH),
            next_id: 0,
        }
    }

    async fn post(&self, headers: &[(&str, &str)], body: &Value) -> Reply {
        let mut request = Request::post(&self.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .header("x-keyward-client", CLIENT_ID);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let response = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            let response = self.http.request(request).await.unwrap();
            let status = response.status();
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let session_id =
                response.headers().get(SESSION_HEADER).map(|v| v.to_str().unwrap().to_owned());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8(body.to_vec()).unwrap();
            Reply { status, content_type, session_id, body }
        });
        response.await.expect("the backend answered in time")
    }

    /// Sends a request and returns the JSON-RPC message answering it (from JSON or SSE).
    async fn call(&mut self, method: &str, params: Value, headers: &[(&str, &str)]) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let reply = self
            .post(
                headers,
                &json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{method}: {}", reply.body);
        let messages: Vec<Value> = if reply.content_type.starts_with("text/event-stream") {
            reply
                .body
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .filter_map(|data| serde_json::from_str(data.trim()).ok())
                .collect()
        } else {
            vec![serde_json::from_str(&reply.body).unwrap()]
        };
        messages
            .into_iter()
            .find(|message| message["id"] == json!(id))
            .unwrap_or_else(|| panic!("no answer to {method} in {}", reply.body))
    }

    async fn initialize(&mut self) -> Value {
        let init = self
            .call(
                "initialize",
                json!({
                    "protocolVersion": PROTOCOL,
                    "capabilities": {},
                    "clientInfo": { "name": "e2e", "version": "1.0" },
                }),
                &[("mcp-protocol-version", PROTOCOL)],
            )
            .await;
        let reply = self
            .post(
                &[("mcp-protocol-version", PROTOCOL)],
                &json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        init
    }

    /// Calls a tool; returns `(is_error, the text content parsed as JSON)`.
    async fn tool(&mut self, name: &str, arguments: Value) -> (bool, Value) {
        let answer = self
            .call(
                "tools/call",
                json!({ "name": name, "arguments": arguments }),
                &[("mcp-protocol-version", PROTOCOL)],
            )
            .await;
        let result = &answer["result"];
        assert!(result.is_object(), "{name}: {answer}");
        let text = result["content"][0]["text"].as_str().unwrap_or_default();
        (
            result["isError"] == json!(true),
            serde_json::from_str(text).unwrap_or_else(|_| panic!("{name}: not JSON: {text}")),
        )
    }
}

#[tokio::test]
async fn initialize_list_and_call_tools_over_http() {
    let rig = Rig::start().await;
    let mut client = McpClient::new(rig.backend);

    let init = client.initialize().await;
    let result = &init["result"];
    assert_eq!(result["protocolVersion"], PROTOCOL, "{init}");
    assert_eq!(result["serverInfo"]["name"], "mcp-backend", "{init}");
    assert!(result["capabilities"]["tools"].is_object(), "{init}");

    let list = client.call("tools/list", json!({}), &[("mcp-protocol-version", PROTOCOL)]).await;
    let tools = list["result"]["tools"].as_array().expect("tools");
    assert_eq!(tools.len(), 12, "{list}");
    for tool in tools {
        assert_eq!(tool["annotations"]["readOnlyHint"], true, "{tool}");
        assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
    }

    // One day: exactly the stand-in's document for that day.
    let (is_error, activity) =
        client.tool("get_activity_by_date", json!({ "date": "2025-02-02" })).await;
    assert!(!is_error, "{activity}");
    let day = stand_in::calendar::Day::parse("2025-02-02").unwrap();
    assert_eq!(activity, stand_in::records::document(stand_in::records::Domain::Activity, day));

    // A range, with the page size clamped to 50.
    let (is_error, page) = client
        .tool(
            "get_sleep_by_date_range",
            json!({
                "startDate": "2025-01-01",
                "endDate": "2025-03-31",
                "pageNumber": 2,
                "pageSize": 500,
            }),
        )
        .await;
    assert!(!is_error, "{page}");
    assert_eq!(page["PageSize"], 50);
    assert_eq!(page["PageNumber"], 2);
    assert_eq!(page["TotalCount"], 90);
    assert_eq!(page["Items"].as_array().map(Vec::len), Some(40));
    assert_eq!(page["Items"][0]["Date"], "2025-02-20");
    assert_eq!(page["Items"][0]["DocumentType"], "Sleep");

    // All records, defaults: first page of 20, newest first.
    let (is_error, page) = client.tool("get_vitals_records", json!({})).await;
    assert!(!is_error, "{page}");
    assert_eq!(page["PageSize"], 20);
    assert_eq!(page["HasNextPage"], true);
    assert!(page["Items"][0]["Weight"]["weight"].is_number(), "{page}");

    // Bad input and missing records come back as readable tool errors.
    for (name, arguments, expected) in [
        (
            "get_vitals_by_date",
            json!({ "date": "2025-02-30" }),
            "date must be a calendar date in yyyy-MM-dd format",
        ),
        ("get_food_by_date", json!({}), "invalid arguments: missing field `date`"),
        (
            "get_food_records",
            json!({ "pageNumber": 0 }),
            "pageNumber must be between 1 and 2147483647",
        ),
        (
            "get_activity_by_date_range",
            json!({ "startDate": "2025-02-02", "endDate": "2025-02-01" }),
            "startDate must not be after endDate",
        ),
        ("get_sleep_by_date", json!({ "date": "2023-06-01" }), "no sleep record for 2023-06-01"),
    ] {
        let (is_error, body) = client.tool(name, arguments).await;
        assert!(is_error, "{name}: {body}");
        assert_eq!(body, json!({ "error": expected }), "{name}");
    }

    // The backend sent neither the client's identity nor any credential upstream; the only
    // key the stand-in saw is the one the egress added.
    let recorded = rig.recorded();
    assert!(recorded.len() >= 4, "{recorded:?}");
    for line in &recorded {
        assert_eq!(line["has_authorization"], false, "{line}");
        assert_eq!(line["has_x_api_key"], false, "{line}");
        let names = line["headers"].as_array().unwrap();
        assert!(!names.contains(&json!("x-keyward-client")), "{line}");
        assert!(!line.to_string().contains(KEY), "{line}");
    }
    rig.stop().await;
}

#[tokio::test]
async fn without_the_egress_the_upstream_refuses_and_the_tool_says_so() {
    let rig = Rig::start().await;
    let mut client = McpClient::new(rig.keyless_backend);
    client.initialize().await;
    let (is_error, body) = client.tool("get_food_by_date", json!({ "date": "2025-02-02" })).await;
    assert!(is_error, "{body}");
    assert_eq!(body, json!({ "error": "the health-data API answered 401 Unauthorized" }));
    let recorded = rig.recorded();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["status"], 401);
    assert_eq!(recorded[0]["has_subscription_key"], false);
    assert_eq!(recorded[0]["has_authorization"], false);
    assert_eq!(recorded[0]["path"], "/biotrackr/food/2025-02-02");
    rig.stop().await;
}

#[tokio::test]
async fn stateless_per_request_protocol_works_without_initialize() {
    let rig = Rig::start().await;
    let mut client = McpClient::new(rig.backend);
    let answer = client
        .call(
            "tools/call",
            json!({
                "name": "get_activity_records",
                "arguments": { "pageSize": 1 },
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientInfo": { "name": "e2e", "version": "1.0" },
                    "io.modelcontextprotocol/clientCapabilities": {},
                },
            }),
            &[
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "get_activity_records"),
            ],
        )
        .await;
    let result = &answer["result"];
    assert_eq!(result["isError"], false, "{answer}");
    let page: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(page["Items"][0]["Date"], "2026-12-31");
    rig.stop().await;
}

#[tokio::test]
async fn http_guards_hold() {
    let rig = Rig::start().await;
    let client = McpClient::new(rig.backend);
    let ping = json!({ "jsonrpc": "2.0", "id": 1, "method": "ping" });

    // A Host that is not loopback is a DNS-rebinding attempt.
    let reply = client.post(&[("host", "mcp.example.com")], &ping).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);

    // An unknown protocol version is refused.
    let reply = client.post(&[("mcp-protocol-version", "1999-01-01")], &ping).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);

    // Stateless: no GET stream, and nothing outside /mcp.
    let http: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let get = |path: &str| {
        Request::get(format!("http://{}{path}", rig.backend))
            .header(header::ACCEPT, "text/event-stream")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let response = http.request(get("/mcp")).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let response = http.request(get("/other")).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    rig.stop().await;
}

#[tokio::test]
async fn stateful_mode_issues_a_session_id_and_requires_it() {
    let rig = Rig::start_with(&server::McpOptions { stateful: true, ..Default::default() }).await;
    let client = McpClient::new(rig.backend);
    let version = ("mcp-protocol-version", PROTOCOL);
    let list = json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {} });

    let reply = client
        .post(
            &[version],
            &json!({
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": PROTOCOL,
                    "capabilities": {},
                    "clientInfo": { "name": "e2e", "version": "1.0" },
                },
            }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let session = reply.session_id.expect("initialize issues a session id");
    assert!(!session.is_empty());
    assert!(reply.body.contains(r#""serverInfo""#), "{}", reply.body);

    // Without the id, or with one the backend never issued, nothing past initialize is served.
    let reply = client.post(&[version], &list).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    let reply = client.post(&[version, (SESSION_HEADER, "not-a-session")], &list).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);

    let with_session = [version, (SESSION_HEADER, session.as_str())];
    let reply = client
        .post(&with_session, &json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let reply = client.post(&with_session, &list).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.content_type.starts_with("text/event-stream"), "{}", reply.content_type);
    let answer: Value = reply
        .body
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .find_map(|data| serde_json::from_str(data.trim()).ok())
        .unwrap_or_else(|| panic!("no JSON-RPC message in {}", reply.body));
    assert_eq!(answer["result"]["tools"].as_array().map(Vec::len), Some(12), "{answer}");

    // GET opens the session's own SSE stream; it needs the id too.
    let http: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let request = |method: http::Method, session: Option<&str>| {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", rig.backend, server::MCP_PATH))
            .header(header::ACCEPT, "text/event-stream")
            .header(version.0, version.1);
        if let Some(session) = session {
            request = request.header(SESSION_HEADER, session);
        }
        request.body(Full::new(Bytes::new())).unwrap()
    };
    let send = |request| {
        let response = http.request(request);
        async move {
            tokio::time::timeout(std::time::Duration::from_secs(20), response)
                .await
                .expect("the backend answered in time")
                .unwrap()
        }
    };
    let stream = send(request(http::Method::GET, Some(&session))).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let content_type = stream.headers().get(header::CONTENT_TYPE).unwrap().to_str().unwrap();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    drop(stream);
    let response = send(request(http::Method::GET, None)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // DELETE ends the session; the id is then unknown.
    let response = send(request(http::Method::DELETE, Some(&session))).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let reply = client.post(&with_session, &list).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    rig.stop().await;
}
