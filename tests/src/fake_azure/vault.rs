//! Key Vault's secrets data plane, read-only: the bearer challenge, get by name or version,
//! and the paged lists, with Key Vault's status codes and JSON bodies.
//!
//! Checks run in this order: throttling (429), `api-version` (400 `BadParameter`), bearer
//! token (401 with the `WWW-Authenticate` challenge), then the route.
//!
//! - `GET /secrets/{name}[/]`: the latest version, enabled or not (403 when disabled).
//! - `GET /secrets/{name}/{version}[/]`: that version.
//!   200 `{"value","id":"https://{host}/secrets/{name}/{version}","attributes":{..}}`.
//! - `GET /secrets/{name}/versions`: `{"value":[{"id","attributes"}],"nextLink":url|null}`,
//!   versions in version-id order, no values.
//! - `GET /secrets`: `{"value":[{"id":"https://{host}/secrets/{name}","attributes"}],"nextLink"}`,
//!   with the attributes of each secret's latest version.
//!
//! Lists hold [`DEFAULT_PAGE`] items unless `maxresults` (1 to 25) says otherwise; `nextLink`
//! is a full URL on the request's host carrying `$skiptoken` and `maxresults`.
//! `attributes` is `{"enabled","created","updated","nbf"?,"exp"?,"recoverableDays":90,
//! "recoveryLevel":"Recoverable+Purgeable"}`, times in epoch seconds; `exp` and `nbf` are
//! reported and never enforced, as in Key Vault. It never logs a value or a token.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use http::header::{AUTHORIZATION, HOST, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use serde_json::{json, Value};

use super::identity::{Identity, TokenCheck};
use super::store::{Secret, Store, Version};
use super::wire::{self, Query, Reply};

/// The audience tokens must carry, as announced in the challenge's `resource=`. The Azure SDK
/// requires the vault's host to end with `.` + this host (`kv.vault.test`).
pub(super) const CHALLENGE_RESOURCE: &str = "https://vault.test";

/// The host name the vault's certificate and URL use.
pub(super) const VAULT_HOST: &str = "kv.vault.test";

/// Items per list page when the client does not send `maxresults`: small, so paging is
/// exercised by every list (Key Vault's own default is 25).
pub(super) const DEFAULT_PAGE: usize = 2;

/// The largest `maxresults` Key Vault accepts.
const MAX_PAGE: usize = 25;

const MISSING_TOKEN: &str = "AKV10000: Request is missing a Bearer or PoP token.";

/// The vault: its secrets, pending throttles and tenant.
pub(super) struct Vault {
    pub(super) store: Mutex<Store>,
    throttle: AtomicUsize,
    tenant: String,
    default_host: String,
}

impl Vault {
    /// An empty vault reached at `default_host` when a request names no host.
    pub(super) fn new(default_host: String) -> Self {
        Self {
            store: Mutex::new(Store::default()),
            throttle: AtomicUsize::new(0),
            tenant: wire::random_guid(),
            default_host,
        }
    }

    /// The tenant named in the challenge's `authorization=`.
    pub(super) fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Makes the next `n` requests answer 429.
    pub(super) fn throttle_next(&self, n: usize) {
        self.throttle.store(n, Ordering::SeqCst);
    }

    /// Answers one request.
    pub(super) fn handle<B>(&self, identity: &Identity, request: &Request<B>, now: i64) -> Reply {
        let throttled = self
            .throttle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if throttled {
            let mut reply = error(
                StatusCode::TOO_MANY_REQUESTS,
                "Throttled",
                "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
            );
            reply.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
            return reply;
        }
        let query = Query::parse(request.uri().query());
        let Some(api_version) = query.get("api-version").filter(|v| !v.is_empty()) else {
            return error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                "The request is missing the required query parameter 'api-version'.",
            );
        };
        if let Err(message) = authenticate(identity, request.headers(), now) {
            return self.challenge(&message);
        }
        if request.method() != Method::GET {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "BadParameter",
                "This vault is read-only: only GET is served.",
            );
        }
        let host = host(request).unwrap_or_else(|| self.default_host.clone());
        let context = Context { host: &host, api_version, query: &query };
        let path = request.uri().path().trim_matches('/');
        let segments: Vec<&str> = path.split('/').collect();
        let store = self.store.lock().unwrap();
        match segments.as_slice() {
            ["secrets"] => list_secrets(&store, &context),
            ["secrets", name] => get(&store, &context, name, None),
            ["secrets", name, "versions"] => list_versions(&store, &context, name),
            ["secrets", name, version] => get(&store, &context, name, Some(version)),
            _ => error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "The requested resource does not exist on this vault.",
            ),
        }
    }

    /// 401 with the challenge the Azure SDK reads its scope from.
    fn challenge(&self, message: &str) -> Reply {
        let mut reply = error(StatusCode::UNAUTHORIZED, "Unauthorized", message);
        let challenge = format!(
            "Bearer authorization=\"https://login.windows.net/{}\", resource=\"{CHALLENGE_RESOURCE}\"",
            self.tenant
        );
        reply
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_str(&challenge).expect("ASCII challenge"));
        reply
    }
}

