//! The fake Azure (Key Vault + managed identity endpoint) checked against the REST shapes
//! keyward relies on, with a plain hyper + rustls client that trusts only the fake's CA and
//! connects to 127.0.0.1 with SNI `kv.vault.test`, over HTTP/1.1 and h2.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keyward_tests::client::{self, Reply};
use keyward_tests::dir::TempDir;
use keyward_tests::fake_azure::{Attributes, Endpoint, FakeAzure};
use keyward_tests::process::ReadyChild;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const API: &str = "api-version=2025-07-01";
const VALUE: &str = "canary-kv-value-7d41c09e2b";

/// Which protocol the vault client speaks.
#[derive(Clone, Copy, Debug)]
enum Proto {
    H1,
    H2,
}

/// A TLS connector trusting only `ca_pem`, offering one ALPN protocol.
fn connector(ca_pem: &str, proto: Proto) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM")).expect("add CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![match proto {
        Proto::H1 => b"http/1.1".to_vec(),
        Proto::H2 => b"h2".to_vec(),
    }];
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to the fake vault at `addr` with SNI `kv.vault.test`.
async fn tls(
    fake: &FakeAzure,
    proto: Proto,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(fake.vault_addr()).await?;
    let name = ServerName::try_from("kv.vault.test").expect("server name");
    connector(&fake.ca_pem(), proto).connect(name, tcp).await
}

fn vault_request(fake: &FakeAzure, path: &str, token: Option<&str>) -> Request<Empty<Bytes>> {
    let authority = format!("kv.vault.test:{}", fake.vault_addr().port());
    let mut builder = Request::builder().uri(format!("https://{authority}{path}"));
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder.body(Empty::new()).expect("request")
}

/// One vault request on a new connection.
async fn vault_get(fake: &FakeAzure, proto: Proto, path: &str, token: Option<&str>) -> Reply {
    let io = TokioIo::new(tls(fake, proto).await.expect("TLS to the vault"));
    let mut request = vault_request(fake, path, token);
    let response = match proto {
        Proto::H1 => {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(io).await.expect("h1 handshake");
            tokio::spawn(conn);
            // HTTP/1.1 wants an origin-form target and a Host header.
            let host = request.uri().authority().expect("authority").to_string();
            *request.uri_mut() = path.parse().expect("path");
            request.headers_mut().insert("host", host.parse().expect("host"));
            sender.send_request(request).await.expect("h1 response")
        }
        Proto::H2 => {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .expect("h2 handshake");
            tokio::spawn(conn);
            sender.send_request(request).await.expect("h2 response")
        }
    };
    client::collect(response).await
}

fn json(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body).unwrap_or_else(|_| panic!("JSON body: {}", reply.text()))
}

/// A request to the identity endpoint with `query` and, if given, `x-identity-header`.
async fn identity_get(fake: &FakeAzure, query: &str, header: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> =
        header.map(|h| vec![("x-identity-header", h), ("metadata", "true")]).unwrap_or_default();
    let request =
        client::request(fake.identity_addr(), "GET", &format!("/msi/token?{query}"), &headers, "");
    client::send(&client::http1(), request).await
}

