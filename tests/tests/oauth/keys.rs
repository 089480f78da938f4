//! The issuer's keys over time: loaded before keyward is ready, fetched again for a new kid
//! (at most once per `unknown_kid_interval`), rotated under load, and kept through an outage.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_jwks_uri_skips_discovery() {
    let setup = Setup::new().await;
    let mut issuer = setup.issuer();
    issuer.insert("jwks_uri".into(), setup.idp.jwks_uri().into());
    let keyward = setup.ready(setup.config_with(issuer)).await;
    assert_eq!(bearer(&keyward, &setup.agent_token()).await.status, StatusCode::OK);
    assert_eq!(setup.idp.discovery_fetches(), 0);
    assert!(setup.idp.jwks_fetches() >= 1);
    assert_nothing_leaked(&keyward, &setup.idp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyward_is_not_ready_until_the_issuer_s_keys_are_loaded() {
    let setup = Setup::new().await;
    setup.idp.set_down(true);
    let keyward = Keyward::start(&setup.config().write(&setup.dir));
    let idp = &setup.idp;
    let tried = eventually(Duration::from_secs(15), || async {
        idp.discovery_fetches() + idp.jwks_fetches() >= 1
    })
    .await;
    assert!(tried, "keyward never asked for the keys:\n{}", keyward.output());
    assert_eq!(keyward.readyz().await, StatusCode::SERVICE_UNAVAILABLE);
    let token = setup.agent_token();
    let refused = bearer(&keyward, &token).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.text());
    assert!(setup.backend.seen().is_empty());

    idp.set_down(false);
    assert!(keyward.wait_ready(Duration::from_secs(30)).await, "{}", keyward.output());
    assert_eq!(bearer(&keyward, &token).await.status, StatusCode::OK);
    assert_nothing_leaked(&keyward, idp);
}

/// Bearer requests one after another with the token `switch` last set, until `finish`.
struct Load {
    token: Arc<Mutex<(usize, String)>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Outcome>,
}

/// Successes per token generation, and every failure as (generation, status).
#[derive(Debug, Default)]
struct Outcome {
    ok: Vec<usize>,
    failed: Vec<(usize, StatusCode)>,
}

impl Load {
    fn start(keyward: &Keyward, token: String) -> Self {
        let token = Arc::new(Mutex::new((0, token)));
        let stop = Arc::new(AtomicBool::new(false));
        let (current, stopped, addr) = (token.clone(), stop.clone(), keyward.ingress);
        let task = tokio::spawn(async move {
            let http = client::http1();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut outcome = Outcome::default();
            while !stopped.load(Ordering::SeqCst) && Instant::now() < deadline {
                let (generation, token) = current.lock().unwrap().clone();
                let authorization = format!("Bearer {token}");
                let headers = [("authorization", authorization.as_str())];
                let status = send(&http, request(addr, "GET", "/mcp", &headers, "")).await.status;
                if status == StatusCode::OK {
                    outcome.ok.resize(outcome.ok.len().max(generation + 1), 0);
                    outcome.ok[generation] += 1;
                } else {
                    outcome.failed.push((generation, status));
                }
            }
            outcome
        });
        Self { token, stop, task }
    }

    /// Sends `token` from now on, as the next generation.
    fn switch(&self, token: String) {
        let mut current = self.token.lock().unwrap();
        *current = (current.0 + 1, token);
    }

    async fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("load task")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_under_load_fails_no_request() {
    let setup = Setup::new().await;
    let config = setup.config().set("ingress.oauth.unknown_kid_interval", "1s");
    let keyward = setup.ready(config).await;
    let idp = &setup.idp;
    let old = idp.signing_kid(Kty::Rsa);
    let load = Load::start(&keyward, setup.agent_token());
    // Past one unknown_kid_interval since the keys were loaded, so the new kid may be fetched.
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    let fetches = idp.jwks_fetches();
    let new = idp.rotate(Kty::Rsa);
    load.switch(idp.token(&new, Alg::Rs256, &idp.claims(APP_A)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    idp.retire(&old);
    load.switch(idp.token(&new, Alg::Ps256, &idp.claims(APP_A)));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let outcome = load.finish().await;
    assert_eq!(outcome.failed, [], "requests failed during the rotation");
    assert_eq!(outcome.ok.len(), 3, "{outcome:?}");
    assert!(outcome.ok.iter().all(|&n| n > 0), "{outcome:?}");
    assert!(idp.jwks_fetches() > fetches, "the new kid was accepted without fetching it");
    assert_nothing_leaked(&keyward, idp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_refetch_the_keys_at_most_once_per_interval() {
    let setup = Setup::new().await;
    let interval = Duration::from_secs(2);
    let config = setup.config().set("ingress.oauth.unknown_kid_interval", "2s");
    let keyward = setup.ready(config).await;
    let idp = &setup.idp;

    let before = idp.jwks_fetches();
    let started = Instant::now();
    for _ in 0..25 {
        let unknown = idp.new_key(Kty::Ec);
        let token = idp.token(&unknown, Alg::Es256, &idp.claims(APP_A));
        assert_invalid_token("an unknown kid", &bearer(&keyward, &token).await);
    }
    let elapsed = started.elapsed();
    let fetched = idp.jwks_fetches() - before;
    let allowed = 1 + (elapsed.as_millis() / interval.as_millis()) as usize;
    assert!(fetched <= allowed, "{fetched} key set fetches for 25 unknown kids in {elapsed:?}");

    // A kid published meanwhile is found by the next refetch the interval allows; the
    // periodic refresh (1 h) would be far too late.
    let published = idp.rotate(Kty::Ec);
    let token = idp.token(&published, Alg::Es256, &idp.claims(APP_A));
    let accepted = eventually(interval * 3, || async {
        bearer(&keyward, &token).await.status == StatusCode::OK
    })
    .await;
    assert!(accepted, "a newly published kid was never fetched");
    let total = idp.jwks_fetches() - before;
    let allowed = 1 + (started.elapsed().as_millis() / interval.as_millis()) as usize;
    assert!(total <= allowed, "{total} fetches in {:?}", started.elapsed());
    assert_nothing_leaked(&keyward, idp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_outage_after_start_keeps_the_cached_keys_and_readiness() {
    let setup = Setup::new().await;
    let config = setup.config().set("ingress.oauth.jwks_refresh_interval", "1s");
    let keyward = setup.ready(config).await;
    let idp = &setup.idp;
    let load = Load::start(&keyward, setup.agent_token());

    idp.set_down(true);
    let attempts = idp.jwks_fetches() + idp.discovery_fetches();
    // Two refresh attempts answered 503 while requests go on.
    let retried = eventually(Duration::from_secs(15), || async {
        idp.jwks_fetches() + idp.discovery_fetches() >= attempts + 2
    })
    .await;
    assert!(retried, "keyward did not refresh during the outage:\n{}", keyward.output());
    assert_eq!(keyward.readyz().await, StatusCode::OK, "an outage made keyward unready");
    load.switch(setup.agent_token());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let outcome = load.finish().await;
    assert_eq!(outcome.failed, [], "requests failed while the IdP was down");
    assert!(outcome.ok.iter().all(|&n| n > 0), "{outcome:?}");
    assert!(keyward.ready().await);
    idp.set_down(false);
    assert_nothing_leaked(&keyward, idp);
}
