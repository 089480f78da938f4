//! Black-box tests of the real `keyward` binary: started on `127.0.0.1:0` ports in front of a
//! streaming test backend, driven by curl and raw sockets, stopped by signals.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keyward_tests::backend::TestBackend;
use keyward_tests::config::Builder;
use keyward_tests::dir::TempDir;
use keyward_tests::process::{binary, eventually, Keyward};

const KEY: &str = "canary-client-key-5f3a9c1e7b2d4806";
const ROTATED: &str = "canary-rotated-key-0c8e6a4f2b1d3957";

fn config(dir: &TempDir, backend: &TestBackend, watch: &str) -> PathBuf {
    Builder::files(&dir.path().join("secrets"))
        .backend(backend.addr)
        .client("inspector", "mcp-client-inspector")
        .set("ingress.header_read_timeout", "500ms")
        .set("ingress.shutdown_grace", "5s")
        .set("secrets.watch_interval", watch)
        .set("secrets.rotation_overlap", "0s")
        .write(dir)
}

fn secrets(dir: &TempDir) -> TempDir {
    // A nested private directory, as a Kubernetes Secret volume would be.
    let secrets = TempDir::new("bin-secrets");
    std::fs::remove_dir_all(dir.path().join("secrets")).ok();
    std::os::unix::fs::symlink(secrets.path(), dir.path().join("secrets")).unwrap();
    secrets.write_secret("mcp-client-inspector", &format!("{KEY}\r\n"));
    secrets
}

fn curl(args: &[&str]) -> Output {
    Command::new("curl").args(["-sS", "--max-time", "10"]).args(args).output().expect("curl runs")
}

fn status_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or_default().to_owned()
}

async fn started(dir: &TempDir, backend: &TestBackend, watch: &str) -> Keyward {
    let keyward = Keyward::start(&config(dir, backend, watch));
    let ready = format!("http://{}/readyz", keyward.admin);
    let came_up = eventually(Duration::from_secs(10), || {
        let ready = ready.clone();
        async move { status_of(&curl(&["-o", "/dev/null", "-w", "%{http_code}", &ready])) == "200" }
    })
    .await;
    assert!(came_up, "never ready:\n{}", keyward.output());
    keyward
}

