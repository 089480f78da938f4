//! The control API of a [`FakeIdp`], plain HTTP on 127.0.0.1, for suites that drive the fake
//! from another process (the `fake-idp` binary). JSON in, JSON out; errors are
//! `{"error": "..."}` with 400 (bad request), 404 (no such key or route) or 405.
//!
//! - `POST /mint` `{"app_id": "..", "alg"?: "RS256"|"PS256"|"ES256"|"none"|"HS256",
//!   "kid"?: "..", "version"?: "2.0"|"1.0", "claims"?: {..}, "hmac_secret"?: "pem"|"der",
//!   "tamper"?: true}` -> `{"token", "kid", "alg", "claims"}`. The claims are
//!   [`FakeIdp::claims`] (or [`FakeIdp::claims_v1`]) of `app_id`, with each override set at
//!   the top level and each `null` override removed. `kid` defaults to the signing key of
//!   the algorithm's key type (RSA for `none` and `HS256`); `alg` to `RS256`, or the named
//!   key's type's default. `HS256` signs with the key's public key (`hmac_secret`, default
//!   `pem`), `none` leaves the signature empty, `tamper` adds a day to `exp` after signing.
//! - `POST /rotate` `{"kty"?: "RSA"|"EC", "publish"?: bool}` -> `{"kid", "published"}`: a new
//!   key, published unless `publish` is false (then its kid is one the key set lacks).
//! - `POST /publish` and `POST /retire` `{"kid": ".."}` -> `{"kid", "published"}`.
//! - `POST /down` and `POST /up` -> `{"down": bool}`.
//! - `GET /state` -> `{"issuer", "issuer_v1", "jwks_uri", "tenant_id", "resource_app_id",
//!   "published", "signing": {"RSA", "EC"}, "down", "jwks_fetches", "discovery_fetches",
//!   "now"}` (`now` in epoch seconds, the fake's clock for `exp` and `nbf` overrides).
//!
//! It listens on loopback only, and it never logs a token.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

use super::{serve, Alg, FakeIdp, HmacSecret, Kty};
use crate::fake_azure::wire::{self, Reply};

/// A running control API for one [`FakeIdp`]; it stops when dropped (the fake lives on
/// while any other handle holds it).
#[derive(Debug)]
pub struct ControlServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ControlServer {
    /// Serves the control API of `idp` on loopback port `port` (0: any free port).
    pub async fn start(idp: Arc<FakeIdp>, port: u16) -> std::io::Result<Self> {
        let listener = serve::bind(port).await?;
        let addr = listener.local_addr()?;
        let handler: serve::Handler = Arc::new(move |request| answer(&idp, &request));
        Ok(Self { addr, task: serve::spawn(listener, None, handler) })
    }

    /// Where it listens, `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A failed control request: the status and a message for the caller.
struct Refusal(StatusCode, String);

fn bad(message: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, message.into())
}

fn answer(idp: &FakeIdp, request: &Request<Bytes>) -> Reply {
    let result = match (request.method(), request.uri().path()) {
        (&Method::POST, "/mint") => body(request).and_then(|body| mint(idp, &body)),
        (&Method::POST, "/rotate") => body(request).and_then(|body| rotate(idp, &body)),
        (&Method::POST, "/publish") => body(request).and_then(|body| publish(idp, &body, true)),
        (&Method::POST, "/retire") => body(request).and_then(|body| publish(idp, &body, false)),
        (&Method::POST, "/down") => Ok(set_down(idp, true)),
        (&Method::POST, "/up") => Ok(set_down(idp, false)),
        (&Method::GET, "/state") => Ok(state(idp)),
        (_, "/mint" | "/rotate" | "/publish" | "/retire" | "/down" | "/up" | "/state") => {
            Err(Refusal(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into()))
        }
        _ => Err(Refusal(StatusCode::NOT_FOUND, "no such route".into())),
    };
    match result {
        Ok(body) => json(StatusCode::OK, &body),
        Err(Refusal(status, message)) => json(status, &json!({ "error": message })),
    }
}

fn json(status: StatusCode, body: &Value) -> Reply {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

/// The request's JSON object; an empty body is an empty object.
fn body(request: &Request<Bytes>) -> Result<Map<String, Value>, Refusal> {
    if request.body().iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(request.body()) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(bad("the body must be a JSON object")),
        Err(e) => Err(bad(format!("the body is not JSON: {e}"))),
    }
}

/// An optional string field.
fn text<'a>(body: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, Refusal> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("{name} must be a string"))),
    }
}

/// What `/mint` was asked to do with the signature.
enum Signing {
    Jws(Alg),
    None,
    Hs256(HmacSecret),
}

