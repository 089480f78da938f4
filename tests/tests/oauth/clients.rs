//! Who a valid token is: the client whose `token_ids` hold its app id, with the scopes the
//! issuer requires; and API-key clients beside token clients, never both credentials at once.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_of_an_app_without_a_client_gets_403() {
    let setup = Setup::new().await;
    let keyward = setup.ready(setup.config()).await;
    let reply = bearer(&keyward, &setup.token(&setup.idp.claims(APP_STRANGER))).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    assert!(setup.backend.seen().is_empty());
    assert_nothing_leaked(&keyward, &setup.idp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_id_is_azp_else_appid_else_client_id_else_sub() {
    let setup = Setup::new().await;
    let keyward = setup.ready(setup.config()).await;
    let idp = &setup.idp;
    let edited = |edit: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut claims = idp.claims(APP_STRANGER);
        edit(claims.as_object_mut().unwrap());
        setup.token(&claims)
    };
    let cases = [
        (
            "appid",
            StatusCode::OK,
            edited(&|c| {
                c.remove("azp");
                c.insert("appid".into(), APP_A.into());
            }),
        ),
        (
            "client_id",
            StatusCode::OK,
            edited(&|c| {
                c.remove("azp");
                c.insert("client_id".into(), APP_A.into());
            }),
        ),
        (
            "sub",
            StatusCode::OK,
            edited(&|c| {
                c.remove("azp");
                c.insert("sub".into(), APP_A.into());
            }),
        ),
        (
            "azp before appid",
            StatusCode::FORBIDDEN,
            edited(&|c| {
                c.insert("appid".into(), APP_A.into());
            }),
        ),
        (
            "appid before sub",
            StatusCode::FORBIDDEN,
            edited(&|c| {
                c.remove("azp");
                c.insert("appid".into(), APP_STRANGER.into());
                c.insert("sub".into(), APP_A.into());
            }),
        ),
    ];
    for (what, status, token) in &cases {
        let reply = bearer(&keyward, token).await;
        assert_eq!(reply.status, *status, "{what}: {}", reply.text());
    }
    assert_nothing_leaked(&keyward, idp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_a_required_scope_gets_403_insufficient_scope() {
    let setup = Setup::new().await;
    let mut issuer = setup.issuer();
    issuer.insert("required_scopes".into(), vec![SCOPE].into());
    let keyward = setup.ready(setup.config_with(issuer)).await;
    let idp = &setup.idp;
    let delegated = |scp: Option<&str>| {
        let mut claims = idp.claims(APP_A);
        match scp {
            Some(scp) => claims["scp"] = scp.into(),
            None => {
                claims.as_object_mut().unwrap().remove("scp");
            }
        }
        setup.token(&claims)
    };
    let app = |roles: Value| {
        let mut claims = idp.app_claims(APP_A);
        claims["roles"] = roles;
        setup.token(&claims)
    };

    for (what, token) in [
        ("scp among others", delegated(Some("openid mcp.tools profile"))),
        ("app role", app(json!(["Other.Read", SCOPE]))),
    ] {
        assert_eq!(bearer(&keyward, &token).await.status, StatusCode::OK, "{what}");
    }
    for (what, token) in [
        ("another scope", delegated(Some("openid profile"))),
        ("a longer scope", delegated(Some("mcp.tools.admin"))),
        ("no scp", delegated(None)),
        ("another role", app(json!(["Other.Read"]))),
        ("a longer role", app(json!(["mcp.tools.admin"]))),
    ] {
        let reply = bearer(&keyward, &token).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{what}: {}", reply.text());
        let challenge = challenge(&reply);
        assert!(challenge.starts_with("Bearer "), "{what}: {challenge:?}");
        assert!(challenge.contains("error=\"insufficient_scope\""), "{what}: {challenge:?}");
        assert!(challenge.contains("scope=\""), "{what}: {challenge:?}");
        assert!(challenge.contains(SCOPE), "{what}: {challenge:?}");
    }
    assert_eq!(setup.backend.seen().len(), 2);
    assert_nothing_leaked(&keyward, idp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_clients_work_beside_oauth_but_not_both_credentials_at_once() {
    let setup = Setup::new().await;
    setup.secrets.write_secret("mcp-client-agent-key", API_KEY);
    setup.secrets.write_secret("mcp-client-agent-both", "oauth-suite-both-key-9a8b7c6d5e4f3a2b");
    let mut both = token_client("agent-both", &[APP_STRANGER]);
    both.insert("secret".into(), "mcp-client-agent-both".into());
    let config =
        setup.config().client("agent-key", "mcp-client-agent-key").push("ingress.clients", both);
    let keyward = setup.ready(config).await;

    assert_eq!(keyward.status(API_KEY).await, StatusCode::OK);
    assert_eq!(keyward.status("oauth-suite-both-key-9a8b7c6d5e4f3a2b").await, StatusCode::OK);
    assert_eq!(keyward.status("not-a-key").await, StatusCode::UNAUTHORIZED);
    let token = setup.agent_token();
    assert_eq!(bearer(&keyward, &token).await.status, StatusCode::OK);
    let stranger = setup.token(&setup.idp.claims(APP_STRANGER));
    assert_eq!(bearer(&keyward, &stranger).await.status, StatusCode::OK);
    let clients: Vec<String> = setup
        .backend
        .seen()
        .iter()
        .map(|s| s.headers["x-keyward-client"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(clients, ["agent-key", "agent-both", "agent-a", "agent-both"]);

    let authorization = format!("Bearer {token}");
    let both = [("authorization", authorization.as_str()), ("x-api-key", API_KEY)];
    let reply = send(&client::http1(), request(keyward.ingress, "GET", "/mcp", &both, "")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert_eq!(setup.backend.seen().len(), 4, "a request with two credentials was forwarded");
    assert_nothing_leaked(&keyward, &setup.idp);
}
