//! The managed identity endpoint of App Service and Container Apps (protocol 2019-08-01),
//! and the tokens it issues.
//!
//! `GET /msi/token?api-version=2019-08-01&resource=R[&client_id=C]` with
//! `x-identity-header: <IDENTITY_HEADER>` answers
//! `{"access_token","expires_on":"<epoch seconds, as a string>","resource","token_type":"Bearer","client_id"}`.
//! Failures, as the platform gives them: a missing or wrong `x-identity-header` gets 403 with
//! an empty body (what Container Apps answers); a bad query or an identity the app does not
//! have gets 400 `{"statusCode":400,"message":..,"correlationId":..}` (the Azure SDK reads
//! any 400 as "the requested identity has not been assigned to this resource").
//!
//! It must never issue a token without the right header. Tokens are opaque random strings
//! remembered with their audience, expiry and issuer, which is all the vault needs to check
//! them. The Entra ID token endpoint (`entra.rs`) records its tokens here too, so the vault
//! checks tokens from both endpoints the same way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use http::{Method, Request, StatusCode};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::wire::{self, Query, Reply};
use super::Endpoint;

/// The only protocol version the endpoint speaks.
const API_VERSION: &str = "2019-08-01";

/// Which identities the fake app has, deciding which token requests succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Assigned {
    /// Accept any request: with `client_id` it is echoed, without it the system identity.
    Any,
    /// Only a system-assigned identity: a request naming any user-assigned identity fails.
    System,
    /// Only this user-assigned identity: a request must name it by `client_id`.
    User(String),
}

/// What the vault learns from looking a token up.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TokenCheck {
    /// Issued here, unexpired, for the expected audience.
    Valid,
    /// Never issued here.
    Unknown,
    /// Issued here, but its expiry has passed.
    Expired,
    /// Issued here for another resource (the audience it carries).
    WrongAudience(String),
}

/// A token's audience, expiry and issuing endpoint.
struct Grant {
    issuer: Endpoint,
    token: String,
    resource: String,
    expires_on: i64,
}

/// The endpoint's configuration and the tokens issued so far.
pub(super) struct Identity {
    header: String,
    system_client_id: String,
    assigned: Mutex<Assigned>,
    lifetime: AtomicU64,
    grants: Mutex<Vec<Grant>>,
}

impl Identity {
    /// A fresh endpoint with a random `IDENTITY_HEADER` and one-hour tokens.
    pub(super) fn new() -> Self {
        Self {
            header: wire::random_guid(),
            system_client_id: wire::random_guid(),
            assigned: Mutex::new(Assigned::Any),
            lifetime: AtomicU64::new(3600),
            grants: Mutex::new(Vec::new()),
        }
    }

    /// The value a client must send in `x-identity-header`.
    pub(super) fn header(&self) -> &str {
        &self.header
    }

    /// Sets which identities token requests may name.
    pub(super) fn set_assigned(&self, assigned: Assigned) {
        *self.assigned.lock().unwrap() = assigned;
    }

    /// Sets the lifetime of tokens issued from now on.
    pub(super) fn set_lifetime(&self, secs: u64) {
        self.lifetime.store(secs, Ordering::SeqCst);
    }

    /// Makes every token issued so far expired.
    pub(super) fn expire_all(&self, now: i64) {
        for grant in self.grants.lock().unwrap().iter_mut() {
            grant.expires_on = grant.expires_on.min(now);
        }
    }

    /// Records a new token for `resource`, expiring after the configured lifetime; returns
    /// the token and its lifetime in seconds.
    pub(super) fn issue(&self, issuer: Endpoint, resource: &str, now: i64) -> (String, u64) {
        let lifetime = self.lifetime.load(Ordering::SeqCst);
        let token = wire::random_hex(32);
        self.grants.lock().unwrap().push(Grant {
            issuer,
            token: token.clone(),
            resource: resource.to_owned(),
            expires_on: now.saturating_add_unsigned(lifetime),
        });
        (token, lifetime)
    }

    /// How many tokens `issuer` has issued so far.
    pub(super) fn issued_by(&self, issuer: Endpoint) -> usize {
        self.grants.lock().unwrap().iter().filter(|g| g.issuer == issuer).count()
    }

    /// Tokens issued so far by either endpoint, oldest first.
    pub(super) fn tokens(&self) -> Vec<String> {
        let grants = self.grants.lock().unwrap();
        grants.iter().map(|g| g.token.clone()).collect()
    }

    /// Checks a presented token against the audience `resource` at time `now`.
    pub(super) fn check(&self, token: &str, resource: &str, now: i64) -> TokenCheck {
        let grants = self.grants.lock().unwrap();
        let Some(grant) = grants.iter().find(|g| g.token == token) else {
            return TokenCheck::Unknown;
        };
        if now >= grant.expires_on {
            TokenCheck::Expired
        } else if grant.resource != resource {
            TokenCheck::WrongAudience(grant.resource.clone())
        } else {
            TokenCheck::Valid
        }
    }