fn mint(idp: &FakeIdp, body: &Map<String, Value>) -> Result<Value, Refusal> {
    let app_id = text(body, "app_id")?.ok_or_else(|| bad("app_id is required"))?;
    let mut claims = match text(body, "version")?.unwrap_or("2.0") {
        "2.0" => idp.claims(app_id),
        "1.0" => idp.claims_v1(app_id),
        other => return Err(bad(format!("version {other:?}: 2.0 or 1.0"))),
    };
    match body.get("claims") {
        None | Some(Value::Null) => {}
        Some(Value::Object(overrides)) => {
            let object = claims.as_object_mut().expect("claims are an object");
            for (name, value) in overrides {
                match value {
                    Value::Null => object.remove(name),
                    value => object.insert(name.clone(), value.clone()),
                };
            }
        }
        Some(_) => return Err(bad("claims must be an object")),
    }
    let kid = text(body, "kid")?;
    let key_kty = match kid {
        Some(kid) => Some(kty_of(idp, kid)?),
        None => None,
    };
    let signing = match text(body, "alg")? {
        None => Signing::Jws(key_kty.unwrap_or(Kty::Rsa).default_alg()),
        Some("none") => Signing::None,
        Some("HS256") => Signing::Hs256(match text(body, "hmac_secret")?.unwrap_or("pem") {
            "pem" => HmacSecret::SpkiPem,
            "der" => HmacSecret::SpkiDer,
            other => return Err(bad(format!("hmac_secret {other:?}: pem or der"))),
        }),
        Some(name) => Signing::Jws(
            Alg::parse(name)
                .ok_or_else(|| bad(format!("alg {name:?}: RS256, PS256, ES256, none or HS256")))?,
        ),
    };
    let default_kty = match signing {
        Signing::Jws(alg) => alg.kty(),
        Signing::None | Signing::Hs256(_) => Kty::Rsa,
    };
    let kid = match kid {
        Some(kid) => kid.to_owned(),
        None => idp.shared.keys.lock().unwrap().signing(default_kty).map(|k| k.kid.clone()).ok_or(
            Refusal(StatusCode::NOT_FOUND, format!("no {} key is published", default_kty.name())),
        )?,
    };
    let (token, alg) = match signing {
        Signing::Jws(alg) => (idp.try_token(&kid, &kid, alg, &claims).map_err(bad)?, alg.name()),
        Signing::None => (idp.unsigned(&claims), "none"),
        Signing::Hs256(secret) => (idp.hs256_with_public_key(&kid, &claims, secret), "HS256"),
    };
    let token = match body.get("tamper") {
        None | Some(Value::Null | Value::Bool(false)) => token,
        Some(Value::Bool(true)) => idp.tampered(&token),
        Some(_) => return Err(bad("tamper must be a boolean")),
    };
    Ok(json!({ "token": token, "kid": kid, "alg": alg, "claims": claims }))
}

/// The type of key `kid`, or 404.
fn kty_of(idp: &FakeIdp, kid: &str) -> Result<Kty, Refusal> {
    let key = idp.shared.keys.lock().unwrap().get(kid);
    key.map(|k| k.kty()).ok_or_else(|| Refusal(StatusCode::NOT_FOUND, format!("no key {kid}")))
}

fn rotate(idp: &FakeIdp, body: &Map<String, Value>) -> Result<Value, Refusal> {
    let kty = match text(body, "kty")? {
        None => Kty::Rsa,
        Some(name) => Kty::parse(name).ok_or_else(|| bad(format!("kty {name:?}: RSA or EC")))?,
    };
    let publish = match body.get("publish") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(publish)) => *publish,
        Some(_) => return Err(bad("publish must be a boolean")),
    };
    let kid = if publish { idp.rotate(kty) } else { idp.new_key(kty) };
    Ok(json!({ "kid": kid, "published": idp.published() }))
}

fn publish(idp: &FakeIdp, body: &Map<String, Value>, on: bool) -> Result<Value, Refusal> {
    let kid = text(body, "kid")?.ok_or_else(|| bad("kid is required"))?;
    kty_of(idp, kid)?;
    if on {
        idp.publish(kid);
    } else {
        idp.retire(kid);
    }
    Ok(json!({ "kid": kid, "published": idp.published() }))
}

fn set_down(idp: &FakeIdp, down: bool) -> Value {
    idp.set_down(down);
    json!({ "down": down })
}

