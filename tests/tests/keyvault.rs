//! Black-box tests of the Key Vault path: the real `keyward` binary reads its secrets from a
//! fake Key Vault over HTTPS (a test CA, challenge auth with resource verification on) with a
//! token from a fake Container Apps identity endpoint, exactly as in production. The vault's
//! name `kv.vault.test` is pinned to 127.0.0.1 by `secrets.vault_address`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use keyward_tests::backend::TestBackend;
use keyward_tests::client::{self, request, send};
use keyward_tests::dir::TempDir;
use keyward_tests::fake_azure::{Attributes, FakeAzure};
use keyward_tests::process::{eventually, Keyward};

const OLD: &str = "kv-client-key-old-3c2b1a0f9e8d7c6b";
const NEW: &str = "kv-client-key-new-5a4b3c2d1e0f9a8b";
const APIM: &str = "kv-apim-key-7e6d5c4b3a29180f";

struct Setup {
    dir: TempDir,
    backend: TestBackend,
    upstream: TestBackend,
}

impl Setup {
    async fn new() -> Self {
        Self {
            dir: TempDir::new("kv"),
            backend: TestBackend::start().await,
            upstream: TestBackend::start().await,
        }
    }

    fn config(&self, azure: &FakeAzure, overlap: &str) -> PathBuf {
        azure
            .keyward_config(&self.dir, self.backend.addr, self.upstream.addr)
            .set("secrets.credential", "managed_identity")
            .set("secrets.client_id", "11111111-2222-3333-4444-555555555555")
            .set("secrets.rotation_overlap", overlap)
            .write(&self.dir)
    }