/// A token for `resource` (as the Azure SDK asks: form-encoded).
async fn token_for(fake: &FakeAzure, resource: &str) -> String {
    let resource = resource.replace(':', "%3A").replace('/', "%2F");
    let reply = identity_get(
        fake,
        &format!("api-version=2019-08-01&resource={resource}"),
        Some(&fake.identity_header()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    json(&reply)["access_token"].as_str().expect("access_token").to_owned()
}

async fn token(fake: &FakeAzure) -> String {
    token_for(fake, &fake.challenge_resource()).await
}

fn error_code(reply: &Reply) -> String {
    json(reply)["error"]["code"].as_str().expect("error.code").to_owned()
}

#[tokio::test]
async fn an_unauthenticated_request_gets_key_vaults_challenge() {
    let fake = FakeAzure::start().await;
    fake.set_secret("db-password", VALUE);
    for proto in [Proto::H1, Proto::H2] {
        let reply = vault_get(&fake, proto, &format!("/secrets/db-password/?{API}"), None).await;
        assert_eq!(reply.status, 401);
        let challenge = reply.headers["www-authenticate"].to_str().unwrap();
        let tenant = challenge
            .strip_prefix("Bearer authorization=\"https://login.windows.net/")
            .and_then(|rest| rest.strip_suffix("\", resource=\"https://vault.test\""))
            .unwrap_or_else(|| panic!("challenge shape: {challenge}"));
        assert_eq!(tenant.len(), 36, "tenant GUID: {tenant}");
        assert_eq!(
            json(&reply),
            serde_json::json!({"error": {"code": "Unauthorized",
                "message": "AKV10000: Request is missing a Bearer or PoP token."}})
        );
        assert!(!reply.text().contains(VALUE));
    }
    assert_eq!(fake.challenge_resource(), "https://vault.test");
}

#[tokio::test]
async fn a_managed_identity_token_reads_the_secret_over_h1_and_h2() {
    let fake = FakeAzure::start().await;
    let version = fake.set_secret("db-password", VALUE);
    assert_eq!(version.len(), 32);
    let reply = identity_get(
        &fake,
        "api-version=2019-08-01&resource=https%3A%2F%2Fvault.test",
        Some(&fake.identity_header()),
    )
    .await;
    assert_eq!(reply.status, 200);
    let body = json(&reply);
    let expires_on = body["expires_on"].as_str().expect("expires_on is a JSON string");
    let expires_on: i64 = expires_on.parse().expect("epoch seconds");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
        as i64;
    assert!((now + 3590..=now + 3610).contains(&expires_on));
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], "https://vault.test");
    assert!(body["client_id"].is_string());
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(fake.tokens_issued(), 1);
    assert_eq!(fake.issued_tokens(), std::slice::from_ref(&token));

    let host = format!("kv.vault.test:{}", fake.vault_addr().port());
    for proto in [Proto::H1, Proto::H2] {
        for path in [
            format!("/secrets/db-password/?{API}"),
            format!("/secrets/db-password?{API}"),
            format!("/secrets/DB-PASSWORD/{version}?{API}"),
        ] {
            let reply = vault_get(&fake, proto, &path, Some(&token)).await;
            assert_eq!(reply.status, 200, "{proto:?} {path}: {}", reply.text());
            let body = json(&reply);
            assert_eq!(body["value"], VALUE);
            assert_eq!(body["id"], format!("https://{host}/secrets/db-password/{version}"));
            let attributes = &body["attributes"];
            assert_eq!(attributes["enabled"], true);
            assert!(attributes["created"].is_i64());
            assert!(attributes["updated"].is_i64());
            assert!(attributes.get("exp").is_none());
            assert_eq!(attributes["recoverableDays"], 90);
            assert_eq!(attributes["recoveryLevel"], "Recoverable+Purgeable");
        }
    }

    let requests = fake.requests();
    let vault: Vec<_> = requests.iter().filter(|r| r.endpoint == Endpoint::Vault).collect();
    assert_eq!(vault.len(), 6);
    assert!(vault.iter().all(|r| r.authorization && r.status == 200));
    assert!(vault.iter().any(|r| r.version == http::Version::HTTP_2));
    assert!(vault.iter().any(|r| r.version == http::Version::HTTP_11));
    let recorded = format!("{requests:?}");
    assert!(!recorded.contains(&token), "a recorded request holds the token");
    assert!(!recorded.contains(VALUE));
    assert!(!format!("{fake:?}").contains(&fake.identity_header()));
}

