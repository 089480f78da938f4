//! Entra ID's token endpoint for the client credentials grant with a client assertion: what
//! AKS workload identity (the Azure SDK's `WorkloadIdentityCredential` and
//! `ClientAssertionCredential`) sends the federated service account token to.
//!
//! `POST /{tenant}/oauth2/v2.0/token`, `Content-Type: application/x-www-form-urlencoded`, body
//! `client_assertion=<federated token>&client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer&client_id=<app>&grant_type=client_credentials&scope=<resource>/.default`
//! answers 200 `{"token_type":"Bearer","expires_in":N,"ext_expires_in":N,"access_token":".."}`.
//! The token's audience is the scope without `/.default`, so a token for
//! `https://vault.test/.default` is one the vault accepts.
//!
//! Failures use Entra's error shape, `{"error","error_description":"AADSTSnnn: ... Trace ID:
//! .. Correlation ID: .. Timestamp: ..","error_codes":[n],"timestamp","trace_id",
//! "correlation_id","error_uri"}`, checked in this order:
//! - another tenant: 400 `invalid_request` AADSTS90002; a GET: 400 AADSTS900561;
//! - a missing `grant_type`, `client_id` or `scope`: 400 `invalid_request` AADSTS900144;
//! - another grant: 400 `unsupported_grant_type` AADSTS70003;
//! - an unknown `client_id`: 400 `unauthorized_client` AADSTS700016;
//! - a scope without `/.default` (or more than one): 400 `invalid_scope` AADSTS1002012;
//! - no assertion, or another assertion type: 401 `invalid_client` AADSTS7000216;
//! - an assertion other than the expected federated token: 401 `invalid_client`
//!   AADSTS700213 ("No matching federated identity record found for presented assertion
//!   subject ..."), as when a rotated-out or foreign token is presented.
//!
//! Only the federated token set last is accepted. Entra accepts any unexpired service account
//! token of the federated subject; being stricter lets a test see which content of the token
//! file was sent. The assertion is never echoed in a response.

use std::sync::Mutex;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, StatusCode};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::identity::Identity;
use super::wire::{self, Query, Reply};
use super::Endpoint;

/// The only assertion type a federated credential uses.
pub(super) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The service account the federated identity credential names, quoted in AADSTS700213.
const SUBJECT: &str = "system:serviceaccount:default:keyward";

/// The tenant, the application and the federated token it trusts.
pub(super) struct Entra {
    tenant: String,
    client_id: Mutex<String>,
    federated: Mutex<String>,
}

impl Entra {
    /// An endpoint for `tenant` with a random application id and federated token.
    pub(super) fn new(tenant: String) -> Self {
        Self {
            tenant,
            client_id: Mutex::new(wire::random_guid()),
            federated: Mutex::new(fake_service_account_token()),
        }
    }

    /// The application (client) id token requests must name.
    pub(super) fn client_id(&self) -> String {
        self.client_id.lock().unwrap().clone()
    }

    /// Sets the application (client) id token requests must name.
    pub(super) fn set_client_id(&self, client_id: &str) {
        *self.client_id.lock().unwrap() = client_id.to_owned();
    }

    /// The federated token accepted now.
    pub(super) fn federated_token(&self) -> String {
        self.federated.lock().unwrap().clone()
    }

    /// Accepts `token` from now on, and no other.
    pub(super) fn set_federated_token(&self, token: &str) {
        *self.federated.lock().unwrap() = token.to_owned();
    }

