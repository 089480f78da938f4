//! Bearer tokens: JWT access tokens from the configured issuers, validated locally against the
//! issuers' published keys with no call to the identity provider per request, and bound to
//! exactly one configured client by the agent id they carry.
//!
//! The checks, in order: size; shape (three base64url parts, an allow-listed `alg`, a `kid`);
//! `iss` exactly one configured issuer; the `kid` in its key set (fetched again once if not);
//! the key's type and `alg` agreeing with the header; the signature; `exp` (required), `nbf`
//! and `iat` with the issuer's clock skew; `aud` one of its audiences; the agent id (`azp`,
//! else `appid`, else `client_id`, else `sub`) one client's; the required scopes.

mod cache;
mod jwks;
pub mod jws;
mod keys;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

pub use jws::Alg;
pub(crate) use keys::{run as keys_run, Fetcher, IssuerKeys};

use crate::config::{ClientConfig, Grants, IssuerConfig, OAuthConfig};

/// How long a request waits for the fetch its unknown `kid` asked for.
const REFETCH_WAIT: Duration = Duration::from_secs(2);

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenDenial {
    /// Longer than `max_token_bytes`.
    Oversize,
    /// Not a compact JWS of JSON claims keyward can read, or no `kid`.
    Malformed,
    /// An `alg` off the issuer's list (`none`, an HMAC, anything keyward does not verify).
    BadAlgorithm,
    /// An `iss` that is no configured issuer.
    UnknownIssuer,
    /// A `kid` the issuer does not publish.
    UnknownKid,
    /// The signature does not verify (or the key's type or `alg` disagree with the header).
    BadSignature,
    /// Past `exp`, or no `exp`.
    Expired,
    /// Before `nbf`, or issued in the future.
    NotYetValid,
    /// No accepted audience in `aud`.
    BadAudience,
    /// A valid token of an agent no client lists.
    UnknownAgent,
    /// A required scope or role is missing.
    InsufficientScope,
    /// The issuer's keys have not been loaded yet (fail closed: 503).
    KeysNotLoaded,
}

impl TokenDenial {
    /// How many kinds there are.
    pub const COUNT: usize = 12;

    /// One of each kind, in [`Self::index`] order.
    pub const ALL: [TokenDenial; Self::COUNT] = [
        TokenDenial::Oversize,
        TokenDenial::Malformed,
        TokenDenial::UnknownIssuer,
        TokenDenial::UnknownKid,
        TokenDenial::BadSignature,
        TokenDenial::Expired,
        TokenDenial::NotYetValid,
        TokenDenial::BadAudience,
        TokenDenial::UnknownAgent,
        TokenDenial::InsufficientScope,
        TokenDenial::KeysNotLoaded,
        TokenDenial::BadAlgorithm,
    ];

    /// The kind's position in [`Self::ALL`].
    pub const fn index(self) -> usize {
        match self {
            TokenDenial::Oversize => 0,
            TokenDenial::Malformed => 1,
            TokenDenial::UnknownIssuer => 2,
            TokenDenial::UnknownKid => 3,
            TokenDenial::BadSignature => 4,
            TokenDenial::Expired => 5,
            TokenDenial::NotYetValid => 6,
            TokenDenial::BadAudience => 7,
            TokenDenial::UnknownAgent => 8,
            TokenDenial::InsufficientScope => 9,
            TokenDenial::KeysNotLoaded => 10,
            TokenDenial::BadAlgorithm => 11,
        }
    }

