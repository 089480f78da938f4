//! Black-box tests of the AKS workload identity path: the real `keyward` binary trades the
//! federated service account token in `AZURE_FEDERATED_TOKEN_FILE` for an Entra ID token at the
//! fake's token endpoint (`secrets.authority_host`, HTTPS with the fake's test CA), then reads
//! its secrets from the fake Key Vault with it (challenge auth with resource verification on),
//! exactly as in production. The vault's name `kv.vault.test` is pinned to 127.0.0.1 by
//! `secrets.vault_address`; the Entra endpoint is addressed as `https://127.0.0.1:PORT`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use keyward_tests::client::{self, request, send};
use keyward_tests::config::Builder;
use keyward_tests::dir::TempDir;
use keyward_tests::fake_azure::{Endpoint, FakeAzure};
use keyward_tests::leak::assert_absent;
use keyward_tests::process::{binary, eventually, Keyward};

const OLD: &str = "wi-client-key-old-8f7e6d5c4b3a2910";
const NEW: &str = "wi-client-key-new-0a1b2c3d4e5f6a7b";
const APIM: &str = "wi-apim-key-1c2d3e4f5a6b7c8d";

/// The federated token file's name in the projected volume.
const TOKEN_FILE: &str = "azure-identity-token";

struct Setup {
    dir: TempDir,
    tokens: TempDir,
    backend: keyward_tests::backend::TestBackend,
}

impl Setup {
    async fn new() -> Self {
        Self {
            dir: TempDir::new("wi"),
            tokens: TempDir::new("wi-token"),
            backend: keyward_tests::backend::TestBackend::start().await,
        }
    }

    /// A keyward configuration reading `azure`'s vault with `credential`, Entra ID at the fake.
    fn config(&self, azure: &FakeAzure, credential: &str) -> Builder {
        azure
            .keyward_config(&self.dir, self.backend.addr, self.backend.addr)
            .set("secrets.authority_host", azure.entra_authority())
            .set("secrets.credential", credential)
    }

    /// Writes the federated token file as the kubelet does (atomic replace, mode 0600).
    fn write_token(&self, token: &str) -> PathBuf {
        self.tokens.write_secret(TOKEN_FILE, token);
        self.tokens.path().join(TOKEN_FILE)
    }

    /// Starts keyward with `credential = "auto"` and the variables the AKS webhook injects
    /// (no `IDENTITY_ENDPOINT`), the file holding `token`.
    fn start(&self, azure: &FakeAzure, token: &str) -> Keyward {
        let file = self.write_token(token);
        let (tenant, client) = (azure.tenant_id(), azure.entra_client_id());
        Keyward::start_with_env(
            &self.config(azure, "auto").write(&self.dir),
            &[
                ("AZURE_FEDERATED_TOKEN_FILE", path(&file)),
                ("AZURE_TENANT_ID", &tenant),
                ("AZURE_CLIENT_ID", &client),
            ],
        )
    }
}

fn path(file: &Path) -> &str {
    file.to_str().expect("UTF-8 temp path")
}

/// A vault holding the client key and the APIM key.
async fn azure_with_secrets() -> FakeAzure {
    let azure = FakeAzure::start().await;
    azure.set_secret("mcp-client-agent", OLD);
    azure.set_secret("apim-subscription-key", APIM);
    azure
}

