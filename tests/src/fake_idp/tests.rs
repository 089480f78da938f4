//! The fake checked against what a relying party does with it, independently of keyward:
//! fetch the documents over HTTPS trusting only the fake's CA with SNI `localhost`, then
//! verify minted tokens with `ring::signature` and the published JWK components.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use ring::signature::{self, UnparsedPublicKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::jose::b64url_decode;
use super::*;

/// A GET of `url` (on the fake) over HTTPS: the status, headers and JSON body.
async fn get(idp: &FakeIdp, url: &str) -> (u16, http::HeaderMap, Value) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(idp.ca_pem().as_bytes()).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(idp.addr()).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let uri: http::Uri = url.parse().unwrap();
    assert_eq!(uri.authority().unwrap().as_str(), format!("localhost:{}", idp.addr().port()));
    let request = http::Request::get(uri.path())
        .header("host", uri.authority().unwrap().as_str())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let json = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap() };
    (parts.status.as_u16(), parts.headers, json)
}

/// The JWK with `kid` from a key set document.
fn jwk<'a>(jwks: &'a Value, kid: &str) -> &'a Value {
    let keys = jwks["keys"].as_array().unwrap();
    keys.iter().find(|k| k["kid"] == kid).unwrap_or_else(|| panic!("{kid} not in {jwks}"))
}

fn field(jwk: &Value, name: &str) -> Vec<u8> {
    b64url_decode(jwk[name].as_str().unwrap()).unwrap()
}

/// Verifies a compact JWS with `jwk` the way a relying party does, from the JWK alone.
fn verify(token: &str, jwk: &Value) -> Result<Value, ring::error::Unspecified> {
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = b64url_decode(signature).unwrap();
    let header: Value =
        serde_json::from_slice(&b64url_decode(input.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["kid"], jwk["kid"]);
    assert_eq!(header["typ"], "JWT");
    match (jwk["kty"].as_str().unwrap(), header["alg"].as_str().unwrap()) {
        ("RSA", alg) => {
            let params: &signature::RsaParameters = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                other => panic!("{other} with an RSA key"),
            };
            let key = signature::RsaPublicKeyComponents { n: field(jwk, "n"), e: field(jwk, "e") };
            key.verify(params, input.as_bytes(), &signature)?;
        }
        ("EC", "ES256") => {
            assert_eq!(jwk["crv"], "P-256");
            let point = [vec![4], field(jwk, "x"), field(jwk, "y")].concat();
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(input.as_bytes(), &signature)?;
        }
        (kty, alg) => panic!("{alg} with a {kty} key"),
    }
    let payload = input.split('.').nth(1).unwrap();
    Ok(serde_json::from_slice(&b64url_decode(payload).unwrap()).unwrap())
}