    /// A short label for logs and metrics.
    pub const fn reason(self) -> &'static str {
        match self {
            TokenDenial::Oversize => "token_oversize",
            TokenDenial::Malformed => "malformed_token",
            TokenDenial::UnknownIssuer => "bad_issuer",
            TokenDenial::UnknownKid => "unknown_kid",
            TokenDenial::BadSignature => "bad_signature",
            TokenDenial::Expired => "expired",
            TokenDenial::NotYetValid => "not_yet_valid",
            TokenDenial::BadAudience => "bad_audience",
            TokenDenial::UnknownAgent => "unknown_agent",
            TokenDenial::InsufficientScope => "insufficient_scope",
            TokenDenial::KeysNotLoaded => "issuer_keys_not_loaded",
            TokenDenial::BadAlgorithm => "bad_algorithm",
        }
    }

    /// What the `error_description` of the challenge says (fixed text, nothing from the
    /// token).
    pub const fn description(self) -> &'static str {
        match self {
            TokenDenial::Oversize => "the token is too long",
            TokenDenial::Malformed => "the token is not a JWT this server accepts",
            TokenDenial::UnknownIssuer => "the token's issuer is not trusted",
            TokenDenial::UnknownKid => "the token's signing key is unknown",
            TokenDenial::BadSignature => "the token's signature is invalid",
            TokenDenial::Expired => "the token has expired",
            TokenDenial::NotYetValid => "the token is not valid yet",
            TokenDenial::BadAudience => "the token is for another audience",
            TokenDenial::UnknownAgent => "the token's client is not registered here",
            TokenDenial::InsufficientScope => "the token lacks a required scope",
            TokenDenial::KeysNotLoaded => "the issuer's keys are not loaded yet",
            TokenDenial::BadAlgorithm => "the token's signature algorithm is not accepted",
        }
    }
}

/// A validated token.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The client it belongs to (its position in `[[ingress.clients]]`).
    pub client: usize,
    /// Its issuer, as configured.
    pub issuer: Arc<str>,
    /// The key that signed it.
    pub kid: String,
    /// Its client's grants widened by its scopes' (`scope_grants`), when a scope widened them.
    pub grants: Option<Arc<Grants>>,
}

#[derive(Debug)]
struct Issuer {
    iss: Arc<str>,
    audiences: Vec<String>,
    skew: u64,
    required_scopes: Vec<String>,
    algorithms: Vec<Alg>,
    keys: Arc<IssuerKeys>,
}

/// Validates tokens against every configured issuer.
#[derive(Debug)]
pub struct Tokens {
    issuers: Vec<Issuer>,
    agents: HashMap<String, usize>,
    /// Each client's grants, by position.
    grants: Vec<Grants>,
    scope_grants: Vec<(String, Grants)>,
    max_bytes: usize,
    /// The scopes a token lacking one is told to get (the union of every issuer's required).
    required: Vec<String>,
    cache: cache::Cache,
}

/// The claims keyward reads. Dates may be integers or floats (RFC 7519 NumericDate).
#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    aud: Option<Audience>,
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
    azp: Option<String>,
    appid: Option<String>,
    client_id: Option<String>,
    sub: Option<String>,
    scp: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains_any(&self, accepted: &[String]) -> bool {
        match self {
            Audience::One(aud) => accepted.contains(aud),
            Audience::Many(auds) => auds.iter().any(|aud| accepted.contains(aud)),
        }
    }
}

impl Tokens {
    /// The validator for `config` and `clients` (whose `token_ids` name their agents). Each
    /// issuer's keys start empty; its fetcher (or [`Tokens::install_keys`]) loads them.
    pub fn new(config: &OAuthConfig, clients: &[ClientConfig]) -> Self {
        let agents = clients
            .iter()
            .enumerate()
            .flat_map(|(i, client)| client.token_ids.iter().map(move |id| (id.clone(), i)))
            .collect();
        let resource = config.resource.as_str();
        let issuers: Vec<Issuer> = config
            .issuers
            .iter()
            .map(|issuer: &IssuerConfig| Issuer {
                iss: issuer.issuer.as_str().into(),
                audiences: issuer.audiences_or(resource),
                skew: issuer.clock_skew.as_secs(),
                required_scopes: issuer.required_scopes.clone(),
                algorithms: issuer.algorithms.clone(),
                keys: Arc::new(IssuerKeys::new(config.unknown_kid_interval)),
            })
            .collect();
        let mut required: Vec<String> =
            issuers.iter().flat_map(|i| i.required_scopes.iter().cloned()).collect();
        required.dedup();
        Self {
            issuers,
            agents,
            grants: clients.iter().map(ClientConfig::grants).collect(),
            scope_grants: config
                .scope_grants
                .iter()
                .map(|g| (g.scope.clone(), g.grants()))
                .collect(),
            max_bytes: config.max_token_bytes,
            required,
            cache: cache::Cache::default(),
        }
    }

    /// Each issuer (as configured) and its key cache, for the fetchers and readiness.
    pub(crate) fn issuer_keys(&self) -> impl Iterator<Item = (&str, &Arc<IssuerKeys>)> {
        self.issuers.iter().map(|issuer| (&*issuer.iss, &issuer.keys))
    }