#[tokio::test]
async fn versions_are_paged_with_next_links_on_the_vault_host() {
    let fake = FakeAzure::start().await;
    let mut versions: Vec<String> =
        (0..5).map(|i| fake.set_secret("api-key", &format!("{VALUE}-{i}"))).collect();
    versions.sort();
    let token = token(&fake).await;
    let prefix = format!("https://kv.vault.test:{}", fake.vault_addr().port());

    let mut path = format!("/secrets/api-key/versions?{API}");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let reply = vault_get(&fake, Proto::H2, &path, Some(&token)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(!reply.text().contains(VALUE), "a list holds no values");
        let body = json(&reply);
        pages += 1;
        for item in body["value"].as_array().expect("value array") {
            let id = item["id"].as_str().unwrap();
            let version = id
                .strip_prefix(&format!("{prefix}/secrets/api-key/"))
                .unwrap_or_else(|| panic!("id {id}"));
            seen.push(version.to_owned());
            assert_eq!(item["attributes"]["enabled"], true);
            assert!(item.get("value").is_none());
        }
        match body["nextLink"].as_str() {
            None => {
                assert!(body["nextLink"].is_null());
                break;
            }
            Some(next) => {
                let rest = next.strip_prefix(&prefix).expect("nextLink on the vault host");
                assert!(rest.contains("$skiptoken="), "{next}");
                // The Azure SDK re-encodes the query: `$` arrives as `%24`.
                path = rest.replace("$skiptoken", "%24skiptoken");
            }
        }
    }
    assert_eq!(pages, 3, "five versions, two a page");
    assert_eq!(seen, versions, "every version once, in version-id order");

    let all = vault_get(
        &fake,
        Proto::H1,
        &format!("/secrets/api-key/versions?{API}&maxresults=25"),
        Some(&token),
    )
    .await;
    let body = json(&all);
    assert_eq!(body["value"].as_array().unwrap().len(), 5);
    assert!(body["nextLink"].is_null());

    let bad = vault_get(
        &fake,
        Proto::H1,
        &format!("/secrets/api-key/versions?{API}&maxresults=26"),
        Some(&token),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(error_code(&bad), "BadParameter");
}

#[tokio::test]
async fn secrets_are_listed_by_name_with_pages() {
    let fake = FakeAzure::start().await;
    for name in ["c", "a", "b"] {
        fake.set_secret(name, VALUE);
    }
    let token = token(&fake).await;
    let prefix = format!("https://kv.vault.test:{}", fake.vault_addr().port());
    let first = json(&vault_get(&fake, Proto::H1, &format!("/secrets?{API}"), Some(&token)).await);
    let ids: Vec<&str> = first["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [format!("{prefix}/secrets/a"), format!("{prefix}/secrets/b")]);
    let next = first["nextLink"].as_str().expect("a second page");
    let second =
        json(&vault_get(&fake, Proto::H1, next.strip_prefix(&prefix).unwrap(), Some(&token)).await);
    assert_eq!(second["value"][0]["id"], format!("{prefix}/secrets/c"));
    assert!(second["nextLink"].is_null());
}

#[tokio::test]
async fn unknown_names_and_versions_are_404_secret_not_found() {
    let fake = FakeAzure::start().await;
    fake.set_secret("present", VALUE);
    fake.set_secret("gone", VALUE);
    fake.delete_secret("gone");
    let token = token(&fake).await;
    for path in [
        format!("/secrets/absent/?{API}"),
        format!("/secrets/present/{}?{API}", "0".repeat(32)),
        format!("/secrets/gone/?{API}"),
    ] {
        let reply = vault_get(&fake, Proto::H1, &path, Some(&token)).await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(error_code(&reply), "SecretNotFound");
        let message = json(&reply)["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.starts_with("A secret with (name/id) "), "{message}");
    }
}

#[tokio::test]
async fn a_disabled_version_is_403_even_as_the_latest() {
    let fake = FakeAzure::start().await;
    let old = fake.set_secret("rotating", "old-value");
    let new = fake.set_secret("rotating", VALUE);
    let disabled = Attributes { enabled: false, ..Attributes::default() };
    fake.update_version("rotating", &new, disabled);
    let token = token(&fake).await;
    for path in [format!("/secrets/rotating/?{API}"), format!("/secrets/rotating/{new}?{API}")] {
        let reply = vault_get(&fake, Proto::H2, &path, Some(&token)).await;
        assert_eq!(reply.status, 403, "{path}");
        assert_eq!(
            json(&reply),
            serde_json::json!({"error": {"code": "Forbidden",
                "message": "Operation get is not allowed on a disabled secret.",
                "innererror": {"code": "SecretDisabled"}}})
        );
        assert!(!reply.text().contains(VALUE));
    }
    let reply =
        vault_get(&fake, Proto::H2, &format!("/secrets/rotating/{old}?{API}"), Some(&token)).await;
    assert_eq!(json(&reply)["value"], "old-value");
    fake.update_version("rotating", &new, Attributes::default());
    let reply =
        vault_get(&fake, Proto::H2, &format!("/secrets/rotating/?{API}"), Some(&token)).await;
    assert_eq!(json(&reply)["value"], VALUE);
}

#[tokio::test]
async fn expiry_and_not_before_are_reported_never_enforced() {
    let fake = FakeAzure::start().await;
    let attrs =
        Attributes { enabled: true, not_before: Some(4_000_000_000), expires: Some(1_000_000_000) };
    fake.set_secret_with("expired", VALUE, attrs);
    let token = token(&fake).await;
    let reply = vault_get(&fake, Proto::H1, &format!("/secrets/expired?{API}"), Some(&token)).await;
    assert_eq!(reply.status, 200);
    let body = json(&reply);
    assert_eq!(body["attributes"]["exp"], 1_000_000_000);
    assert_eq!(body["attributes"]["nbf"], 4_000_000_000i64);
}

#[tokio::test]
async fn throttled_requests_get_429_with_retry_after() {
    let fake = FakeAzure::start().await;
    fake.set_secret("s", VALUE);
    let token = token(&fake).await;
    fake.throttle_next(2);
    for _ in 0..2 {
        let reply = vault_get(&fake, Proto::H1, &format!("/secrets/s?{API}"), Some(&token)).await;
        assert_eq!(reply.status, 429);
        assert_eq!(reply.headers["retry-after"], "1");
        assert_eq!(error_code(&reply), "Throttled");
    }
    let reply = vault_get(&fake, Proto::H1, &format!("/secrets/s?{API}"), Some(&token)).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn expired_unknown_and_misaddressed_tokens_get_401_with_the_challenge() {
    let fake = FakeAzure::start().await;
    fake.set_secret("s", VALUE);
    let path = format!("/secrets/s?{API}");

    fake.set_token_lifetime(0);
    let stale = token(&fake).await;
    fake.set_token_lifetime(3600);
    let other_audience = token_for(&fake, "https://vault.azure.net").await;
    let good = token(&fake).await;

    let cases = [
        (stale.as_str(), "[TokenExpired]"),
        ("not-a-token-issued-here", "[BearerReadAccessTokenFailed]"),
        (other_audience.as_str(), "AKV10022: Invalid audience"),
    ];
    for (token, message) in cases {
        let reply = vault_get(&fake, Proto::H1, &path, Some(token)).await;
        assert_eq!(reply.status, 401, "{message}");
        assert!(reply.headers.contains_key("www-authenticate"));
        assert_eq!(error_code(&reply), "Unauthorized");
        let text = json(&reply)["error"]["message"].as_str().unwrap().to_owned();
        assert!(text.starts_with(message), "{text}");
    }

    assert_eq!(vault_get(&fake, Proto::H1, &path, Some(&good)).await.status, 200);
    fake.expire_tokens();
    assert_eq!(vault_get(&fake, Proto::H1, &path, Some(&good)).await.status, 401);
}

#[tokio::test]
async fn a_missing_api_version_is_400_bad_parameter() {
    let fake = FakeAzure::start().await;
    let token = token(&fake).await;
    let reply = vault_get(&fake, Proto::H1, "/secrets/s", Some(&token)).await;
    assert_eq!(reply.status, 400);
    assert_eq!(error_code(&reply), "BadParameter");
}

#[tokio::test]
async fn the_identity_endpoint_refuses_a_wrong_header_and_unassigned_identities() {
    let fake = FakeAzure::start().await;
    let query = "api-version=2019-08-01&resource=https%3A%2F%2Fvault.test";
    for header in [None, Some("wrong"), Some("")] {
        let reply = identity_get(&fake, query, header).await;
        assert_eq!(reply.status, 403, "{header:?}");
        assert!(reply.body.is_empty());
    }
    assert_eq!(fake.tokens_issued(), 0);

    let header = fake.identity_header();
    fake.expect_client_id(Some("11111111-2222-3333-4444-555555555555"));
    let reply = identity_get(&fake, query, Some(&header)).await;
    assert_eq!(reply.status, 400);
    assert!(json(&reply)["message"].is_string());
    let reply = identity_get(
        &fake,
        &format!("{query}&client_id=11111111-2222-3333-4444-555555555555"),
        Some(&header),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(json(&reply)["client_id"], "11111111-2222-3333-4444-555555555555");

    fake.expect_client_id(None);
    let reply = identity_get(&fake, &format!("{query}&client_id=abc"), Some(&header)).await;
    assert_eq!(reply.status, 400);
    assert_eq!(fake.tokens_issued(), 1);
    let recorded = fake.requests();
    assert!(recorded.iter().all(|r| r.endpoint == Endpoint::Identity));
    assert!(!format!("{recorded:?}").contains(&header));
}

#[tokio::test]
async fn unavailable_closes_connections_and_recovers() {
    let fake = FakeAzure::start().await;
    fake.set_secret("s", VALUE);
    let token = token(&fake).await;
    let path = format!("/secrets/s?{API}");

    // An idle h2 connection, opened while up, is closed by the outage.
    let io = TokioIo::new(tls(&fake, Proto::H2).await.unwrap());
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
    let conn = tokio::spawn(conn);
    let ok = sender.send_request(vault_request(&fake, &path, Some(&token))).await.unwrap();
    assert_eq!(ok.status(), 200);

    fake.set_available(false);
    let closed = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the open connection is closed");
    let _ = closed.expect("connection task");
    assert!(tls(&fake, Proto::H1).await.is_err(), "TLS to a vault that is down");
    let identity = client::http1()
        .request(client::request(
            fake.identity_addr(),
            "GET",
            "/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fvault.test",
            &[("x-identity-header", &fake.identity_header())],
            "",
        ))
        .await;
    assert!(identity.is_err(), "identity endpoint is down too");
    assert!(fake.dropped_connections() >= 3);

    fake.set_available(true);
    let reply = vault_get(&fake, Proto::H1, &path, Some(&token)).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn stop_refuses_connections_and_resume_keeps_everything() {
    let fake = FakeAzure::start().await;
    let version = fake.set_secret("s", VALUE);
    let token = token(&fake).await;
    let (vault, identity) = (fake.vault_addr(), fake.identity_addr());

    fake.stop().await;
    let refused = TcpStream::connect(vault).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(TcpStream::connect(identity).await.is_err());

    fake.resume().await.expect("resume on the same ports");
    assert_eq!(fake.vault_addr(), vault);
    let reply =
        vault_get(&fake, Proto::H2, &format!("/secrets/s/{version}?{API}"), Some(&token)).await;
    assert_eq!(reply.status, 200, "same CA, same token, same secret");
}

#[tokio::test]
async fn a_new_fake_can_take_over_the_same_ports() {
    let first = FakeAzure::start().await;
    let (vault, identity) = (first.vault_addr().port(), first.identity_addr().port());
    drop(first);
    let second = FakeAzure::start_on(vault, identity).await.expect("same ports");
    assert_eq!(second.vault_addr().port(), vault);
    assert_eq!(second.identity_endpoint(), format!("http://127.0.0.1:{identity}/msi/token"));
    assert_eq!(second.vault_url(), format!("https://kv.vault.test:{vault}/"));
    second.set_secret("s", VALUE);
    let token = token(&second).await;
    let reply = vault_get(&second, Proto::H1, &format!("/secrets/s?{API}"), Some(&token)).await;
    assert_eq!(reply.status, 200);
}

/// The `fake-azure` binary, killed on drop.
#[tokio::test]
async fn the_binary_serves_secrets_loaded_from_files() {
    let dir = TempDir::new("fake-azure");
    dir.write_secret("db", &format!("{VALUE}\n"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_fake-azure"));
    command
        .arg("--dir")
        .arg(dir.path())
        .arg("--secret")
        .arg(format!("db-password=@{}", dir.path().join("db").display()));
    let child = ReadyChild::spawn(command).await;
    let ready = &child.ready;
    let ca = std::fs::read_to_string(ready["ca_file"].as_str().unwrap()).expect("ca.pem");
    let vault_addr: SocketAddr = ready["vault_addr"].as_str().unwrap().parse().unwrap();
    let endpoint = ready["identity_endpoint"].as_str().unwrap();
    let header = ready["identity_header"].as_str().unwrap();
    assert_eq!(ready["vault_url"], format!("https://kv.vault.test:{}/", vault_addr.port()));
    assert!(!child.line.contains(VALUE));

    let identity: SocketAddr = endpoint
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/msi/token"))
        .expect("endpoint shape")
        .parse()
        .unwrap();
    let reply = client::send(
        &client::http1(),
        client::request(
            identity,
            "GET",
            "/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fvault.test",
            &[("x-identity-header", header)],
            "",
        ),
    )
    .await;
    let token = json(&reply)["access_token"].as_str().unwrap().to_owned();

    let tcp = TcpStream::connect(vault_addr).await.unwrap();
    let tls = connector(&ca, Proto::H1)
        .connect(ServerName::try_from("kv.vault.test").unwrap(), tcp)
        .await
        .expect("TLS with the written CA");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let request = Request::builder()
        .uri(format!("/secrets/db-password/?{API}"))
        .header("host", format!("kv.vault.test:{}", vault_addr.port()))
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let reply = client::collect(sender.send_request(request).await.unwrap()).await;
    assert_eq!(json(&reply)["value"], VALUE, "trailing newline removed");
}

#[test]
fn the_binary_refuses_secret_values_on_the_command_line() {
    let dir = TempDir::new("fake-azure-argv");
    let output = Command::new(env!("CARGO_BIN_EXE_fake-azure"))
        .arg("--dir")
        .arg(dir.path())
        .arg("--secret")
        .arg(format!("db-password={VALUE}"))
        .output()
        .expect("run fake-azure");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("@FILE"), "{stderr}");
    assert!(!stderr.contains(VALUE), "the value is echoed: {stderr}");
    assert!(output.stdout.is_empty());
}
