//! Claims shaped like Entra ID's access tokens, v2.0 (delegated and app-only) and v1.0.
//!
//! As Entra does, `iat` and `nbf` are five minutes in the past and `exp` an hour ahead.
//! Identifiers an application or user keeps across tokens (`oid`, pairwise `sub`) are
//! derived from the tenant and the application id, so two tokens for one app agree.

use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{json, Value};

use super::jose::b64url;
use crate::fake_azure::wire;

/// The scope (delegated `scp`) and app role (`roles`) tokens carry by default.
pub const DEFAULT_SCOPE: &str = "mcp.tools";

/// Entra backdates `iat` and `nbf` by this much.
const BACKDATE: i64 = 300;

/// Token lifetime from now.
const LIFETIME: i64 = 3600;

/// What every token from one fake tenant shares.
pub(super) struct Tenant {
    pub(super) id: String,
    pub(super) issuer: String,
    pub(super) issuer_v1: String,
    /// The application id of the protected API, `aud` of v2 tokens.
    pub(super) resource_app_id: String,
}

impl Tenant {
    /// A v2.0 delegated token: a user signed in to `app_id`, which asked for the default
    /// scope.
    pub(super) fn delegated(&self, app_id: &str) -> Value {
        let now = wire::now();
        let user = self.guid("user", "");
        json!({
            "aud": self.resource_app_id,
            "iss": self.issuer,
            "iat": now - BACKDATE,
            "nbf": now - BACKDATE,
            "exp": now + LIFETIME,
            "aio": opaque(48),
            "azp": app_id,
            "azpacr": "1",
            "name": "Test User",
            "oid": user,
            "preferred_username": "test.user@contoso.test",
            "rh": rh(),
            "scp": DEFAULT_SCOPE,
            "sid": wire::random_guid(),
            "sub": self.pairwise(&user, app_id),
            "tid": self.id,
            "uti": opaque(16),
            "ver": "2.0",
        })
    }

    /// A v2.0 app-only token (client credentials): `roles` instead of `scp`, and the
    /// service principal as `oid` and `sub`.
    pub(super) fn app(&self, app_id: &str) -> Value {
        let now = wire::now();
        let principal = self.guid("service-principal", app_id);
        json!({
            "aud": self.resource_app_id,
            "iss": self.issuer,
            "iat": now - BACKDATE,
            "nbf": now - BACKDATE,
            "exp": now + LIFETIME,
            "aio": opaque(48),
            "azp": app_id,
            "azpacr": "1",
            "idtyp": "app",
            "oid": principal,
            "rh": rh(),
            "roles": [DEFAULT_SCOPE],
            "sub": principal,
            "tid": self.id,
            "uti": opaque(16),
            "ver": "2.0",
        })
    }

    /// A v1.0 delegated token: `appid`/`appidacr` instead of `azp`/`azpacr`, the
    /// `sts.windows.net`-shaped issuer, and an App ID URI audience.
    pub(super) fn delegated_v1(&self, app_id: &str) -> Value {
        let now = wire::now();
        let user = self.guid("user", "");
        json!({
            "aud": format!("api://{}", self.resource_app_id),
            "iss": self.issuer_v1,
            "iat": now - BACKDATE,
            "nbf": now - BACKDATE,
            "exp": now + LIFETIME,
            "acr": "1",
            "aio": opaque(48),
            "amr": ["pwd"],
            "appid": app_id,
            "appidacr": "1",
            "family_name": "User",
            "given_name": "Test",
            "ipaddr": "127.0.0.1",
            "name": "Test User",
            "oid": user,
            "rh": rh(),
            "scp": DEFAULT_SCOPE,
            "sub": self.pairwise(&user, app_id),
            "tid": self.id,
            "unique_name": "test.user@contoso.test",
            "upn": "test.user@contoso.test",
            "uti": opaque(16),
            "ver": "1.0",
        })
    }

    /// A stable GUID for `what` named `name` in this tenant.
    fn guid(&self, what: &str, name: &str) -> String {
        let seed = format!("{}/{what}/{name}", self.id);
        let h =
            wire::hex(&ring::digest::digest(&ring::digest::SHA256, seed.as_bytes()).as_ref()[..16]);
        format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
    }

    /// Entra's pairwise `sub`: one value per user and application, 43 base64url characters.
    fn pairwise(&self, user: &str, app_id: &str) -> String {
        let seed = format!("{}/{user}/{app_id}", self.id);
        b64url(ring::digest::digest(&ring::digest::SHA256, seed.as_bytes()).as_ref())
    }
}

/// `n` random bytes, base64url: the shape of `aio` and `uti`.
fn opaque(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    SystemRandom::new().fill(&mut bytes).expect("system randomness");
    b64url(&bytes)
}

/// The opaque `rh` claim Entra adds (`0.` then base64url).
fn rh() -> String {
    format!("0.{}.", opaque(40))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> Tenant {
        Tenant {
            id: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            issuer: "https://localhost:1/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0".into(),
            issuer_v1: "https://localhost:1/72f988bf-86f1-41af-91ab-2d7cd011db47/".into(),
            resource_app_id: "00000000-1111-2222-3333-444444444444".into(),
        }
    }

    #[test]
    fn v2_tokens_have_entra_s_times_and_identifiers() {
        let claims = tenant().delegated("app-1");
        let (iat, nbf, exp) = (
            claims["iat"].as_i64().unwrap(),
            claims["nbf"].as_i64().unwrap(),
            claims["exp"].as_i64().unwrap(),
        );
        assert_eq!(nbf, iat);
        assert_eq!(exp - iat, BACKDATE + LIFETIME);
        assert_eq!(claims["ver"], "2.0");
        assert_eq!(claims["azp"], "app-1");
        assert_eq!(claims["sub"].as_str().unwrap().len(), 43);
        assert_eq!(claims["uti"].as_str().unwrap().len(), 22);
        assert_eq!(claims["oid"].as_str().unwrap().len(), 36);
        assert!(claims.get("roles").is_none());
    }

    #[test]
    fn identities_are_stable_per_app_and_user() {
        let t = tenant();
        assert_eq!(t.app("a")["oid"], t.app("a")["oid"]);
        assert_ne!(t.app("a")["oid"], t.app("b")["oid"]);
        assert_eq!(t.app("a")["oid"], t.app("a")["sub"]);
        assert_ne!(t.delegated("a")["sub"], t.delegated("b")["sub"]);
        assert_eq!(t.delegated("a")["oid"], t.delegated("b")["oid"]);
        assert_ne!(t.delegated("a")["uti"], t.delegated("a")["uti"]);
    }

    #[test]
    fn v1_tokens_name_the_app_as_appid() {
        let claims = tenant().delegated_v1("app-1");
        assert_eq!(claims["appid"], "app-1");
        assert!(claims.get("azp").is_none());
        assert_eq!(claims["iss"], tenant().issuer_v1);
        assert_eq!(claims["aud"], "api://00000000-1111-2222-3333-444444444444");
        assert_eq!(claims["ver"], "1.0");
    }
}