    /// Answers one request to the endpoint.
    pub(super) fn handle<B>(&self, request: &Request<B>, now: i64) -> Reply {
        if request.uri().path() != "/msi/token" {
            return wire::empty(StatusCode::NOT_FOUND);
        }
        if request.method() != Method::GET {
            return wire::empty(StatusCode::METHOD_NOT_ALLOWED);
        }
        let presented =
            request.headers().get("x-identity-header").map(|v| v.as_bytes()).unwrap_or_default();
        if !bool::from(presented.ct_eq(self.header.as_bytes())) {
            return wire::empty(StatusCode::FORBIDDEN);
        }
        let query = Query::parse(request.uri().query());
        if query.get("api-version") != Some(API_VERSION) {
            return failure("The api-version is missing or not supported; use 2019-08-01.");
        }
        let Some(resource) = query.get("resource").filter(|r| !r.is_empty()) else {
            return failure("The resource query parameter is required.");
        };
        let Some(client_id) = self.select(&query) else {
            return failure("Unable to load the proper Managed Identity.");
        };
        let (token, lifetime) = self.issue(Endpoint::Identity, resource, now);
        let expires_on = now.saturating_add_unsigned(lifetime);
        wire::json(
            StatusCode::OK,
            &json!({
                "access_token": token,
                "expires_on": expires_on.to_string(),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": client_id,
            }),
        )
    }

    /// The client id of the identity a request names, if the app has it.
    fn select(&self, query: &Query) -> Option<String> {
        let client_id = query.get("client_id");
        let other = ["object_id", "principal_id", "mi_res_id", "msi_res_id"]
            .iter()
            .find_map(|name| query.get(name));
        match &*self.assigned.lock().unwrap() {
            Assigned::Any => Some(client_id.unwrap_or(&self.system_client_id).to_owned()),
            Assigned::System => {
                (client_id.is_none() && other.is_none()).then(|| self.system_client_id.clone())
            }
            Assigned::User(id) => (other.is_none()
                && client_id.is_some_and(|c| c.eq_ignore_ascii_case(id)))
            .then(|| id.clone()),
        }
    }
}

/// A 400 in the platform's error shape.
fn failure(message: &str) -> Reply {
    wire::json(
        StatusCode::BAD_REQUEST,
        &json!({
            "statusCode": 400,
            "message": message,
            "correlationId": wire::random_guid(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(identity: &Identity, query: &str, header: Option<&str>) -> Reply {
        let mut builder = Request::builder().uri(format!("/msi/token?{query}"));
        if let Some(header) = header {
            builder = builder.header("x-identity-header", header);
        }
        identity.handle(&builder.body(()).unwrap(), 1_000)
    }

    const QUERY: &str = "api-version=2019-08-01&resource=https%3A%2F%2Fvault.test";

    #[test]
    fn the_header_is_required_and_checked() {
        let identity = Identity::new();
        assert_eq!(request(&identity, QUERY, None).status(), 403);
        assert_eq!(request(&identity, QUERY, Some("wrong")).status(), 403);
        assert_eq!(request(&identity, QUERY, Some(identity.header())).status(), 200);
        assert_eq!(identity.tokens().len(), 1);
    }

    #[test]
    fn tokens_carry_audience_and_expiry() {
        let identity = Identity::new();
        identity.set_lifetime(60);
        request(&identity, QUERY, Some(identity.header()));
        let token = identity.tokens().pop().unwrap();
        assert_eq!(identity.check(&token, "https://vault.test", 1_059), TokenCheck::Valid);
        assert_eq!(identity.check(&token, "https://vault.test", 1_060), TokenCheck::Expired);
        assert_eq!(
            identity.check(&token, "https://vault.azure.net", 1_000),
            TokenCheck::WrongAudience("https://vault.test".into())
        );
        assert_eq!(identity.check("other", "https://vault.test", 1_000), TokenCheck::Unknown);
        identity.expire_all(1_010);
        assert_eq!(identity.check(&token, "https://vault.test", 1_010), TokenCheck::Expired);
    }

    #[test]
    fn assigned_identities_decide_who_gets_a_token() {
        let identity = Identity::new();
        let header = Some(identity.header().to_owned());
        let with_client = format!("{QUERY}&client_id=ABC");
        identity.set_assigned(Assigned::User("abc".into()));
        assert_eq!(request(&identity, QUERY, header.as_deref()).status(), 400);
        assert_eq!(request(&identity, &with_client, header.as_deref()).status(), 200);
        identity.set_assigned(Assigned::System);
        assert_eq!(request(&identity, &with_client, header.as_deref()).status(), 400);
        assert_eq!(request(&identity, QUERY, header.as_deref()).status(), 200);
    }

    #[test]
    fn bad_queries_get_400() {
        let identity = Identity::new();
        let header = Some(identity.header().to_owned());
        let old = "api-version=2017-09-01&resource=https%3A%2F%2Fvault.test";
        assert_eq!(request(&identity, old, header.as_deref()).status(), 400);
        let none = "api-version=2019-08-01";
        assert_eq!(request(&identity, none, header.as_deref()).status(), 400);
        assert!(identity.tokens().is_empty());
    }
}