/// What a route needs from the request.
struct Context<'a> {
    host: &'a str,
    api_version: &'a str,
    query: &'a Query,
}

/// Checks the bearer token; the error is the 401 message Key Vault gives for the case.
fn authenticate(identity: &Identity, headers: &HeaderMap, now: i64) -> Result<(), String> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    let Some(token) = token else {
        return Err(MISSING_TOKEN.to_owned());
    };
    match identity.check(token, CHALLENGE_RESOURCE, now) {
        TokenCheck::Valid => Ok(()),
        TokenCheck::Unknown => {
            Err("[BearerReadAccessTokenFailed] Error validating token: 'S2S12005'.".to_owned())
        }
        TokenCheck::Expired => Err("[TokenExpired] Error validating token: 'S2S12086'.".to_owned()),
        TokenCheck::WrongAudience(found) => Err(format!(
            "AKV10022: Invalid audience. Expected {CHALLENGE_RESOURCE}, found: {found}."
        )),
    }
}

/// The host (and port) the client addressed: the h2 authority or the Host header.
fn host<B>(request: &Request<B>) -> Option<String> {
    if let Some(authority) = request.uri().authority() {
        return Some(authority.to_string());
    }
    let host = request.headers().get(HOST)?.to_str().ok()?;
    Some(host.to_owned())
}

fn get(store: &Store, context: &Context<'_>, name: &str, version: Option<&str>) -> Reply {
    let found = store.secret(name).and_then(|secret| match version {
        None => Some((secret, secret.latest())),
        Some(id) => secret.version(id).map(|v| (secret, v)),
    });
    let Some((secret, version)) = found else {
        let what = match version {
            None => name.to_owned(),
            Some(v) => format!("{name}/{v}"),
        };
        return not_found(&what);
    };
    if !version.attributes.enabled {
        return wire::json(
            StatusCode::FORBIDDEN,
            &json!({"error": {
                "code": "Forbidden",
                "message": "Operation get is not allowed on a disabled secret.",
                "innererror": {"code": "SecretDisabled"},
            }}),
        );
    }
    wire::json(
        StatusCode::OK,
        &json!({
            "value": version.value,
            "id": version_id(context.host, secret, version),
            "attributes": attributes(version),
        }),
    )
}

fn list_secrets(store: &Store, context: &Context<'_>) -> Reply {
    let (max, after) = match paging(context.query) {
        Ok(paging) => paging,
        Err(message) => return error(StatusCode::BAD_REQUEST, "BadParameter", message),
    };
    let page = store.secrets_page(after.as_deref(), max);
    let value: Vec<Value> = page
        .items
        .iter()
        .map(|secret| {
            json!({
                "id": format!("https://{}/secrets/{}", context.host, secret.name),
                "attributes": attributes(secret.latest()),
            })
        })
        .collect();
    let next = page.next.map(|marker| next_link(context, "secrets", &marker, max));
    wire::json(StatusCode::OK, &json!({"value": value, "nextLink": next}))
}

fn list_versions(store: &Store, context: &Context<'_>, name: &str) -> Reply {
    let (max, after) = match paging(context.query) {
        Ok(paging) => paging,
        Err(message) => return error(StatusCode::BAD_REQUEST, "BadParameter", message),
    };
    let Some(secret) = store.secret(name) else {
        return wire::json(StatusCode::OK, &json!({"value": [], "nextLink": null}));
    };
    let page = Store::versions_page(secret, after.as_deref(), max);
    let value: Vec<Value> = page
        .items
        .iter()
        .map(|version| {
            json!({
                "id": version_id(context.host, secret, version),
                "attributes": attributes(version),
            })
        })
        .collect();
    let path = format!("secrets/{}/versions", secret.name);
    let next = page.next.map(|marker| next_link(context, &path, &marker, max));
    wire::json(StatusCode::OK, &json!({"value": value, "nextLink": next}))
}

