//! The real `keyward` binary, started on `127.0.0.1:0` ports and stopped on drop.
//!
//! The binary is found beside the test executable (`target/<profile>/keyward`), which
//! `cargo test --workspace` builds because the proxy crate has integration tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::client::{get_with_key, http1, request, send};

/// Path of a workspace binary built by the same `cargo test` run.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/..");
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built; run `cargo test --workspace`", path.display());
    path
}

/// A running keyward process.
#[derive(Debug)]
pub struct Keyward {
    child: Child,
    /// The ingress address it reported.
    pub ingress: SocketAddr,
    /// The admin address it reported.
    pub admin: SocketAddr,
    /// The egress address it reported, when egress is configured.
    pub egress: Option<SocketAddr>,
    output: Arc<Mutex<String>>,
}

impl Keyward {
    /// Starts `keyward --config <config>` and waits for its "keyward listening" log line.
    pub fn start(config: &Path) -> Self {
        Self::start_with_env(config, &[])
    }

    /// Like [`Keyward::start`], with extra environment variables (identity endpoint and such).
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(binary("keyward"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "trace")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keyward");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for (stream, tx) in [
            (Box::new(stdout) as Box<dyn std::io::Read + Send>, Some(tx)),
            (Box::new(stderr), None),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(tx) = &tx {
                        if line.contains("keyward listening") {
                            let _ = tx.send(line.clone());
                        }
                    }
                    let mut out = output.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("keyward did not start:\n{}", output.lock().unwrap()));
        let fields: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        let field = |name: &str| -> Option<SocketAddr> { fields[name].as_str()?.parse().ok() };
        Self {
            ingress: field("ingress").expect("ingress address"),
            admin: field("admin").expect("admin address"),
            egress: field("egress"),
            child,
            output,
        }
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Whether its admin `/readyz` answers 200.
    pub async fn ready(&self) -> bool {
        self.readyz().await == StatusCode::OK
    }

    /// The status of its admin `/readyz`.
    pub async fn readyz(&self) -> StatusCode {
        send(&http1(), request(self.admin, "GET", "/readyz", &[], "")).await.status
    }

    /// Waits up to `limit` for `/readyz` to answer 200; true if it did.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        eventually(limit, || self.ready()).await
    }

    /// The status of a GET of the MCP path with `key` as its `X-Api-Key`.
    pub async fn status(&self, key: &str) -> StatusCode {
        get_with_key(self.ingress, "/mcp", key).await.status
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `HUP`, ...).
    pub fn signal(&self, name: &str) {
        let status =
            Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status();
        assert!(status.expect("kill").success());
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Keyward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `condition` every 20 ms until it holds or `limit` passes; true if it held.
pub async fn eventually<F, Fut>(limit: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fake's binary (`fake-azure`, `fake-idp`) started with its stdout piped: it announces
/// itself with one JSON line, and is killed on drop.
#[derive(Debug)]
pub struct ReadyChild {
    child: Child,
    /// The line it printed once ready, as printed.
    pub line: String,
    /// That line, parsed.
    pub ready: serde_json::Value,
}

impl ReadyChild {
    /// Spawns `command` (stdout and stderr piped) and waits for its ready line.
    pub async fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the fake's binary");
        let stdout = child.stdout.take().expect("stdout");
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await
        .expect("reader")
        .expect("the ready line");
        let ready = serde_json::from_str(&line).expect("one JSON line");
        Self { child, line, ready }
    }
}

impl Drop for ReadyChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
