//! The `fake-idp` binary the Python suites use, driving the real keyward through its control
//! API.

use super::*;

/// POSTs `body` to the control API at `control` (`http://127.0.0.1:PORT`); the JSON answer.
async fn control(control: &str, path: &str, body: &Value) -> Value {
    let addr = control.strip_prefix("http://").expect("http URL").parse().expect("address");
    let reply = send(&client::http1(), request(addr, "POST", path, &[], &body.to_string())).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
    serde_json::from_slice(&reply.body).expect("JSON answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_idp_binary_drives_keyward_through_its_control_api() {
    let setup = Setup::new().await;
    let ca_out = setup.dir.path().join("bin-idp-ca.pem");
    let mut command = Command::new(env!("CARGO_BIN_EXE_fake-idp"));
    command.arg("--ca-out").arg(&ca_out);
    let child = ReadyChild::spawn(command).await;
    let ready = &child.ready;
    let (issuer, url) = (ready["issuer"].as_str().unwrap(), ready["control"].as_str().unwrap());
    assert!(issuer.starts_with("https://localhost:") && issuer.ends_with("/v2.0"), "{issuer}");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(ready["jwks_uri"], issuer.replace("/v2.0", "/discovery/v2.0/keys"));
    let app = ready["resource_app_id"].as_str().unwrap();

    let mut entry = Table::new();
    entry.insert("issuer".into(), issuer.into());
    entry.insert("ca_file".into(), ca_out.to_str().unwrap().into());
    entry.insert("audiences".into(), Toml::Array(vec![app.into()]));
    let keyward = setup.ready(setup.config_with(entry)).await;

    let minted = control(url, "/mint", &json!({ "app_id": APP_A, "alg": "PS256" })).await;
    let token = minted["token"].as_str().unwrap().to_owned();
    assert_eq!(bearer(&keyward, &token).await.status, StatusCode::OK);
    let hostile = control(url, "/mint", &json!({ "app_id": APP_A, "alg": "HS256" })).await;
    let hostile = hostile["token"].as_str().unwrap().to_owned();
    assert_invalid_token("HS256 from the binary", &bearer(&keyward, &hostile).await);
    let expired =
        json!({ "app_id": APP_A, "claims": { "exp": now() - 600, "nbf": now() - 4_000 } });
    let expired = control(url, "/mint", &expired).await["token"].as_str().unwrap().to_owned();
    assert_invalid_token("expired from the binary", &bearer(&keyward, &expired).await);

    let output = keyward.output();
    assert_absent(&output, "a bearer token", &[&token, &hostile, &expired]);
    let line = &child.line;
    assert!(!line.contains("eyJ"), "the ready line carries a token: {line}");
}