fn assert_no_secret_in(output: &str) {
    assert_absent(output, "a Key Vault secret value", &[OLD, NEW, APIM]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_picks_workload_identity_and_serves_with_the_vault_s_key() {
    let setup = Setup::new().await;
    let azure = azure_with_secrets().await;
    let federated = azure.federated_token();
    let keyward = setup.start(&azure, &federated);
    assert!(eventually(Duration::from_secs(15), || keyward.ready()).await, "{}", keyward.output());
    assert_eq!(keyward.status(OLD).await, 200);
    assert_eq!(keyward.status("wrong").await, 401);

    let egress = keyward.egress.expect("egress configured");
    let reply =
        send(&client::http1(), request(egress, "GET", "/health/activity/2025-02-02", &[], ""))
            .await;
    assert_eq!(reply.status, 200);
    assert_eq!(setup.backend.seen().last().unwrap().headers["ocp-apim-subscription-key"], APIM);

    // The production path ran: a token from Entra ID (none from the identity endpoint), a
    // challenge without a token, then bearer requests the vault accepted.
    assert!(azure.tokens_issued_by(Endpoint::Entra) >= 1);
    assert_eq!(azure.tokens_issued_by(Endpoint::Identity), 0);
    let requests = azure.requests();
    let entra: Vec<_> = requests.iter().filter(|r| r.endpoint == Endpoint::Entra).collect();
    let token_path = format!("/{}/oauth2/v2.0/token", azure.tenant_id());
    assert!(entra.iter().all(|r| r.method == "POST" && r.path == token_path), "{entra:?}");
    assert!(entra.iter().all(|r| r.status == 200), "{entra:?}");
    assert!(requests.iter().any(|r| r.endpoint == Endpoint::Vault && r.status == 401));
    assert!(requests.iter().any(|r| r.endpoint == Endpoint::Vault && r.authorization));

    let output = keyward.output();
    assert!(output.contains(r#""credential":"workload_identity""#), "{output}");
    assert_absent(&output, "the federated token", &[federated]);
    assert_absent(&output, "an access token", &azure.issued_tokens());
    assert_no_secret_in(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_client_id_names_the_application_without_azure_client_id() {
    let setup = Setup::new().await;
    let azure = azure_with_secrets().await;
    let app = "0f1e2d3c-4b5a-6978-8a9b-acbdcedfe0f1";
    azure.set_entra_client_id(app);
    let file = setup.write_token(&azure.federated_token());
    let tenant = azure.tenant_id();
    let keyward = Keyward::start_with_env(
        &setup.config(&azure, "workload_identity").set("secrets.client_id", app).write(&setup.dir),
        &[("AZURE_FEDERATED_TOKEN_FILE", path(&file)), ("AZURE_TENANT_ID", &tenant)],
    );
    assert!(eventually(Duration::from_secs(15), || keyward.ready()).await, "{}", keyward.output());
    assert_eq!(keyward.status(OLD).await, 200);
    assert!(azure.tokens_issued_by(Endpoint::Entra) >= 1);
    assert_no_secret_in(&keyward.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_federated_token_keeps_keyward_not_ready_and_is_never_printed() {
    let setup = Setup::new().await;
    let azure = azure_with_secrets().await;
    let wrong = "eyJhbGciOiJSUzI1NiJ9.d3Jvbmctc2VydmljZS1hY2NvdW50.c2lnbmF0dXJlLXdyb25n";
    let keyward = setup.start(&azure, wrong);

    let logged = eventually(Duration::from_secs(15), || async {
        keyward.output().contains("Key Vault credential failed")
    })
    .await;
    assert!(logged, "no credential failure logged:\n{}", keyward.output());
    // Several refreshes later it is still not ready, and clients are turned away.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(keyward.readyz().await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(keyward.status(OLD).await, StatusCode::SERVICE_UNAVAILABLE);

    let requests = azure.requests();
    let entra: Vec<_> = requests.iter().filter(|r| r.endpoint == Endpoint::Entra).collect();
    assert!(!entra.is_empty() && entra.iter().all(|r| r.status == 401), "{entra:?}");
    assert!(!requests.iter().any(|r| r.authorization), "a bearer request without a token");
    assert_eq!(azure.tokens_issued(), 0);

    let output = keyward.output();
    // Entra's error code is named; its description and the assertion are not.
    assert!(output.contains("http 401 700213"), "{output}");
    assert!(!output.contains("AADSTS"), "{output}");
    assert_absent(&output, "the federated token", &[wrong.into(), azure.federated_token()]);
    assert_no_secret_in(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_federated_token_file_is_used_for_the_next_token_request() {
    let setup = Setup::new().await;
    let azure = azure_with_secrets().await;
    // Tokens this short are renewed by the SDK before every vault request.
    azure.set_token_lifetime(1);
    let first = azure.federated_token();
    let keyward = setup.start(&azure, &first);
    assert!(eventually(Duration::from_secs(15), || keyward.ready()).await, "{}", keyward.output());

    // The kubelet rotates the projected token; Entra now refuses the old one.
    let second = "eyJhbGciOiJSUzI1NiJ9.cm90YXRlZC1zZXJ2aWNlLWFjY291bnQ.c2lnbmF0dXJlLXR3bw";
    setup.write_token(second);
    azure.set_federated_token(second);
    let issued = azure.tokens_issued_by(Endpoint::Entra);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    azure.set_secret("mcp-client-agent", NEW);
    let rotated =
        eventually(Duration::from_secs(10), || async { keyward.status(NEW).await == 200 }).await;
    assert!(rotated, "no reload with the rotated federated token:\n{}", keyward.output());
    // Only the second token is accepted now: every token issued since came from it.
    assert!(azure.tokens_issued_by(Endpoint::Entra) > issued, "no token with the new file");
    assert!(keyward.ready().await);
    assert_eq!(keyward.status(OLD).await, 200, "the replaced key within its overlap");

    let output = keyward.output();
    assert_absent(&output, "the federated token", &[first, second.into()]);
    assert_absent(&output, "an access token", &azure.issued_tokens());
    assert_no_secret_in(&output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_without_its_variables_fails_at_start_naming_them() {
    let setup = Setup::new().await;
    let azure = azure_with_secrets().await;
    let config = setup.config(&azure, "workload_identity").write(&setup.dir);
    let file = setup.write_token(&azure.federated_token());
    let tenant = azure.tenant_id();
    let client = azure.entra_client_id();
    let missing_file = setup.tokens.path().join("absent");
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[("AZURE_FEDERATED_TOKEN_FILE", path(&file)), ("AZURE_CLIENT_ID", &client)],
            "AZURE_TENANT_ID",
        ),
        (
            &[("AZURE_FEDERATED_TOKEN_FILE", path(&file)), ("AZURE_TENANT_ID", &tenant)],
            "AZURE_CLIENT_ID",
        ),
        (
            &[
                ("AZURE_FEDERATED_TOKEN_FILE", path(&missing_file)),
                ("AZURE_TENANT_ID", &tenant),
                ("AZURE_CLIENT_ID", &client),
            ],
            "cannot read the federated token file",
        ),
    ];
    for (env, expected) in cases {
        let out = Command::new(binary("keyward"))
            .arg("--config")
            .arg(&config)
            .env_remove("AZURE_TENANT_ID")
            .env_remove("AZURE_CLIENT_ID")
            .env_remove("AZURE_FEDERATED_TOKEN_FILE")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run keyward");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{expected}: started anyway");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
        assert_absent(&stderr, "the federated token", &[azure.federated_token()]);
    }
    assert!(azure.requests().is_empty());
}