    /// Answers one request; issued tokens are recorded in `identity`'s registry.
    pub(super) fn handle(&self, identity: &Identity, request: &Request<Bytes>, now: i64) -> Reply {
        let segments: Vec<&str> = request.uri().path().split('/').collect();
        let tenant = match segments.as_slice() {
            ["", tenant, "oauth2", "v2.0", "token"] => *tenant,
            _ => return wire::empty(StatusCode::NOT_FOUND),
        };
        if !tenant.eq_ignore_ascii_case(&self.tenant) {
            return failure(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                90002,
                &format!(
                    "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
                ),
                now,
            );
        }
        if request.method() != Method::POST {
            let message = format!(
                "The endpoint only accepts POST requests. Received a {} request.",
                request.method()
            );
            return failure(StatusCode::BAD_REQUEST, "invalid_request", 900561, &message, now);
        }
        let form = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let body = if form { std::str::from_utf8(request.body()).ok() } else { None };
        let params = Query::parse(body);
        for name in ["grant_type", "client_id", "scope"] {
            if params.get(name).is_none_or(str::is_empty) {
                return missing(name, now);
            }
        }
        let grant = params.get("grant_type").unwrap_or_default();
        if grant != "client_credentials" {
            return failure(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{grant}'."),
                now,
            );
        }
        let client_id = params.get("client_id").unwrap_or_default();
        if !client_id.eq_ignore_ascii_case(&self.client_id()) {
            return failure(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                &format!(
                    "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                    self.tenant
                ),
                now,
            );
        }
        let scope = params.get("scope").unwrap_or_default();
        let resource = scope.strip_suffix("/.default").filter(|r| {
            !r.is_empty() && !r.contains(char::is_whitespace) && !r.ends_with("/.default")
        });
        let Some(resource) = resource else {
            return failure(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                1002012,
                &format!(
                    "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
                now,
            );
        };
        let assertion = params.get("client_assertion").filter(|a| !a.is_empty());
        let Some(assertion) =
            assertion.filter(|_| params.get("client_assertion_type") == Some(ASSERTION_TYPE))
        else {
            return failure(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
                now,
            );
        };
        let expected = self.federated_token();
        if !bool::from(assertion.as_bytes().ct_eq(expected.as_bytes())) {
            return failure(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                700213,
                &format!(
                    "No matching federated identity record found for presented assertion subject '{SUBJECT}'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
                ),
                now,
            );
        }
        let (token, lifetime) = identity.issue(Endpoint::Entra, resource, now);
        wire::json(
            StatusCode::OK,
            &json!({
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            }),
        )
    }
}

/// A 400 for a missing form field.
fn missing(name: &str, now: i64) -> Reply {
    failure(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900144,
        &format!("The request body must contain the following parameter: '{name}'."),
        now,
    )
}

/// Entra's error body: the description carries the AADSTS code, trace and correlation ids.
pub(crate) fn failure(
    status: StatusCode,
    error: &str,
    code: u32,
    message: &str,
    now: i64,
) -> Reply {
    let trace_id = wire::random_guid();
    let correlation_id = wire::random_guid();
    let timestamp = timestamp(now);
    wire::json(
        status,
        &json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {message} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}"
            ),
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

/// `YYYY-MM-DD hh:mm:ssZ` in UTC, as Entra writes it.
fn timestamp(epoch: i64) -> String {
    let (days, secs) = (epoch.div_euclid(86_400), epoch.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// An opaque stand-in for a projected service account token, shaped like a JWT
/// (`header.payload.signature`, base64url characters only).
pub(super) fn fake_service_account_token() -> String {
    format!(
        "eyJhbGciOiJSUzI1NiIsImtpZCI6ImZha2UifQ.{}.{}",
        wire::random_hex(48),
        wire::random_hex(64)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    fn form(entra: &Entra, assertion: &str) -> Vec<(&'static str, String)> {
        vec![
            ("client_assertion", assertion.to_owned()),
            ("client_assertion_type", ASSERTION_TYPE.to_owned()),
            ("client_id", entra.client_id()),
            ("grant_type", "client_credentials".to_owned()),
            ("scope", "https://vault.test/.default".to_owned()),
        ]
    }

    fn post(entra: &Entra, identity: &Identity, fields: &[(&str, String)]) -> Reply {
        let body: Vec<String> =
            fields.iter().map(|(k, v)| format!("{k}={}", wire::encode(v))).collect();
        let request = Request::post(format!("/{TENANT}/oauth2/v2.0/token"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Bytes::from(body.join("&")))
            .unwrap();
        entra.handle(identity, &request, 1_000)
    }

    async fn json_of(reply: Reply) -> serde_json::Value {
        serde_json::from_slice(&reply.into_body().collect().await.unwrap().to_bytes()).unwrap()
    }

    #[tokio::test]
    async fn the_federated_token_buys_a_vault_token() {
        let (entra, identity) = (Entra::new(TENANT.into()), Identity::new());
        identity.set_lifetime(60);
        let reply = post(&entra, &identity, &form(&entra, &entra.federated_token()));
        assert_eq!(reply.status(), 200);
        let body = json_of(reply).await;
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 60);
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(
            identity.check(token, "https://vault.test", 1_059),
            super::super::identity::TokenCheck::Valid
        );
        assert_eq!(identity.issued_by(Endpoint::Entra), 1);
        assert_eq!(identity.issued_by(Endpoint::Identity), 0);
    }

    #[tokio::test]
    async fn a_wrong_assertion_gets_700213_without_echoing_it() {
        let (entra, identity) = (Entra::new(TENANT.into()), Identity::new());
        let old = entra.federated_token();
        entra.set_federated_token("rotated.token.value");
        let reply = post(&entra, &identity, &form(&entra, &old));
        assert_eq!(reply.status(), 401);
        let body = json_of(reply).await;
        assert_eq!(body["error"], "invalid_client");
        assert_eq!(body["error_codes"], json!([700213]));
        assert!(body["error_description"].as_str().unwrap().starts_with("AADSTS700213: "));
        assert!(!body.to_string().contains(&old));
        assert_eq!(identity.tokens().len(), 0);
        let accepted = post(&entra, &identity, &form(&entra, "rotated.token.value"));
        assert_eq!(accepted.status(), 200);
    }

    #[tokio::test]
    async fn each_field_is_checked() {
        let (entra, identity) = (Entra::new(TENANT.into()), Identity::new());
        let good = form(&entra, &entra.federated_token());
        let cases: [(&str, Option<&str>, u16, u32); 8] = [
            ("grant_type", None, 400, 900144),
            ("grant_type", Some("password"), 400, 70003),
            ("client_id", Some("00000000-0000-0000-0000-000000000000"), 400, 700016),
            ("scope", None, 400, 900144),
            ("scope", Some("https://vault.test"), 400, 1002012),
            ("client_assertion_type", Some("jwt"), 401, 7000216),
            ("client_assertion", None, 401, 7000216),
            ("client_id", None, 400, 900144),
        ];
        for (name, value, status, code) in cases {
            let fields: Vec<(&str, String)> = good
                .iter()
                .filter_map(|(k, v)| match (*k == name, value) {
                    (false, _) => Some((*k, v.clone())),
                    (true, Some(other)) => Some((*k, other.to_owned())),
                    (true, None) => None,
                })
                .collect();
            let reply = post(&entra, &identity, &fields);
            assert_eq!(reply.status(), status, "{name}={value:?}");
            assert_eq!(json_of(reply).await["error_codes"], json!([code]), "{name}={value:?}");
        }
        assert!(identity.tokens().is_empty());
    }

    #[tokio::test]
    async fn another_tenant_or_a_get_is_refused() {
        let (entra, identity) = (Entra::new(TENANT.into()), Identity::new());
        let request = Request::post("/other/oauth2/v2.0/token").body(Bytes::new()).unwrap();
        let reply = entra.handle(&identity, &request, 0);
        assert_eq!(json_of(reply).await["error_codes"], json!([90002]));
        let request = Request::get(format!("/{TENANT}/oauth2/v2.0/token")).body(Bytes::new());
        let reply = entra.handle(&identity, &request.unwrap(), 0);
        assert_eq!(json_of(reply).await["error_codes"], json!([900561]));
        let request = Request::post("/x/oauth2/token").body(Bytes::new()).unwrap();
        assert_eq!(entra.handle(&identity, &request, 0).status(), 404);
    }

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00Z");
        assert_eq!(timestamp(1_745_283_671), "2025-04-22 01:01:11Z");
        assert_eq!(timestamp(951_782_400), "2000-02-29 00:00:00Z");
    }
}