    fn start(&self, azure: &FakeAzure, overlap: &str) -> Keyward {
        let endpoint = azure.identity_endpoint();
        let header = azure.identity_header();
        Keyward::start_with_env(
            &self.config(azure, overlap),
            &[("IDENTITY_ENDPOINT", &endpoint), ("IDENTITY_HEADER", &header)],
        )
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn assert_no_secret_in(output: &str) {
    keyward_tests::leak::assert_absent(output, "a secret value", &[OLD, NEW, APIM]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyward_loads_from_key_vault_and_injects_the_vault_s_key() {
    let setup = Setup::new().await;
    let azure = FakeAzure::start().await;
    azure.set_secret("mcp-client-agent", OLD);
    azure.set_secret("apim-subscription-key", APIM);
    azure.expect_client_id(Some("11111111-2222-3333-4444-555555555555"));
    let keyward = setup.start(&azure, "1h");
    assert!(eventually(Duration::from_secs(15), || keyward.ready()).await, "{}", keyward.output());
    assert_eq!(keyward.status(OLD).await, 200);
    assert_eq!(keyward.status("wrong").await, 401);

    let egress = keyward.egress.expect("egress configured");
    let reply =
        send(&client::http1(), request(egress, "GET", "/health/activity/2025-02-02", &[], ""))
            .await;
    assert_eq!(reply.status, 200);
    let seen = setup.upstream.seen();
    assert_eq!(seen[0].headers["ocp-apim-subscription-key"], APIM);

    // The production path ran: a challenge without a token, then bearer requests.
    let requests = azure.requests();
    assert!(requests.iter().any(|r| !r.authorization && r.status == 401), "no challenge seen");
    assert!(requests.iter().any(|r| r.authorization && r.status == 200));
    assert!(azure.tokens_issued() >= 1);
    assert_no_secret_in(&keyward.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyward_becomes_ready_when_key_vault_appears_later() {
    let setup = Setup::new().await;
    let azure = FakeAzure::start().await;
    azure.set_secret("mcp-client-agent", OLD);
    azure.set_secret("apim-subscription-key", APIM);
    azure.set_available(false);
    let keyward = setup.start(&azure, "1h");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!keyward.ready().await);
    assert_eq!(keyward.status(OLD).await, StatusCode::SERVICE_UNAVAILABLE);
    azure.set_available(true);
    assert!(eventually(Duration::from_secs(20), || keyward.ready()).await, "{}", keyward.output());
    assert_eq!(keyward.status(OLD).await, 200);
}

/// A vault holding the client's OLD key and the APIM key, and a keyward that has loaded them.
async fn ready_with_old_key() -> (Setup, FakeAzure, Keyward) {
    let setup = Setup::new().await;
    let azure = FakeAzure::start().await;
    azure.set_secret("mcp-client-agent", OLD);
    azure.set_secret("apim-subscription-key", APIM);
    let keyward = setup.start(&azure, "1h");
    assert!(eventually(Duration::from_secs(15), || keyward.ready()).await);
    (setup, azure, keyward)
}

/// Requests with `key` in a loop until `stop`; counts failures.
fn hammer(
    keyward: &Keyward,
    key: &'static str,
    stop: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<(usize, usize)> {
    let addr = keyward.ingress;
    tokio::spawn(async move {
        let http = client::http1();
        let (mut ok, mut failed) = (0, 0);
        while stop.load(Ordering::SeqCst) == 0 {
            match send(&http, request(addr, "GET", "/mcp", &[("x-api-key", key)], "")).await.status
            {
                StatusCode::OK => ok += 1,
                _ => failed += 1,
            }
        }
        (ok, failed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_both_keys_through_the_overlap_with_no_failed_request() {
    let (_setup, azure, keyward) = ready_with_old_key().await;

    let stop = Arc::new(AtomicUsize::new(0));
    let old_clients = hammer(&keyward, OLD, stop.clone());
    // Key Vault's `created` has one-second resolution: let the new version be visibly newer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    azure.set_secret("mcp-client-agent", NEW);
    assert!(
        eventually(Duration::from_secs(10), || async { keyward.status(NEW).await == 200 }).await
    );
    let new_clients = hammer(&keyward, NEW, stop.clone());
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(1, Ordering::SeqCst);
    let (old_ok, old_failed) = old_clients.await.unwrap();
    let (new_ok, new_failed) = new_clients.await.unwrap();
    assert!(old_ok > 0 && new_ok > 0);
    assert_eq!((old_failed, new_failed), (0, 0), "requests failed during the overlap");
    assert_no_secret_in(&keyward.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_key_is_refused_after_the_overlap_also_after_a_restart() {
    let setup = Setup::new().await;
    let azure = FakeAzure::start().await;
    azure.set_secret("mcp-client-agent", OLD);
    azure.set_secret("apim-subscription-key", APIM);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    azure.set_secret("mcp-client-agent", NEW);
    // A keyward started now learns from the versions' attributes that OLD was replaced a
    // moment ago, and keeps accepting it for the 3 s overlap, then refuses it.
    let keyward = setup.start(&azure, "3s");
    assert!(eventually(Duration::from_secs(15), || keyward.ready()).await);
    assert_eq!(keyward.status(NEW).await, 200);
    assert_eq!(keyward.status(OLD).await, 200, "the replaced key within its overlap");
    let refused =
        eventually(Duration::from_secs(10), || async { keyward.status(OLD).await == 401 }).await;
    assert!(refused, "the replaced key outlived the overlap");
    assert_eq!(keyward.status(NEW).await, 200);
}

/// Two versions written within one second, `NEW` the vault's latest; the id order is made the
/// one in which a listing shows `OLD` first, which is the order a tie would fall back to.
async fn two_versions_in_one_second(azure: &FakeAzure) {
    loop {
        // Start just after a second turns, so both land in it.
        let fraction = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_millis();
        tokio::time::sleep(Duration::from_millis(u64::from(1010 - fraction))).await;
        let second = now();
        let old = azure.set_secret("mcp-client-agent", OLD);
        let new = azure.set_secret("mcp-client-agent", NEW);
        if old < new && now() == second {
            return;
        }
        azure.delete_secret("mcp-client-agent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_version_never_comes_back_when_a_newer_one_expired_on_arrival() {
    let setup = Setup::new().await;
    let azure = FakeAzure::start().await;
    azure.set_secret("apim-subscription-key", APIM);
    two_versions_in_one_second(&azure).await;
    let keyward = setup.start(&azure, "2s");
    assert!(eventually(Duration::from_secs(15), || keyward.ready()).await);
    assert_eq!(keyward.status(NEW).await, 200, "the vault's latest is current");

    // A third version whose `exp` is already past becomes the vault's latest.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = Attributes { expires: Some(now() - 10), ..Attributes::default() };
    azure.set_secret_with("mcp-client-agent", "kv-client-key-expired-0f1e2d3c4b5a", expired);
    // Past the overlap, the replaced key is refused and the current one still accepted.
    let refused =
        eventually(Duration::from_secs(10), || async { keyward.status(OLD).await == 401 }).await;
    assert!(refused, "the superseded key is accepted again");
    for _ in 0..5 {
        assert_eq!(keyward.status(NEW).await, 200, "the current key was refused");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A restart settles the tie the same way.
    drop(keyward);
    let keyward = setup.start(&azure, "2s");
    assert!(eventually(Duration::from_secs(15), || keyward.ready()).await);
    assert_eq!(keyward.status(NEW).await, 200);
    assert_no_secret_in(&keyward.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_and_expired_versions_are_never_accepted() {
    let setup = Setup::new().await;
    let azure = FakeAzure::start().await;
    let old = azure.set_secret("mcp-client-agent", OLD);
    azure.set_secret("apim-subscription-key", APIM);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = Attributes { expires: Some(now() - 10), ..Attributes::default() };
    azure.set_secret_with("mcp-client-agent", NEW, expired);
    let keyward = setup.start(&azure, "1h");
    assert!(eventually(Duration::from_secs(15), || keyward.ready()).await);
    assert_eq!(keyward.status(NEW).await, 401, "an expired version was accepted");
    assert_eq!(keyward.status(OLD).await, 200);

    // Disabling the only valid version revokes it at the next refresh.
    azure.update_version(
        "mcp-client-agent",
        &old,
        Attributes { enabled: false, ..Attributes::default() },
    );
    let revoked = eventually(Duration::from_secs(10), || async {
        keyward.status(OLD).await != StatusCode::OK
    })
    .await;
    assert!(revoked, "a disabled version stayed accepted");
    assert!(!keyward.ready().await, "no valid version: not ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_keeps_the_last_good_snapshot_with_no_failed_request() {
    let (_setup, azure, keyward) = ready_with_old_key().await;

    let stop = Arc::new(AtomicUsize::new(0));
    let clients = hammer(&keyward, OLD, stop.clone());
    azure.stop().await;
    // Longer than the SDK's own retries, so keyward's refresh sees the outage.
    let reported = eventually(Duration::from_secs(20), || async {
        keyward.output().contains("secret source unavailable")
    })
    .await;
    assert!(reported, "the outage was not reported");
    azure.throttle_next(3);
    azure.resume().await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(1, Ordering::SeqCst);
    let (ok, failed) = clients.await.unwrap();
    assert!(ok > 0);
    assert_eq!(failed, 0, "requests failed while Key Vault was down");
    assert!(keyward.ready().await);
    let output = keyward.output();
    let metrics = send(&client::http1(), request(keyward.admin, "GET", "/metrics", &[], "")).await;
    assert!(metrics.text().contains("keyward_secret_snapshot_age_seconds "));
    assert_no_secret_in(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_renewed() {
    let setup = Setup::new().await;
    let azure = FakeAzure::start().await;
    azure.set_secret("mcp-client-agent", OLD);
    azure.set_secret("apim-subscription-key", APIM);
    azure.set_token_lifetime(1);
    let keyward = setup.start(&azure, "1h");
    assert!(eventually(Duration::from_secs(15), || keyward.ready()).await);
    let issued = azure.tokens_issued();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    azure.set_secret("mcp-client-agent", NEW);
    let rotated =
        eventually(Duration::from_secs(10), || async { keyward.status(NEW).await == 200 }).await;
    assert!(rotated, "no reload after the token expired:\n{}", keyward.output());
    assert!(azure.tokens_issued() > issued, "the token was never renewed");
}
