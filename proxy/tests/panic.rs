//! A panic's message goes through the same redaction as every log line: this test runs itself
//! again as a child process that installs keyward's telemetry, learns a sentinel secret, and
//! panics with the sentinel in the message; the parent reads everything the child wrote.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::config::TelemetryConfig;
use keyward::secrets::Secret;
use keyward::secrets::{Loaded, SecretStore};
use keyward::telemetry::redact::Redactor;

const SENTINEL: &str = "panic-sentinel-9f8e7d6c5b4a";
const CHILD: &str = "KEYWARD_PANIC_TEST_CHILD";

fn child() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let redactor = Arc::new(Redactor::default());
        let store = SecretStore::new(vec!["k".into()], Duration::ZERO);
        store.apply(
            vec![("k".into(), Loaded::Value(Secret::from_string(SENTINEL.into())))],
            Instant::now(),
        );
        keyward::secrets::Consumer::rebuild(&*redactor, &store.snapshot());
        let _telemetry = keyward::telemetry::init(&TelemetryConfig::default(), redactor);
        let task = tokio::spawn(async { panic!("request failed with key {SENTINEL}") });
        assert!(task.await.is_err(), "the task panicked");
    });
}

#[test]
fn a_panic_message_is_logged_redacted() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_panic_message_is_logged_redacted", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert!(output.status.success(), "the child failed");
    let all = String::from_utf8_lossy(&[output.stdout, output.stderr].concat()).into_owned();
    assert!(all.contains("keyward::panic"), "the panic was not logged:\n{all}");
    assert!(all.contains("request failed with key [REDACTED]"), "{all}");
    assert!(!all.contains(SENTINEL), "the panic message leaked the secret");
}
