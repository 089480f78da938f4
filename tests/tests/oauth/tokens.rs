//! What a token must be to pass: signed by a published key with an algorithm that fits it,
//! for this resource, from this issuer, within its lifetime (and the clock skew); and what
//! keyward answers when there is none (the challenge, and the metadata it leads to).

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_ps256_and_es256_tokens_reach_the_backend_as_the_client() {
    let setup = Setup::new().await;
    let keyward = setup.ready(setup.config()).await;
    let idp = &setup.idp;

    let mut tokens = Vec::new();
    for alg in [Alg::Rs256, Alg::Ps256, Alg::Es256] {
        tokens.push((alg.name().to_owned(), idp.signed(alg, &idp.claims(APP_A))));
    }
    tokens.push(("app-only".into(), setup.token(&idp.app_claims(APP_A))));
    let mut api_uri = idp.claims(APP_A);
    api_uri["aud"] = format!("api://{}", idp.resource_app_id()).into();
    tokens.push(("aud in the api:// form".into(), setup.token(&api_uri)));
    // Entra's tokens grow with group claims; 100 groups are well under the 8 KiB default.
    let mut groups = idp.claims(APP_A);
    groups["groups"] = (0..100).map(|i| format!("{i:08}-0000-4000-8000-000000000000")).collect();
    let big = setup.token(&groups);
    assert!((6_000..8_192).contains(&big.len()), "{}", big.len());
    tokens.push(("6 KB token".into(), big));

    for (what, token) in &tokens {
        let reply = bearer(&keyward, token).await;
        assert_eq!(reply.status, StatusCode::OK, "{what}: {}", reply.text());
    }
    // A client's own X-Keyward-Client never reaches the backend.
    let authorization = format!("Bearer {}", setup.agent_token());
    let spoofed = [("authorization", authorization.as_str()), ("x-keyward-client", "admin")];
    let reply = send(&client::http1(), request(keyward.ingress, "GET", "/mcp", &spoofed, "")).await;
    assert_eq!(reply.status, StatusCode::OK);

    let seen = setup.backend.seen();
    assert_eq!(seen.len(), tokens.len() + 1);
    for request in &seen {
        let clients: Vec<_> = request.headers.get_all("x-keyward-client").iter().collect();
        assert_eq!(clients, ["agent-a"]);
        assert!(request.headers.get(http::header::AUTHORIZATION).is_none(), "token forwarded");
    }
    assert_nothing_leaked(&keyward, idp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_must_not_pass_get_401_invalid_token() {
    let setup = Setup::new().await;
    let keyward = setup.ready(setup.config()).await;
    let idp = &setup.idp;
    let now = now();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut claims = idp.claims(APP_A);
        edit(&mut claims);
        setup.token(&claims)
    };
    let rsa = idp.signing_kid(Kty::Rsa);
    let ec = idp.signing_kid(Kty::Ec);
    let stranger = idp.new_key(Kty::Rsa);
    let claims = idp.claims(APP_A);
    let real_entra = format!("https://login.microsoftonline.com/{}/v2.0", idp.tenant_id());
    let other_tenant =
        idp.issuer().replace(&idp.tenant_id(), "11111111-2222-3333-4444-555555555555");
    let header_only = setup.agent_token().split('.').next().unwrap().to_owned();

    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            with(&|c| {
                c["iat"] = (now - 4_200).into();
                c["nbf"] = (now - 4_200).into();
                c["exp"] = (now - 600).into();
            }),
        ),
        (
            "not yet valid",
            with(&|c| {
                c["iat"] = now.into();
                c["nbf"] = (now + 600).into();
            }),
        ),
        (
            "no exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        ("another audience", with(&|c| c["aud"] = "api://another-api".into())),
        ("the resource when audiences are listed", with(&|c| c["aud"] = RESOURCE.into())),
        ("Entra's issuer for the same tenant", with(&|c| c["iss"] = real_entra.clone().into())),
        ("another tenant's issuer", with(&|c| c["iss"] = other_tenant.clone().into())),
        ("the v1 issuer", with(&|c| c["iss"] = idp.issuer_v1().into())),
        ("alg none", idp.unsigned(&claims)),
        (
            "HS256 keyed with the SPKI DER",
            idp.hs256_with_public_key(&rsa, &claims, HmacSecret::SpkiDer),
        ),
        ("HS256 keyed with the PEM", idp.hs256_with_public_key(&rsa, &claims, HmacSecret::SpkiPem)),
        ("a kid not in the set", idp.token(&stranger, Alg::Rs256, &claims)),
        ("another key's signature", idp.token_claiming_kid(&rsa, &stranger, Alg::Rs256, &claims)),
        ("ES256 under an RSA kid", idp.token_claiming_kid(&rsa, &ec, Alg::Es256, &claims)),
        ("RS256 under an EC kid", idp.token_claiming_kid(&ec, &rsa, Alg::Rs256, &claims)),
        ("a tampered payload", idp.tampered(&setup.agent_token())),
        ("over max_token_bytes", with(&|c| c["pad"] = "x".repeat(9_000).into())),
        ("garbage", "garbage".into()),
        ("three garbage parts", "a.b.c".into()),
        ("a header alone", header_only),
        ("four parts", format!("{}.x", setup.agent_token())),
        ("not base64url", setup.agent_token().replacen('.', ".*", 1)),
    ];
    for (what, token) in &cases {
        assert_invalid_token(what, &bearer(&keyward, token).await);
    }
    assert!(setup.backend.seen().is_empty(), "a refused token reached the backend");
    // Still accepting the real thing after all that.
    assert_eq!(bearer(&keyward, &setup.agent_token()).await.status, StatusCode::OK);
    assert_nothing_leaked(&keyward, idp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_gets_the_challenge_without_an_error_and_it_leads_to_the_metadata() {
    let setup = Setup::new().await;
    let keyward = setup.ready(setup.config()).await;

    let reply = send(&client::http1(), request(keyward.ingress, "GET", "/mcp", &[], "")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    let header = challenge(&reply);
    assert!(header.starts_with("Bearer "), "{header:?}");
    assert!(!header.contains("error="), "no credential is not an error: {header:?}");
    assert_eq!(metadata_path(&header), METADATA_PATH);

    let path = metadata_path(&header);
    let metadata = send(&client::http1(), request(keyward.ingress, "GET", &path, &[], "")).await;
    assert_eq!(metadata.status, StatusCode::OK);
    let document: Value = serde_json::from_slice(&metadata.body).expect("JSON metadata");
    assert_eq!(document["resource"], RESOURCE);

    // Another scheme is no bearer token either.
    let basic = [("authorization", "Basic YWdlbnQtYTpzZWNyZXQ=")];
    let reply = send(&client::http1(), request(keyward.ingress, "GET", "/mcp", &basic, "")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(challenge(&reply).starts_with("Bearer "));
    assert!(setup.backend.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protected_resource_metadata_is_served_without_credentials() {
    let setup = Setup::new().await;
    let keyward = setup.ready(setup.config()).await;
    for path in ["/.well-known/oauth-protected-resource", METADATA_PATH] {
        let reply = send(&client::http1(), request(keyward.ingress, "GET", path, &[], "")).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
        let content_type = reply.headers[http::header::CONTENT_TYPE].to_str().unwrap();
        assert!(content_type.starts_with("application/json"), "{path}: {content_type}");
        let document: Value = serde_json::from_slice(&reply.body).expect("JSON");
        assert_eq!(document["resource"], RESOURCE, "{path}");
        assert_eq!(document["authorization_servers"], json!([setup.idp.issuer()]), "{path}");
        assert_eq!(document["scopes_supported"], json!([SCOPE]), "{path}");
        assert_eq!(document["bearer_methods_supported"], json!(["header"]), "{path}");
        assert_eq!(document["resource_name"], "Biotrackr MCP", "{path}");
    }
    assert!(setup.backend.seen().is_empty(), "metadata is keyward's, not the backend's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audience_defaults_to_the_resource() {
    let setup = Setup::new().await;
    let mut issuer = setup.issuer();
    issuer.remove("audiences");
    let keyward = setup.ready(setup.config_with(issuer)).await;
    let mut claims = setup.idp.claims(APP_A);
    claims["aud"] = RESOURCE.into();
    assert_eq!(bearer(&keyward, &setup.token(&claims)).await.status, StatusCode::OK);
    assert_invalid_token("the app id audience", &bearer(&keyward, &setup.agent_token()).await);
    assert_nothing_leaked(&keyward, &setup.idp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_skew_is_allowed_on_both_ends_and_no_further() {
    let setup = Setup::new().await;
    let mut issuer = setup.issuer();
    issuer.insert("clock_skew".into(), "60s".into());
    let keyward = setup.ready(setup.config_with(issuer)).await;
    let now = now();
    let token = |nbf: i64, exp: i64| {
        let mut claims = setup.idp.claims(APP_A);
        claims["iat"] = nbf.min(now).into();
        claims["nbf"] = nbf.into();
        claims["exp"] = exp.into();
        setup.token(&claims)
    };
    let early = bearer(&keyward, &token(now + 20, now + 3_600)).await;
    assert_eq!(early.status, StatusCode::OK, "nbf 20 s ahead: {}", early.text());
    let late = bearer(&keyward, &token(now - 3_600, now - 20)).await;
    assert_eq!(late.status, StatusCode::OK, "exp 20 s ago: {}", late.text());
    assert_invalid_token(
        "nbf 5 min ahead",
        &bearer(&keyward, &token(now + 300, now + 3_600)).await,
    );
    assert_invalid_token("exp 5 min ago", &bearer(&keyward, &token(now - 3_600, now - 300)).await);
    assert_nothing_leaked(&keyward, &setup.idp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_tokens_are_accepted_from_the_v1_issuer_by_appid() {
    let setup = Setup::new().await;
    let mut issuer = setup.issuer();
    issuer.insert("issuer".into(), setup.idp.issuer_v1().into());
    let keyward = setup.ready(setup.config_with(issuer)).await;
    assert!(setup.idp.discovery_fetches() >= 1, "the v1 discovery document was not read");

    let v1 = setup.token(&setup.idp.claims_v1(APP_A));
    let reply = bearer(&keyward, &v1).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(setup.backend.seen()[0].headers["x-keyward-client"], "agent-a");
    assert_invalid_token("a v2 token", &bearer(&keyward, &setup.agent_token()).await);
    assert_nothing_leaked(&keyward, &setup.idp);
}