    /// Installs a JWK Set document as `issuer`'s keys, as its fetcher does after a fetch (for
    /// benches and embedders that fetch keys themselves). False when `issuer` is not
    /// configured or the document holds no usable key.
    pub fn install_keys(&self, issuer: &str, document: &[u8]) -> bool {
        let Some(issuer) = self.issuers.iter().find(|i| &*i.iss == issuer) else { return false };
        match jwks::KeySet::parse(document) {
            Ok(set) if !set.is_empty() => {
                issuer.keys.store(set);
                true
            }
            _ => false,
        }
    }

    /// The issuers whose keys are not loaded yet.
    pub fn unloaded(&self) -> Vec<&str> {
        self.issuers.iter().filter(|i| i.keys.current().is_none()).map(|i| &*i.iss).collect()
    }

    /// The scopes a token is told it lacks, space-separated.
    pub fn required_scopes(&self) -> String {
        self.required.join(" ")
    }

    /// Validates one bearer token: from the cache when it was validated before and is still
    /// in its window with its key published, else by every check.
    pub async fn validate(&self, token: &str) -> Result<Verified, TokenDenial> {
        if token.len() > self.max_bytes {
            return Err(TokenDenial::Oversize);
        }
        let key = cache::Cache::key(token);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        if let Some(hit) = self.cache.get(&key, now) {
            let keys = self.issuers[hit.issuer].keys.current();
            if keys.is_some_and(|keys| keys.get(&hit.verified.kid).is_some()) {
                return Ok(hit.verified);
            }
        }
        let (entry, verified) = self.validate_uncached(token, now).await?;
        self.cache.insert(key, entry, now);
        Ok(verified)
    }