#[tokio::test]
async fn discovery_points_at_the_key_set_on_the_fake() {
    let idp = FakeIdp::start().await;
    let (status, headers, doc) = get(&idp, &idp.discovery_url()).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json; charset=utf-8");
    assert_eq!(headers["cache-control"], "max-age=86400, private");
    assert_eq!(doc["issuer"], idp.issuer());
    assert_eq!(doc["jwks_uri"], idp.jwks_uri());
    let tenant = idp.tenant_id();
    assert_eq!(
        doc["authorization_endpoint"],
        format!("https://localhost:{}/{tenant}/oauth2/v2.0/authorize", idp.addr().port())
    );
    assert_eq!(doc["subject_types_supported"], json!(["pairwise"]));
    assert!(doc["response_types_supported"].as_array().unwrap().contains(&json!("code")));
    assert!(doc["id_token_signing_alg_values_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("RS256")));
    // Every URL in it is on the fake.
    let origin = format!("https://localhost:{}/", idp.addr().port());
    for (name, value) in doc.as_object().unwrap() {
        if let Some(url) = value.as_str().filter(|v| v.starts_with("https://")) {
            assert!(url.starts_with(&origin), "{name} = {url}");
        }
    }
    assert_eq!(idp.discovery_fetches(), 1);
    assert_eq!(idp.jwks_fetches(), 0);

    let v1_url = format!("{}.well-known/openid-configuration", idp.issuer_v1());
    let (status, _, v1) = get(&idp, &v1_url).await;
    assert_eq!(status, 200);
    assert_eq!(v1["issuer"], idp.issuer_v1());
    assert_eq!(v1["jwks_uri"], idp.jwks_uri_v1());
    assert_eq!(idp.discovery_fetches(), 2);
}

#[tokio::test]
async fn minted_tokens_verify_against_the_published_jwk() {
    let idp = FakeIdp::start().await;
    let (status, _, jwks) = get(&idp, &idp.jwks_uri()).await;
    assert_eq!(status, 200);
    assert_eq!(jwks, idp.jwks());
    assert_eq!(idp.jwks_fetches(), 1);
    let claims = idp.claims("app-1");
    for alg in [Alg::Rs256, Alg::Ps256, Alg::Es256] {
        let kid = idp.signing_kid(alg.kty());
        let token = idp.token(&kid, alg, &claims);
        let verified = verify(&token, jwk(&jwks, &kid)).unwrap_or_else(|_| panic!("{alg:?}"));
        assert_eq!(verified, claims);
    }
    let rsa = jwk(&jwks, &idp.signing_kid(Kty::Rsa));
    assert!(rsa.get("alg").is_none(), "Entra's RSA keys carry no alg");
    assert_eq!(rsa["issuer"], idp.issuer());
    let ec = jwk(&jwks, &idp.signing_kid(Kty::Ec));
    assert_eq!(ec["alg"], "ES256");
    assert_eq!(idp.minted().len(), 3);
}

#[tokio::test]
async fn the_v1_key_set_has_the_same_keys_without_issuer() {
    let idp = FakeIdp::start().await;
    let (_, _, v1) = get(&idp, &idp.jwks_uri_v1()).await;
    let kid = idp.signing_kid(Kty::Rsa);
    assert!(jwk(&v1, &kid).get("issuer").is_none());
    assert_eq!(jwk(&v1, &kid)["n"], jwk(&idp.jwks(), &kid)["n"]);
    let token = idp.token(&kid, Alg::Rs256, &idp.claims_v1("app-1"));
    assert_eq!(verify(&token, jwk(&v1, &kid)).unwrap()["appid"], "app-1");
}

#[tokio::test]
async fn rotation_publishes_the_second_fixture_then_retires_the_first() {
    let idp = FakeIdp::start().await;
    let old = idp.signing_kid(Kty::Rsa);
    let unpublished = idp.new_key(Kty::Rsa);
    assert!(!idp.published().contains(&unpublished));
    assert_eq!(idp.signing_kid(Kty::Rsa), old, "an unpublished key does not sign by default");
    idp.publish(&unpublished);
    assert_eq!(idp.signing_kid(Kty::Rsa), unpublished);
    let (_, _, both) = get(&idp, &idp.jwks_uri()).await;
    assert_ne!(jwk(&both, &old)["n"], jwk(&both, &unpublished)["n"]);
    idp.retire(&old);
    let (_, _, after) = get(&idp, &idp.jwks_uri()).await;
    assert_eq!(after["keys"].as_array().unwrap().len(), 2);
    assert!(after["keys"].as_array().unwrap().iter().all(|k| k["kid"] != old));
    let token = idp.signed(Alg::Ps256, &idp.app_claims("app-1"));
    assert_eq!(verify(&token, jwk(&after, &unpublished)).unwrap()["roles"], json!(["mcp.tools"]));
}

#[tokio::test]
async fn down_answers_503_with_entra_s_transient_error_and_counts() {
    let idp = FakeIdp::start().await;
    idp.set_down(true);
    for url in [idp.discovery_url(), idp.jwks_uri()] {
        let (status, _, body) = get(&idp, &url).await;
        assert_eq!(status, 503);
        assert_eq!(body["error"], "temporarily_unavailable");
        assert_eq!(body["error_codes"], json!([90033]));
        assert!(body["error_description"].as_str().unwrap().starts_with("AADSTS90033: "));
    }
    assert_eq!((idp.discovery_fetches(), idp.jwks_fetches()), (1, 1));
    idp.set_down(false);
    assert_eq!(get(&idp, &idp.jwks_uri()).await.0, 200);
}

#[tokio::test]
async fn another_tenant_or_path_is_refused() {
    let idp = FakeIdp::start().await;
    let origin = format!("https://localhost:{}", idp.addr().port());
    let (status, _, body) =
        get(&idp, &format!("{origin}/common-but-not-ours/discovery/v2.0/keys")).await;
    assert_eq!(status, 400);
    assert_eq!(body["error_codes"], json!([90002]));
    assert_eq!(get(&idp, &format!("{origin}/{}/keys", idp.tenant_id())).await.0, 404);
}

/// The header and payload of a token, and its raw signature.
fn parts(token: &str) -> (Value, Value, Vec<u8>) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let json = |p: &str| serde_json::from_slice(&b64url_decode(p).unwrap()).unwrap();
    (json(parts[0]), json(parts[1]), b64url_decode(parts[2]).unwrap())
}

#[tokio::test]
async fn hostile_tokens_are_what_they_claim() {
    let idp = FakeIdp::start().await;
    let claims = idp.claims("app-1");
    let kid = idp.signing_kid(Kty::Rsa);
    let jwks = idp.jwks();

    let (header, payload, signature) = parts(&idp.unsigned(&claims));
    assert_eq!(header, json!({ "typ": "JWT", "alg": "none", "kid": kid }));
    assert_eq!(payload, claims);
    assert!(signature.is_empty());

    // HS256 keyed with the public key, in both forms, checked with ring's HMAC.
    let key = idp.shared.keys.lock().unwrap().get(&kid).unwrap();
    for (secret, bytes) in [
        (HmacSecret::SpkiDer, key.spki_der().to_vec()),
        (HmacSecret::SpkiPem, key.spki_pem().into_bytes()),
    ] {
        let token = idp.hs256_with_public_key(&kid, &claims, secret);
        let (input, tag) = token.rsplit_once('.').unwrap();
        let hmac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes);
        ring::hmac::verify(&hmac, input.as_bytes(), &b64url_decode(tag).unwrap()).unwrap();
        assert_eq!(parts(&token).0["alg"], "HS256");
    }

    let honest = idp.signed(Alg::Rs256, &claims);
    let tampered = idp.tampered(&honest);
    assert_eq!(tampered.split('.').next(), honest.split('.').next());
    assert_eq!(tampered.rsplit('.').next(), honest.rsplit('.').next());
    assert_eq!(parts(&tampered).1["exp"], claims["exp"].as_i64().unwrap() + 86_400);
    assert!(verify(&tampered, jwk(&jwks, &kid)).is_err());

    let stranger = idp.new_key(Kty::Rsa);
    let wrong_key = idp.token_claiming_kid(&kid, &stranger, Alg::Rs256, &claims);
    assert!(verify(&wrong_key, jwk(&jwks, &kid)).is_err());
    assert!(jwks["keys"].as_array().unwrap().iter().all(|k| k["kid"] != stranger));
    assert_eq!(idp.minted().len(), 6);
}

#[tokio::test]
async fn no_private_key_text_is_served() {
    let idp = FakeIdp::start().await;
    idp.rotate(Kty::Rsa);
    let texts = idp.private_key_texts();
    assert!(texts.len() > 30, "every line of three keys");
    let (_, _, v2) = get(&idp, &idp.jwks_uri()).await;
    let (_, _, v1) = get(&idp, &idp.jwks_uri_v1()).await;
    let served = format!("{v2}{v1}");
    for text in texts {
        assert!(!served.contains(&text));
    }
}