#[test]
fn check_config_names_the_bad_key_and_never_a_value() {
    let dir = TempDir::new("check");
    let good = dir.write(
        "good.toml",
        "[ingress]\n[[ingress.clients]]\nid = \"a\"\nsecret = \"a-key\"\n[secrets]\nsource = \"file\"\ndir = \"/x\"\n",
    );
    let ok = Command::new(binary("keyward"))
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("a (secret a-key)"));
    let warning = String::from_utf8_lossy(&ok.stderr);
    assert!(warning.contains("secrets.dir /x does not exist"), "{warning}");

    // What cannot become a header is refused here, not found by a panic at start.
    let metadata = dir.write(
        "metadata.toml",
        "[ingress]\nresource_metadata = \"https://x\\n\"\n[[ingress.clients]]\nid = \"a\"\nsecret = \"a-key\"\n[secrets]\nsource = \"file\"\ndir = \"/x\"\n",
    );
    let refused = Command::new(binary("keyward"))
        .args(["check-config", "--config"])
        .arg(&metadata)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("ingress.resource_metadata:"));

    let bad = dir.write(
        "bad.toml",
        "[ingress]\nlisten = \"sk-live-0000-canary\"\n[[ingress.clients]]\nid = \"a\"\nsecret = \"a-key\"\n[secrets]\nsource = \"file\"\ndir = \"/x\"\n",
    );
    let refused = Command::new(binary("keyward"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("ingress.listen:"), "{stderr}");
    assert!(!stderr.contains("sk-live-0000-canary"), "{stderr}");

    let none = Command::new(binary("keyward")).env_remove("KEYWARD_CONFIG").output().unwrap();
    assert_eq!(none.status.code(), Some(2));
    let help = Command::new(binary("keyward")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for key in ["allowed_origins", "max_body_bytes", "rotation_overlap", "watch_interval"] {
        assert!(help.contains(key), "--help does not document {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_real_binary_over_http1_and_h2c() {
    let dir = TempDir::new("bin");
    let _secrets = secrets(&dir);
    let backend = TestBackend::start().await;
    let keyward = started(&dir, &backend, "100ms").await;
    let url = format!("http://{}/mcp", keyward.ingress);
    let header = format!("X-Api-Key: {KEY}");

    let ok = curl(&["-w", "\n%{http_code}", "-H", &header, "-d", "{}", &url]);
    assert_eq!(status_of(&ok), "200");
    let h2 = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version} %{http_code}",
        "-H",
        &header,
        &url,
    ]);
    assert_eq!(status_of(&h2), "2 200");

    let wrong = curl(&["-i", "-H", "X-Api-Key: not-the-key", &url]);
    let text = String::from_utf8_lossy(&wrong.stdout);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.to_ascii_lowercase().contains("www-authenticate: apikey"), "{text}");
    let body = "{\"error\":\"unauthorized\",\"message\":\"a valid X-Api-Key header is required\"}";
    assert!(text.ends_with(body), "{text}");

    for seen in backend.seen() {
        assert!(seen.headers.get("x-api-key").is_none());
        assert_eq!(seen.headers["x-keyward-client"], "inspector");
    }
    let output = keyward.output();
    assert!(output.contains("\"target\":\"keyward::access\""), "{output}");
    assert!(!output.contains(KEY), "the client key reached keyward's output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sees_sse_events_as_they_are_written() {
    let dir = TempDir::new("sse");
    let _secrets = secrets(&dir);
    let backend = TestBackend::start().await;
    let keyward = started(&dir, &backend, "100ms").await;
    let mut curl = Command::new("curl")
        .args(["-sSN", "--max-time", "20", "-H", &format!("X-Api-Key: {KEY}")])
        .arg(format!("http://{}/sse", keyward.ingress))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let events = backend.next_stream().await;
    let mut stdout = curl.stdout.take().unwrap();
    for n in 0..3 {
        events.send(Bytes::from(format!("data: {n}\n\n"))).await.unwrap();
        let expected = format!("data: {n}\n\n");
        let mut got = vec![0; expected.len()];
        // Each event reaches curl while the backend still holds the stream open.
        let read =
            tokio::task::spawn_blocking(move || stdout.read_exact(&mut got).map(|_| (got, stdout)));
        let (got, back) =
            tokio::time::timeout(Duration::from_secs(5), read).await.unwrap().unwrap().unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), expected);
        stdout = back;
    }
    let _ = curl.kill();
    let _ = curl.wait();
    tokio::time::timeout(Duration::from_secs(5), events.closed())
        .await
        .expect("cancelled upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_rotated_key_without_a_restart() {
    let dir = TempDir::new("hup");
    let secrets = secrets(&dir);
    let backend = TestBackend::start().await;
    let keyward = started(&dir, &backend, "1h").await;
    let url = format!("http://{}/", keyward.ingress);
    let with = |key: &str| {
        status_of(&curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("X-Api-Key: {key}"),
            &url,
        ]))
    };
    assert_eq!(with(KEY), "200");
    assert_eq!(with(ROTATED), "401");
    secrets.write_secret("mcp-client-inspector", ROTATED);
    keyward.signal("HUP");
    let url2 = url.clone();
    assert!(
        eventually(Duration::from_secs(5), || {
            let url = url2.clone();
            async move {
                let header = format!("X-Api-Key: {ROTATED}");
                status_of(&curl(&["-o", "/dev/null", "-w", "%{http_code}", "-H", &header, &url]))
                    == "200"
            }
        })
        .await
    );
    // rotation_overlap = 0s: the replaced key is refused at once.
    assert_eq!(with(KEY), "401");
    let output = keyward.output();
    assert!(output.contains("secret reload requested"));
    assert!(!output.contains(KEY) && !output.contains(ROTATED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_off() {
    let dir = TempDir::new("slow");
    let _secrets = secrets(&dir);
    let backend = TestBackend::start().await;
    let keyward = started(&dir, &backend, "100ms").await;
    let mut socket = TcpStream::connect(keyward.ingress).unwrap();
    socket.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    // keyward closes (possibly after a 408) once header_read_timeout (500 ms) passes.
    let _ = socket.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "connection held for {:?}",
        started.elapsed()
    );
    assert!(backend.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_streams_then_exits() {
    let dir = TempDir::new("term");
    let _secrets = secrets(&dir);
    let backend = TestBackend::start().await;
    let mut keyward = started(&dir, &backend, "100ms").await;
    let url = format!("http://{}/sse", keyward.ingress);
    let stream = Command::new("curl")
        .args(["-sSN", "--max-time", "20", "-H", &format!("X-Api-Key: {KEY}"), &url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let events = backend.next_stream().await;
    keyward.signal("TERM");
    // New connections are refused once the listener closes...
    let ready = format!("http://{}/", keyward.ingress);
    assert!(
        eventually(Duration::from_secs(5), || {
            let ready = ready.clone();
            async move { !curl(&["-o", "/dev/null", &ready]).status.success() }
        })
        .await
    );
    // ...while the in-flight stream still completes.
    events.send(Bytes::from_static(b"data: last\n\n")).await.unwrap();
    drop(events);
    let out =
        tokio::task::spawn_blocking(move || stream.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "data: last\n\n");
    let status = keyward.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_directory_and_an_empty_secret_are_named_as_such() {
    let dir = TempDir::new("bin-missing");
    let backend = TestBackend::start().await;
    let keyward = Keyward::start(&config(&dir, &backend, "100ms"));
    let missing = dir.path().join("secrets").display().to_string();
    let named = eventually(Duration::from_secs(10), || async {
        let output = keyward.output();
        output.lines().any(|line| line.contains(&missing) && line.contains("does not exist"))
    })
    .await;
    assert!(named, "the directory was never named:\n{}", keyward.output());

    let secrets = TempDir::new("bin-empty");
    std::os::unix::fs::symlink(secrets.path(), dir.path().join("secrets")).unwrap();
    secrets.write_secret("mcp-client-inspector", "\n");
    let empty = eventually(Duration::from_secs(10), || async {
        keyward.output().lines().any(|line| line.contains("secret file is empty"))
    })
    .await;
    assert!(empty, "the empty file was not reported:\n{}", keyward.output());
    // JSON lines: one `message` key each, and names as plain fields.
    for line in keyward.output().lines().filter(|l| l.starts_with('{')) {
        assert_eq!(line.matches("\"message\":").count(), 1, "{line}");
        let event: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert!(!event.get("missing").is_some_and(|m| m.is_string()), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_binary_writes_no_core() {
    let dir = TempDir::new("bin-core");
    let _secrets = secrets(&dir);
    let backend = TestBackend::start().await;
    let keyward = started(&dir, &backend, "100ms").await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", keyward.pid())).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
}