    /// Validates one bearer token by every check, neither using nor filling the cache (what
    /// a token seen for the first time costs; for benches).
    pub async fn validate_without_cache(&self, token: &str) -> Result<Verified, TokenDenial> {
        if token.len() > self.max_bytes {
            return Err(TokenDenial::Oversize);
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        self.validate_uncached(token, now).await.map(|(_, verified)| verified)
    }

    async fn validate_uncached(
        &self,
        token: &str,
        now: f64,
    ) -> Result<(cache::Entry, Verified), TokenDenial> {
        let jws = jws::parse(token).map_err(|why| match why {
            jws::Malformed::Alg => TokenDenial::BadAlgorithm,
            jws::Malformed::Shape | jws::Malformed::NoKid => TokenDenial::Malformed,
        })?;
        let claims: Claims =
            serde_json::from_slice(&jws.payload).map_err(|_| TokenDenial::Malformed)?;
        let position = claims
            .iss
            .as_deref()
            .and_then(|iss| self.issuers.iter().position(|i| &*i.iss == iss))
            .ok_or(TokenDenial::UnknownIssuer)?;
        let issuer = &self.issuers[position];
        if !issuer.algorithms.contains(&jws.alg) {
            return Err(TokenDenial::BadAlgorithm);
        }
        let mut keys = issuer.keys.current().ok_or(TokenDenial::KeysNotLoaded)?;
        if keys.get(&jws.kid).is_none() && issuer.keys.refetch(REFETCH_WAIT).await {
            keys = issuer.keys.current().ok_or(TokenDenial::KeysNotLoaded)?;
        }
        let key = keys.get(&jws.kid).ok_or(TokenDenial::UnknownKid)?;
        if key.alg.is_some_and(|alg| alg != jws.alg)
            || !key.key.verifies(jws.alg, jws.signing_input, &jws.signature)
        {
            return Err(TokenDenial::BadSignature);
        }
        let skew = issuer.skew as f64;
        let until = match claims.exp {
            Some(exp) if now < exp + skew => exp + skew,
            _ => return Err(TokenDenial::Expired),
        };
        if claims.nbf.is_some_and(|nbf| now + skew < nbf)
            || claims.iat.is_some_and(|iat| now + skew < iat)
        {
            return Err(TokenDenial::NotYetValid);
        }
        if !claims.aud.as_ref().is_some_and(|aud| aud.contains_any(&issuer.audiences)) {
            return Err(TokenDenial::BadAudience);
        }
        let agent = [&claims.azp, &claims.appid, &claims.client_id, &claims.sub]
            .into_iter()
            .find_map(|id| id.as_deref())
            .ok_or(TokenDenial::UnknownAgent)?;
        let client = *self.agents.get(agent).ok_or(TokenDenial::UnknownAgent)?;
        let granted = |scope: &String| {
            claims.scp.as_deref().is_some_and(|scp| scp.split(' ').any(|s| s == scope))
                || claims.roles.contains(scope)
        };
        if !issuer.required_scopes.iter().all(granted) {
            return Err(TokenDenial::InsufficientScope);
        }
        let mut widened: Option<Grants> = None;
        for (scope, more) in &self.scope_grants {
            if granted(scope) {
                let base = widened.as_ref().unwrap_or(&self.grants[client]);
                widened = Some(base.widened(more));
            }
        }
        let grants = widened.map(Arc::new);
        let verified = Verified { client, issuer: issuer.iss.clone(), kid: jws.kid, grants };
        let from = claims.nbf.into_iter().chain(claims.iat).fold(f64::MIN, f64::max) - skew;
        let entry = cache::Entry { verified: verified.clone(), issuer: position, from, until };
        Ok((entry, verified))
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    use super::jwks::KeySet;
    use super::*;

    const ISS: &str = "https://login.microsoftonline.com/tenant/v2.0";
    const AUD: &str = "api://mcp";

    struct Signer(EcdsaKeyPair);

    impl Signer {
        fn new() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            Self(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap(),
            )
        }

        fn jwk(&self, kid: &str) -> serde_json::Value {
            let point = self.0.public_key().as_ref();
            serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..])})
        }

        fn token(&self, header: serde_json::Value, claims: &serde_json::Value) -> String {
            let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
            let input = format!("{}.{}", b64(&header), b64(claims));
            let signature = self.0.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
        }
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn claims() -> serde_json::Value {
        serde_json::json!({"iss": ISS, "aud": AUD, "exp": now() + 600, "nbf": now() - 10,
            "iat": now() - 10, "azp": "agent-app", "scp": "mcp.tools other", "ver": "2.0"})
    }

    fn tokens(signer: &Signer, extra: &str) -> Tokens {
        let text = format!(
            "resource = \"https://mcp.example.com/mcp\"\n\
             [[issuers]]\nissuer = \"{ISS}\"\naudiences = [\"{AUD}\"]\n{extra}"
        );
        let config: OAuthConfig = toml::from_str(&text).unwrap();
        let mut clients: Vec<ClientConfig> =
            (0..4).map(|i| ClientConfig::with_key(format!("c{i}"), format!("k{i}"))).collect();
        clients[3].token_ids = vec!["agent-app".to_owned()];
        let tokens = Tokens::new(&config, &clients);
        let set = serde_json::json!({"keys": [signer.jwk("k1")]}).to_string();
        tokens.issuers[0].keys.store(KeySet::parse(set.as_bytes()).unwrap());
        tokens
    }

    fn header() -> serde_json::Value {
        serde_json::json!({"alg": "ES256", "kid": "k1", "typ": "JWT"})
    }

    #[tokio::test]
    async fn a_valid_token_names_its_client_issuer_and_key() {
        let signer = Signer::new();
        let tokens = tokens(&signer, "required_scopes = [\"mcp.tools\"]");
        let verified = tokens.validate(&signer.token(header(), &claims())).await.unwrap();
        assert_eq!((verified.client, &*verified.issuer, verified.kid.as_str()), (3, ISS, "k1"));
        // v1 tokens: `appid`, an `aud` list, app roles instead of scopes.
        let mut v1 = claims();
        v1["azp"] = serde_json::Value::Null;
        v1["appid"] = "agent-app".into();
        v1["aud"] = serde_json::json!(["other", AUD]);
        v1["scp"] = serde_json::Value::Null;
        v1["roles"] = serde_json::json!(["mcp.tools"]);
        assert!(tokens.validate(&signer.token(header(), &v1)).await.is_ok());
    }

    #[tokio::test]
    async fn each_broken_claim_has_its_reason() {
        let signer = Signer::new();
        let tokens = tokens(&signer, "required_scopes = [\"mcp.tools\"]\nclock_skew = \"30s\"");
        let cases: [(&str, serde_json::Value, TokenDenial); 9] = [
            ("exp", (now() - 31).into(), TokenDenial::Expired),
            ("exp", serde_json::Value::Null, TokenDenial::Expired),
            ("nbf", (now() + 31).into(), TokenDenial::NotYetValid),
            ("iat", (now() + 31).into(), TokenDenial::NotYetValid),
            ("aud", "api://other".into(), TokenDenial::BadAudience),
            ("aud", serde_json::Value::Null, TokenDenial::BadAudience),
            (
                "iss",
                "https://login.microsoftonline.com/other/v2.0".into(),
                TokenDenial::UnknownIssuer,
            ),
            ("azp", "someone-else".into(), TokenDenial::UnknownAgent),
            ("scp", "other".into(), TokenDenial::InsufficientScope),
        ];
        for (claim, value, denial) in cases {
            let mut claims = claims();
            claims[claim] = value.clone();
            let token = signer.token(header(), &claims);
            assert_eq!(tokens.validate(&token).await.unwrap_err(), denial, "{claim} = {value}");
        }
        // Within the skew is still valid.
        let mut claims = claims();
        claims["exp"] = (now() - 20).into();
        assert!(tokens.validate(&signer.token(header(), &claims)).await.is_ok());
    }

    #[tokio::test]
    async fn forged_and_mismatched_tokens_are_refused() {
        let signer = Signer::new();
        let tokens = tokens(&signer, "");
        let good = signer.token(header(), &claims());
        let (input, _) = good.rsplit_once('.').unwrap();
        let other = Signer::new().token(header(), &claims());
        let foreign_signature = other.rsplit_once('.').unwrap().1;
        let forged = format!("{input}.{foreign_signature}");
        assert_eq!(tokens.validate(&forged).await.unwrap_err(), TokenDenial::BadSignature);
        let mut payload = claims();
        payload["azp"] = "agent-app".into();
        payload["exp"] = (now() + 99_999).into();
        let tampered = format!(
            "{}.{}.{}",
            input.split('.').next().unwrap(),
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            good.rsplit_once('.').unwrap().1
        );
        assert_eq!(tokens.validate(&tampered).await.unwrap_err(), TokenDenial::BadSignature);
        let rs = serde_json::json!({"alg": "RS256", "kid": "k1"});
        assert_eq!(
            tokens.validate(&signer.token(rs, &claims())).await.unwrap_err(),
            TokenDenial::BadSignature
        );
        let none = serde_json::json!({"alg": "none", "kid": "k1"});
        let unsigned = format!("{}.", signer.token(none, &claims()).rsplit_once('.').unwrap().0);
        assert_eq!(tokens.validate(&unsigned).await.unwrap_err(), TokenDenial::BadAlgorithm);
        let unknown = serde_json::json!({"alg": "ES256", "kid": "k9"});
        // No fetcher runs here: the refetch it asks for never ends, and the wait is bounded.
        assert_eq!(
            tokens.validate(&signer.token(unknown.clone(), &claims())).await.unwrap_err(),
            TokenDenial::UnknownKid
        );
        let oversize = "a".repeat(8193);
        assert_eq!(tokens.validate(&oversize).await.unwrap_err(), TokenDenial::Oversize);
    }

    #[tokio::test]
    async fn a_cached_token_still_expires_and_still_needs_its_key() {
        let signer = Signer::new();
        let tokens = tokens(&signer, "clock_skew = \"0s\"");
        let mut short = claims();
        short["exp"] = (now() + 1).into();
        let token = signer.token(header(), &short);
        assert!(tokens.validate(&token).await.is_ok());
        assert!(tokens.validate(&token).await.is_ok());
        assert_eq!(tokens.cache.len(), 1, "validated once, kept");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(tokens.validate(&token).await.unwrap_err(), TokenDenial::Expired);

        let token = signer.token(header(), &claims());
        assert!(tokens.validate(&token).await.is_ok());
        let other = Signer::new();
        let rotated = serde_json::json!({"keys": [other.jwk("k2")]}).to_string();
        assert!(tokens.install_keys(ISS, rotated.as_bytes()));
        assert_eq!(tokens.validate(&token).await.unwrap_err(), TokenDenial::UnknownKid);
    }

    #[tokio::test]
    async fn an_algorithm_off_the_issuer_s_list_is_refused() {
        let signer = Signer::new();
        let tokens = tokens(&signer, "algorithms = [\"RS256\"]");
        let token = signer.token(header(), &claims());
        assert_eq!(tokens.validate(&token).await.unwrap_err(), TokenDenial::BadAlgorithm);
    }
}
