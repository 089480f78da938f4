//! The secret-leak canary: the real `keyward` binary runs at `trace` level with sentinel secret
//! values, with file secrets and then with the fake Key Vault, and is driven through every path,
//! success and failure. Everything that leaves it is collected (stdout, stderr, every OTLP
//! export received by a real receiver, traces and metrics, `/metrics`, every response, every
//! request the backend and the upstream receive) and searched for the sentinels in every form:
//! raw, base64, base64url, hex and percent-encoded. Only the upstream may see the APIM key, and
//! only in its credential header. Bearer tokens from a fake Entra ID, good and hostile, are
//! sentinels too, with their signatures and the provider's private key material.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use keyward_tests::backend::TestBackend;
use keyward_tests::client::{self, request, send, Reply};
use keyward_tests::config::Builder;
use keyward_tests::dir::TempDir;
use keyward_tests::fake_azure::FakeAzure;
use keyward_tests::fake_idp::{Alg, FakeIdp, HmacSecret};
use keyward_tests::otlp::OtlpReceiver;
use keyward_tests::process::{binary, eventually, Keyward};

const CLIENT: &str = "CANARY-client/key+8d1f5a7c3e9b2046";
const ROTATED: &str = "CANARY-rotated/key+6b0e2d4f8a1c3957";
const APIM: &str = "CANARY-apim/key+5c3a1e9f7d2b4068";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// Every form a value could leak in.
fn forms(value: &str) -> Vec<(&'static str, String)> {
    let bytes = value.as_bytes();
    let b64 = |alphabet: &[u8]| {
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let group = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = u32::from_be_bytes([0, group[0], group[1], group[2]]);
            for i in 0..=chunk.len() {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    };
    let standard = b64(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
    let url = b64(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let percent: String = bytes
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    vec![
        ("raw", value.to_owned()),
        ("base64", standard),
        ("base64url", url),
        ("hex", hex.clone()),
        ("HEX", hex.to_uppercase()),
        ("percent", percent),
    ]
}

/// Panics, naming the place and the form, when any sentinel appears in `haystack`.
fn assert_clean(place: &str, haystack: &[u8], secrets: &[&str]) {
    let text = String::from_utf8_lossy(haystack);
    for secret in secrets {
        for (form, needle) in forms(secret) {
            assert!(!text.contains(&needle), "a sentinel leaked into {place} ({form} form)");
        }
    }
}

fn reply_bytes(reply: &Reply) -> Vec<u8> {
    let mut out = format!("{}\n{:?}\n", reply.status, reply.headers).into_bytes();
    out.extend_from_slice(&reply.body);
    out
}

/// One request: method, path, headers in order (repeats kept), body.
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str);

/// The agent application whose tokens are a client's.
const AGENT_APP: &str = "5d1c0e7a-canary-agent-app";

struct Canary {
    idp: FakeIdp,
    dir: TempDir,
    secrets: TempDir,
    backend: TestBackend,
    upstream: TestBackend,
    receiver: OtlpReceiver,
}

enum Source<'a> {
    Files,
    Vault(&'a FakeAzure),
}

impl Canary {
    async fn new() -> Self {
        let secrets = TempDir::new("canary-secrets");
        secrets.write_secret("mcp-client-canary", &format!("{CLIENT}\n"));
        secrets.write_secret("apim-subscription-key", APIM);
        Self {
            idp: FakeIdp::start().await,
            dir: TempDir::new("canary"),
            secrets,
            backend: TestBackend::start().await,
            upstream: TestBackend::start().await,
            receiver: OtlpReceiver::start().await,
        }
    }

    fn config(&self, source: &Source<'_>) -> PathBuf {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        let config = match source {
            Source::Files => {
                Builder::files(self.secrets.path()).set("secrets.watch_interval", "100ms")
            }
            Source::Vault(azure) => {
                let ca = self.dir.write("vault-ca.pem", &azure.ca_pem());
                Builder::key_vault(&azure.vault_url(), &ca)
                    .set("secrets.credential", "managed_identity")
            }
        };
        let apim = "apim-subscription-key";
        let mut issuer = keyward_tests::config::table([
            ("issuer", &self.idp.issuer()),
            ("ca_file", self.dir.write("idp-ca.pem", &self.idp.ca_pem()).to_str().unwrap()),
        ]);
        issuer.insert("audiences".into(), vec![self.idp.resource_app_id()].into());
        let mut agent = keyward_tests::config::table([("id", "canary-token-agent")]);
        agent.insert("token_ids".into(), vec![AGENT_APP].into());
        config
            .backend(self.backend.addr)
            .set("ingress.max_header_bytes", 4096)
            .set("ingress.auth_failure_burst", 1000)
            .client("canary-agent", "mcp-client-canary")
            .push("ingress.clients", agent)
            .set("ingress.oauth.resource", "https://mcp.example.com/mcp")
            .push("ingress.oauth.issuers", issuer)
            .route("/health/", &format!("http://{}/biotrackr/", self.upstream.addr), apim)
            .route("/down/", &format!("http://{dead}/"), apim)
            .set("secrets.rotation_overlap", "1h")
            .set("telemetry.log_level", "trace")
            .set("telemetry.otlp_endpoint", self.receiver.endpoint())
            .set("telemetry.otlp_protocol", "http/protobuf")
            .set("telemetry.service_name", "keyward-canary")
            .write(&self.dir)
    }

    fn start(&self, source: &Source<'_>) -> Keyward {
        let mut env = vec![
            ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
            ("OTEL_METRIC_EXPORT_INTERVAL".to_owned(), "100".to_owned()),
        ];
        if let Source::Vault(azure) = source {
            env.push(("IDENTITY_ENDPOINT".into(), azure.identity_endpoint()));
            env.push(("IDENTITY_HEADER".into(), azure.identity_header()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Keyward::start_with_env(&self.config(source), &env)
    }

    /// Drives every path and returns everything keyward answered.
    async fn drive(&self, keyward: &mut Keyward, rotate: impl Fn()) -> Vec<Reply> {
        let http = client::http1();
        let ingress = keyward.ingress;
        let egress = keyward.egress.expect("egress");
        let mut replies = Vec::new();
        let up = eventually(Duration::from_secs(15), || async {
            send(&http, request(ingress, "GET", "/mcp", &[("x-api-key", CLIENT)], "")).await.status
                == 200
        })
        .await;
        assert!(up, "never served:\n{}", keyward.output().replace(CLIENT, "<CLIENT>"));
        // Ready: the identity provider's keys are loaded too.
        assert!(keyward.wait_ready(Duration::from_secs(15)).await, "never ready");

        let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
        let near_miss = CLIENT.replace('8', "9");
        let huge = format!("{CLIENT}-").repeat(200);
        let query = format!("/mcp?api_key={CLIENT}");
        let bearer = format!("Bearer {CLIENT}");
        let idp = &self.idp;
        let claims = idp.claims(AGENT_APP);
        let mut expired = claims.clone();
        expired["exp"] = 1_000_000.into();
        let mut stranger = claims.clone();
        stranger["azp"] = "an-unknown-app".into();
        let rsa = idp.signing_kid(keyward_tests::fake_idp::Kty::Rsa);
        let tokens: Vec<String> = [
            idp.signed(Alg::Rs256, &claims),
            idp.signed(Alg::Es256, &claims),
            idp.signed(Alg::Rs256, &expired),
            idp.signed(Alg::Rs256, &stranger),
            idp.tampered(&idp.signed(Alg::Ps256, &claims)),
            idp.unsigned(&claims),
            idp.hs256_with_public_key(&rsa, &claims, HmacSecret::SpkiPem),
        ]
        .into();
        let bearers: Vec<String> = tokens.iter().map(|t| format!("Bearer {t}")).collect();
        let token_query = format!("/mcp?access_token={}", tokens[0]);
        let mut cases: Vec<Case<'_>> = vec![
            (
                "POST",
                "/mcp",
                vec![("x-api-key", CLIENT), ("traceparent", &traceparent)],
                "{\"jsonrpc\":\"2.0\"}",
            ),
            ("GET", "/mcp", vec![("x-api-key", &near_miss)], ""),
            ("GET", &query, vec![("x-api-key", CLIENT)], ""),
            ("GET", "/mcp", vec![("x-api-key", CLIENT), ("x-api-key", CLIENT)], ""),
            ("GET", "/mcp", vec![("connection", "x-api-key"), ("x-api-key", CLIENT)], ""),
            ("GET", "/mcp", vec![("authorization", &bearer)], ""),
            ("GET", "/mcp", vec![("x-api-key", CLIENT), ("x-huge", &huge)], ""),
            ("GET", "/mcp", vec![("x-api-key", CLIENT), ("origin", "https://evil.example")], ""),
        ];
        for bearer in &bearers {
            cases.push(("GET", "/mcp", vec![("authorization", bearer)], ""));
        }
        cases.push(("POST", "/mcp", vec![("authorization", &bearers[0])], "{\"jsonrpc\":\"2.0\"}"));
        cases.push((
            "GET",
            "/mcp",
            vec![("authorization", &bearers[0]), ("x-api-key", CLIENT)],
            "",
        ));
        cases.push(("GET", &token_query, vec![("authorization", &bearers[0])], ""));
        for (method, path, headers, body) in &cases {
            replies.push(send(&http, request(ingress, method, path, headers, body)).await);
        }
        let statuses: Vec<u16> = replies[replies.len() - bearers.len() - 3..]
            .iter()
            .map(|r| r.status.as_u16())
            .collect();
        assert_eq!(
            statuses,
            [200, 200, 401, 403, 401, 401, 401, 200, 400, 401],
            "the tokens' answers"
        );
        for path in ["/health/activity/2025-02-02", "/down/x", "/nope", "/health/../x"] {
            let headers = [("ocp-apim-subscription-key", "set-by-backend")];
            replies.push(send(&http, request(egress, "GET", path, &headers, "")).await);
        }
        replies.extend(self.leaks(ingress, egress).await);

        rotate();
        keyward.signal("HUP");
        let rotated = eventually(Duration::from_secs(15), || async {
            send(&http, request(ingress, "GET", "/mcp", &[("x-api-key", ROTATED)], "")).await.status
                == 200
        })
        .await;
        assert!(rotated, "the rotated key was never accepted");
        for key in [CLIENT, ROTATED, "wrong"] {
            replies.push(
                send(&http, request(ingress, "GET", "/mcp", &[("x-api-key", key)], "")).await,
            );
        }
        for path in ["/metrics", "/readyz", "/livez", "/nope"] {
            replies.push(send(&http, request(keyward.admin, "GET", path, &[], "")).await);
        }
        let spans = eventually(Duration::from_secs(15), || async {
            let spans = self.receiver.spans();
            spans.iter().any(|s| s.name == "ingress") && spans.iter().any(|s| s.name == "egress")
        })
        .await;
        assert!(spans, "no spans exported");
        // The metrics export, after the safety net's catches and the refused keys: what it
        // carries is scanned with the rest.
        let metrics = eventually(Duration::from_secs(15), || async {
            let leak = [("listener", "ingress"), ("secret", "mcp-client-canary")];
            self.receiver.latest("keyward.secret.leaks.blocked", &leak).is_some()
                && self
                    .receiver
                    .latest("keyward.auth.failures", &[("reason", "invalid")])
                    .is_some_and(|p| p.value >= 1.0)
        })
        .await;
        assert!(metrics, "no metrics exported");
        keyward.signal("TERM");
        assert!(keyward.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()));
        replies
    }

    /// Answers that carried a sentinel on their way in: an upstream echoing the key keyward
    /// added, a compressed answer, the backend sending a client key out, and an SSE event from
    /// the backend carrying the client key (split across frames) and the APIM key in base64.
    /// Each must have reached the net, so that `check` finding them clean means something.
    async fn leaks(&self, ingress: SocketAddr, egress: SocketAddr) -> Vec<Reply> {
        let http = client::http1();
        let echo = send(&http, request(egress, "GET", "/health/echo", &[], "")).await;
        assert_eq!(echo.status, 200);
        let echoed: serde_json::Value = serde_json::from_slice(&echo.body).expect("JSON echo");
        let redacted = echoed["headers"]["ocp-apim-subscription-key"] == "[REDACTED]";
        assert!(redacted, "the echoed key was not redacted");
        let gzip = send(&http, request(egress, "GET", "/health/gzip", &[], "")).await;
        assert_eq!((gzip.status.as_u16(), gzip.error()), (502, "unscannable_response".into()));
        let out = format!("/health/activity?note={CLIENT}");
        let refused = send(&http, request(egress, "GET", &out, &[], "")).await;
        assert_eq!((refused.status.as_u16(), refused.error()), (403, "secret_in_request".into()));

        let sse = http::Request::get(format!("http://{ingress}/sse"))
            .header("x-api-key", CLIENT)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let response = tokio::spawn(async move { client::streaming().request(sse).await });
        let events = self.backend.next_stream().await;
        let record = serde_json::json!({ "deviceToken": CLIENT, "b64": forms(APIM)[1].1 });
        let message = serde_json::json!({"jsonrpc": "2.0", "id": 3, "result": {
            "content": [{"type": "text", "text": record.to_string()}]}});
        let result = format!("event: message\ndata: {message}\n\n");
        let (a, b) = result.split_at(result.find(CLIENT).expect("the key") + CLIENT.len() / 2);
        for frame in ["event: message\ndata: {\"n\":1}\n\n", a, b] {
            events.send(bytes::Bytes::from(frame.to_owned())).await.expect("stream open");
        }
        drop(events);
        let sse = client::collect(response.await.expect("task").expect("response")).await;
        assert_eq!(sse.status, 200);
        let text = sse.text();
        assert!(text.starts_with("event: message\ndata: {\"n\":1}\n\n"), "the first event");
        assert_eq!(text.matches("[REDACTED]").count(), 2, "both sentinels redacted");
        vec![echo, gzip, refused, sse]
    }

    fn check(&self, keyward: &Keyward, replies: &[Reply]) {
        let tokens = self.idp.minted();
        assert!(tokens.len() >= 7, "the tokens were minted");
        let signatures: Vec<String> =
            tokens.iter().filter_map(|t| t.rsplit_once('.')).map(|(_, s)| s.to_owned()).collect();
        let private = self.idp.private_key_texts();
        let mut secrets = vec![CLIENT, ROTATED, APIM];
        secrets.extend(tokens.iter().map(String::as_str));
        secrets.extend(signatures.iter().map(String::as_str).filter(|s| s.len() >= 16));
        secrets.extend(private.iter().map(String::as_str));
        assert_clean("keyward's stdout and stderr", keyward.output().as_bytes(), &secrets);
        for body in self.receiver.bodies() {
            assert_clean("an OTLP export", &body, &secrets);
        }
        for reply in replies {
            assert_clean("a response", &reply_bytes(reply), &secrets);
        }
        for seen in self.backend.seen() {
            assert_clean("a backend request", format!("{seen:?}").as_bytes(), &secrets);
            assert!(seen.headers.get("authorization").is_none(), "a token reached the backend");
        }
        let upstream = self.upstream.seen();
        assert!(!upstream.is_empty());
        for mut seen in upstream {
            let key = seen.headers.remove("ocp-apim-subscription-key").expect("the upstream's key");
            assert_eq!(key, APIM);
            assert_clean("an upstream request", format!("{seen:?}").as_bytes(), &secrets);
        }

        // The spans say what happened, and joined the caller's trace.
        let spans = self.receiver.spans();
        let ingress = spans
            .iter()
            .find(|s| s.name == "ingress" && s.trace_id == TRACE_ID)
            .expect("the ingress span joined the client's trace");
        assert_eq!(ingress.parent_span_id, PARENT_ID);
        assert_eq!(ingress.attribute("http.request.method"), Some("POST"));
        assert_eq!(ingress.attribute("url.path"), Some("/mcp"));
        assert_eq!(ingress.attribute("http.response.status_code"), Some("200"));
        assert_eq!(ingress.attribute("keyward.client"), Some("canary-agent"));
        assert!(ingress.resource.iter().any(|(k, v)| k == "service.name" && v == "keyward-canary"));
        let egress = spans
            .iter()
            .find(|s| s.name == "egress" && s.attribute("keyward.route") == Some("/health/"))
            .expect("the egress span");
        assert_eq!(egress.attribute("http.response.status_code"), Some("200"));
        // The upstream joined the egress span's trace.
        let upstream = self.upstream.seen()[0].headers["traceparent"].to_str().unwrap().to_owned();
        assert!(
            upstream.contains(&egress.trace_id) && upstream.contains(&egress.span_id),
            "{upstream}"
        );
        // The backend got keyward's span as its parent, in the same trace.
        let forwarded =
            self.backend.seen().into_iter().find(|s| s.method == "POST").expect("the POST");
        let traceparent = forwarded.headers["traceparent"].to_str().unwrap().to_owned();
        assert!(traceparent.contains(TRACE_ID), "{traceparent}");
        assert!(traceparent.contains(&ingress.span_id), "{traceparent}");

        // A denial is audited without the credential.
        let output = keyward.output();
        assert!(
            output.contains("\"target\":\"keyward::audit\"")
                && output.contains("\"reason\":\"key_in_query\"")
        );
        // The net's catches are audited and counted, by the secret's name.
        for reason in ["secret_in_response", "secret_in_request"] {
            assert!(output.contains(&format!("\"reason\":\"{reason}\"")), "no {reason} audit");
        }
        let metrics = replies
            .iter()
            .find(|r| r.text().contains("http_server_request_duration_seconds"))
            .expect("/metrics");
        for (listener, secret) in [
            ("egress", "apim-subscription-key"),
            ("egress", "mcp-client-canary"),
            ("ingress", "mcp-client-canary"),
            ("ingress", "apim-subscription-key"),
        ] {
            let sample = format!(
                "keyward_secret_leaks_blocked_total{{listener=\"{listener}\",secret=\"{secret}\"}} "
            );
            assert!(metrics.text().contains(&sample), "{sample} is not counted");
        }
        promtool_check(&metrics.body);
    }
}

/// `/metrics` parses with Prometheus' own parser (required in CI, where `.ci/run` installs it).
fn promtool_check(metrics: &[u8]) {
    use std::io::Write;
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        assert!(std::env::var_os("CI").is_none(), "promtool is missing in CI");
        eprintln!("promtool not installed; /metrics not parsed");
        return;
    };
    child.stdin.take().unwrap().write_all(metrics).unwrap();
    let out = child.wait_with_output().unwrap();
    let report =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Lint remarks (naming advice) exit 3; a parse error exits 1.
    assert!(out.status.code() != Some(1), "promtool could not parse /metrics: {report}");
    assert!(!report.contains("error"), "promtool: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sentinel_leaks_with_file_secrets() {
    let canary = Canary::new().await;
    let mut keyward = canary.start(&Source::Files);
    let secrets = &canary.secrets;
    let replies =
        canary.drive(&mut keyward, || secrets.write_secret("mcp-client-canary", ROTATED)).await;
    canary.check(&keyward, &replies);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sentinel_leaks_with_key_vault_and_its_failures() {
    let canary = Canary::new().await;
    let azure = FakeAzure::start().await;
    azure.set_secret("mcp-client-canary", CLIENT);
    azure.set_secret("apim-subscription-key", APIM);
    // Key Vault's errors are driven too: throttling at start, then an outage and a recovery.
    azure.throttle_next(2);
    let mut keyward = canary.start(&Source::Vault(&azure));
    let replies = canary
        .drive(&mut keyward, || {
            azure.set_available(false);
            std::thread::sleep(Duration::from_millis(600));
            azure.set_available(true);
            std::thread::sleep(Duration::from_millis(1100));
            azure.set_secret("mcp-client-canary", ROTATED);
        })
        .await;
    canary.check(&keyward, &replies);
    for token in azure.issued_tokens() {
        assert!(!keyward.output().contains(&token), "a vault token reached the log");
    }
}

#[test]
fn a_malformed_config_never_echoes_a_value() {
    let dir = TempDir::new("canary-config");
    let cases = [
        format!("[ingress]\nlisten = \"{CLIENT}\"\n"),
        format!("[ingress]\n[[ingress.clients]]\nid = \"a\"\nsecret = \"a\"\nkey = \"{CLIENT}\"\n"),
        format!("[ingress\nsecret = \"{CLIENT}\"\n"),
        format!("[ingress]\n[[ingress.clients]]\nid = \"a\"\nsecret = \"{CLIENT}\"\n[secrets]\nsource = \"file\"\ndir = \"/x\"\n"),
        format!("[secrets]\nsource = \"{CLIENT}\"\n"),
        format!("[egress]\n[[egress.routes]]\nprefix = \"/h/\"\nupstream = \"https://h.example/\"\nsecret = \"s\"\nheaders = {{ \"X-Token\" = \"{CLIENT}\" }}\n"),
    ];
    for (i, text) in cases.iter().enumerate() {
        let path = dir.write(&format!("bad{i}.toml"), text);
        for args in [vec!["check-config", "--config"], vec!["--config"]] {
            let out = Command::new(binary("keyward"))
                .args(&args)
                .arg(&path)
                .env("RUST_LOG", "trace")
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "case {i} was accepted");
            let all = [out.stdout, out.stderr].concat();
            assert_clean(&format!("the error for malformed config {i}"), &all, &[CLIENT]);
        }
    }
}