fn state(idp: &FakeIdp) -> Value {
    let signing = |kty| idp.shared.keys.lock().unwrap().signing(kty).map(|k| k.kid.clone());
    json!({
        "issuer": idp.issuer(),
        "issuer_v1": idp.issuer_v1(),
        "jwks_uri": idp.jwks_uri(),
        "tenant_id": idp.tenant_id(),
        "resource_app_id": idp.resource_app_id(),
        "published": idp.published(),
        "signing": { "RSA": signing(Kty::Rsa), "EC": signing(Kty::Ec) },
        "down": idp.is_down(),
        "jwks_fetches": idp.jwks_fetches(),
        "discovery_fetches": idp.discovery_fetches(),
        "now": wire::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{http1, request, send};

    async fn started() -> (Arc<FakeIdp>, ControlServer) {
        let idp = Arc::new(FakeIdp::start().await);
        let control = ControlServer::start(idp.clone(), 0).await.unwrap();
        (idp, control)
    }

    async fn post(control: &ControlServer, path: &str, body: &str) -> (StatusCode, Value) {
        let reply = send(&http1(), request(control.addr(), "POST", path, &[], body)).await;
        (reply.status, serde_json::from_slice(&reply.body).unwrap())
    }

    fn payload(token: &str) -> Value {
        let part = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&super::super::jose::b64url_decode(part).unwrap()).unwrap()
    }

    fn header(token: &str) -> Value {
        let part = token.split('.').next().unwrap();
        serde_json::from_slice(&super::super::jose::b64url_decode(part).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn mint_merges_overrides_and_removes_nulls() {
        let (idp, control) = started().await;
        let body = r#"{"app_id":"app-1","claims":{"aud":"api://x","scp":null,"roles":["r"]}}"#;
        let (status, reply) = post(&control, "/mint", body).await;
        assert_eq!(status, 200, "{reply}");
        let token = reply["token"].as_str().unwrap();
        let claims = payload(token);
        assert_eq!(claims["aud"], "api://x");
        assert_eq!(claims["azp"], "app-1");
        assert_eq!(claims["roles"], json!(["r"]));
        assert!(claims.get("scp").is_none());
        assert_eq!(claims, reply["claims"]);
        assert_eq!(header(token)["kid"], idp.signing_kid(Kty::Rsa));
        assert_eq!(header(token)["alg"], "RS256");
        assert_eq!(idp.minted(), [token]);
    }

    #[tokio::test]
    async fn mint_picks_the_key_for_the_algorithm_and_the_hostile_forms() {
        let (idp, control) = started().await;
        let (_, es) = post(&control, "/mint", r#"{"app_id":"a","alg":"ES256"}"#).await;
        assert_eq!(header(es["token"].as_str().unwrap())["kid"], idp.signing_kid(Kty::Ec));
        let ec = idp.signing_kid(Kty::Ec);
        let (_, by_kid) =
            post(&control, "/mint", &format!(r#"{{"app_id":"a","kid":"{ec}"}}"#)).await;
        assert_eq!(by_kid["alg"], "ES256");
        let (_, none) = post(&control, "/mint", r#"{"app_id":"a","alg":"none"}"#).await;
        assert!(none["token"].as_str().unwrap().ends_with('.'));
        let (_, hs) = post(&control, "/mint", r#"{"app_id":"a","alg":"HS256"}"#).await;
        assert_eq!(header(hs["token"].as_str().unwrap())["alg"], "HS256");
        let (_, v1) = post(&control, "/mint", r#"{"app_id":"a","version":"1.0"}"#).await;
        assert_eq!(payload(v1["token"].as_str().unwrap())["appid"], "a");
        let (_, tampered) = post(&control, "/mint", r#"{"app_id":"a","tamper":true}"#).await;
        let token = tampered["token"].as_str().unwrap();
        let exp = payload(token)["exp"].as_i64().unwrap();
        assert_eq!(exp, tampered["claims"]["exp"].as_i64().unwrap() + 86_400);
        let (status, _) = post(&control, "/mint", r#"{"app_id":"a","kid":"nope"}"#).await;
        assert_eq!(status, 404);
        let (status, _) = post(&control, "/mint", r#"{"alg":"RS256"}"#).await;
        assert_eq!(status, 400);
        let (status, _) = post(&control, "/mint", r#"{"app_id":"a","alg":"RS384"}"#).await;
        assert_eq!(status, 400);
        let (status, _) =
            post(&control, "/mint", &format!(r#"{{"app_id":"a","kid":"{ec}","alg":"PS256"}}"#))
                .await;
        assert_eq!(status, 400, "an EC key cannot sign PS256");
    }

    #[tokio::test]
    async fn rotate_retire_and_outage() {
        let (idp, control) = started().await;
        let old = idp.signing_kid(Kty::Rsa);
        let (status, rotated) = post(&control, "/rotate", "").await;
        assert_eq!(status, 200);
        let new = rotated["kid"].as_str().unwrap().to_owned();
        assert_eq!(idp.signing_kid(Kty::Rsa), new);
        let (_, retired) = post(&control, "/retire", &format!(r#"{{"kid":"{old}"}}"#)).await;
        assert!(!retired["published"].as_array().unwrap().contains(&json!(old)));
        let (_, hidden) = post(&control, "/rotate", r#"{"kty":"EC","publish":false}"#).await;
        assert!(!idp.published().contains(&hidden["kid"].as_str().unwrap().to_owned()));
        assert_eq!(post(&control, "/retire", r#"{"kid":"nope"}"#).await.0, 404);
        assert_eq!(post(&control, "/down", "").await.1, json!({ "down": true }));
        assert!(idp.is_down());
        post(&control, "/up", "").await;
        assert!(!idp.is_down());
        let state = send(&http1(), request(control.addr(), "GET", "/state", &[], "")).await;
        let state: Value = serde_json::from_slice(&state.body).unwrap();
        assert_eq!(state["signing"]["RSA"], json!(new));
        assert_eq!(state["issuer"], json!(idp.issuer()));
        assert_eq!(post(&control, "/nowhere", "").await.0, 404);
        assert_eq!(post(&control, "/state", "").await.0, 405);
        assert_eq!(post(&control, "/mint", "[1]").await.0, 400);
    }
}