/// Page size and continuation marker from `maxresults` and `$skiptoken`, or why not.
fn paging(query: &Query) -> Result<(usize, Option<String>), &'static str> {
    let max = match query.get("maxresults") {
        None => DEFAULT_PAGE,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => return Err("The value of maxresults must be an integer between 1 and 25."),
        },
    };
    let after = match query.get("$skiptoken") {
        None => None,
        Some(token) => match wire::unhex(token).and_then(|b| String::from_utf8(b).ok()) {
            Some(marker) => Some(marker),
            None => return Err("The $skiptoken is not valid."),
        },
    };
    Ok((max, after))
}

/// The URL of the page after `marker`, on the host the client used.
fn next_link(context: &Context<'_>, path: &str, marker: &str, max: usize) -> String {
    format!(
        "https://{}/{path}?api-version={}&$skiptoken={}&maxresults={max}",
        context.host,
        wire::encode(context.api_version),
        wire::hex(marker.as_bytes()),
    )
}

fn version_id(host: &str, secret: &Secret, version: &Version) -> String {
    format!("https://{host}/secrets/{}/{}", secret.name, version.id)
}

fn attributes(version: &Version) -> Value {
    let mut attributes = json!({
        "enabled": version.attributes.enabled,
        "created": version.created,
        "updated": version.updated,
        "recoverableDays": 90,
        "recoveryLevel": "Recoverable+Purgeable",
    });
    if let Some(nbf) = version.attributes.not_before {
        attributes["nbf"] = json!(nbf);
    }
    if let Some(exp) = version.attributes.expires {
        attributes["exp"] = json!(exp);
    }
    attributes
}

fn not_found(what: &str) -> Reply {
    error(
        StatusCode::NOT_FOUND,
        "SecretNotFound",
        &format!(
            "A secret with (name/id) {what} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
    )
}

/// Key Vault's error shape.
fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    wire::json(status, &json!({"error": {"code": code, "message": message}}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_azure::store::Attributes;
    use http_body_util::BodyExt;

    async fn body(reply: Reply) -> Value {
        let bytes = reply.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).expect("JSON body")
    }

    fn get_path(vault: &Vault, identity: &Identity, path: &str, token: Option<&str>) -> Reply {
        let mut builder = Request::builder().uri(path).header(HOST, "kv.vault.test:8443");
        if let Some(token) = token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        vault.handle(identity, &builder.body(()).unwrap(), 1_000)
    }

    #[tokio::test]
    async fn api_version_is_checked_before_the_token() {
        let vault = Vault::new("kv.vault.test:1".into());
        let identity = Identity::new();
        let reply = get_path(&vault, &identity, "/secrets/x", None);
        assert_eq!(reply.status(), 400);
        assert_eq!(body(reply).await["error"]["code"], "BadParameter");
    }

    #[tokio::test]
    async fn throttling_comes_first_and_counts_down() {
        let vault = Vault::new("kv.vault.test:1".into());
        let identity = Identity::new();
        vault.throttle_next(1);
        let reply = get_path(&vault, &identity, "/secrets/x?api-version=7.6", None);
        assert_eq!(reply.status(), 429);
        assert_eq!(reply.headers()[RETRY_AFTER], "1");
        assert_eq!(body(reply).await["error"]["code"], "Throttled");
        let reply = get_path(&vault, &identity, "/secrets/x?api-version=7.6", None);
        assert_eq!(reply.status(), 401);
    }

    #[test]
    fn non_bearer_schemes_count_as_missing() {
        let identity = Identity::new();
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(authenticate(&identity, &headers, 0), Err(MISSING_TOKEN.to_owned()));
    }

    #[test]
    fn attributes_have_key_vault_fields() {
        let mut store = Store::default();
        let attrs = Attributes { enabled: true, not_before: Some(5), expires: Some(9) };
        store.insert("s", "a".repeat(32), "v", attrs, 3);
        let value = attributes(store.secret("s").unwrap().latest());
        assert_eq!(
            value,
            json!({"enabled": true, "created": 3, "updated": 3, "nbf": 5, "exp": 9,
                   "recoverableDays": 90, "recoveryLevel": "Recoverable+Purgeable"})
        );
    }
}
