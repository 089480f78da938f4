//! Whatever `check-config` accepts starts, and whatever it refuses is refused by key: random
//! values (well-formed, malformed, hostile) in random keys of a valid configuration. An accepted
//! configuration must build a running `App` without a panic (its listeners forced onto
//! `127.0.0.1:0`); a refused one must name a key and never echo the value it refused.

use keyward::app::App;
use keyward::config::Config;
use proptest::prelude::*;

/// Every key the generator may set, with the TOML section it lives in.
const KEYS: &[(&str, &str)] = &[
    ("ingress", "backend"),
    ("ingress", "allowed_origins"),
    ("ingress", "resource_metadata"),
    ("ingress", "max_connections"),
    ("ingress", "header_read_timeout"),
    ("ingress", "idle_timeout"),
    ("ingress", "unauthenticated_timeout"),
    ("ingress", "max_header_bytes"),
    ("ingress", "max_body_bytes"),
    ("ingress", "backend_timeout"),
    ("ingress", "auth_failures_per_minute"),
    ("ingress", "auth_failure_burst"),
    ("ingress", "shutdown_grace"),
    ("ingress", "workers"),
    ("ingress", "trusted_proxies"),
    ("egress_route", "upstream"),
    ("egress_route", "header"),
    ("egress_route", "timeout"),
    ("egress_route", "prefix"),
    ("secrets", "rotation_overlap"),
    ("secrets", "watch_interval"),
    ("telemetry", "otlp_endpoint"),
    ("telemetry", "log_format"),
    ("oauth", "resource"),
    ("oauth", "scopes"),
    ("oauth", "resource_name"),
    ("oauth", "max_token_bytes"),
    ("oauth", "unknown_kid_interval"),
    ("issuer", "issuer"),
    ("issuer", "audiences"),
    ("issuer", "required_scopes"),
    ("issuer", "clock_skew"),
    ("issuer", "algorithms"),
];

/// The value planted where a refused value must never be echoed.
const PLANTED: &str = "sk-planted-9f8e";

fn value() -> impl Strategy<Value = String> {
    let strings = prop_oneof![
        Just("http://127.0.0.1:8081".to_owned()),
        Just("https://mcp.example.com/.well-known/oauth-protected-resource".to_owned()),
        Just("https://apim.example.net/base/".to_owned()),
        Just("http://apim.example.net/".to_owned()),
        Just("https://x\n".to_owned()),
        Just("https://".to_owned()),
        Just("10.0.0.0/8".to_owned()),
        Just("30s".to_owned()),
        Just("0s".to_owned()),
        Just("/health/".to_owned()),
        Just("X-Custom-Key".to_owned()),
        Just("json".to_owned()),
        Just("https://localhost:1/tenant/v2.0".to_owned()),
        Just("mcp.tools".to_owned()),
        Just("RS256".to_owned()),
        Just("HS256".to_owned()),
        Just(format!("{PLANTED}\"\\")),
        "[ -~]{0,24}".prop_map(|s| s.to_owned()),
        any::<String>().prop_map(|s| s.chars().take(24).collect()),
    ];
    prop_oneof![
        strings.clone().prop_map(|s| toml_string(&s)),
        proptest::collection::vec(strings, 0..3).prop_map(|v| format!(
            "[{}]",
            v.iter().map(|s| toml_string(s)).collect::<Vec<_>>().join(", ")
        )),
        (0u64..100_000).prop_map(|n| n.to_string()),
        Just("true".to_owned()),
    ]
}

fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn text(overrides: &[(usize, String)]) -> String {
    let mut sections: [Vec<String>; 6] = Default::default();
    for (key, value) in overrides {
        let (section, name) = KEYS[*key % KEYS.len()];
        let index = ["ingress", "egress_route", "secrets", "telemetry", "oauth", "issuer"]
            .iter()
            .position(|s| *s == section)
            .unwrap();
        if !sections[index].iter().any(|line| line.starts_with(&format!("{name} ="))) {
            sections[index].push(format!("{name} = {value}"));
        }
    }
    let [ingress, route, secrets, telemetry, oauth, issuer] =
        sections.map(|lines| lines.join("\n"));
    // Bearer tokens only when the generator touched them; the issuer is on loopback.
    let oauth = if oauth.is_empty() && issuer.is_empty() {
        String::new()
    } else {
        let resource = if oauth.contains("resource =") {
            ""
        } else {
            "resource = \"https://mcp.example.com/mcp\"\n"
        };
        let iss = if issuer.contains("issuer =") {
            ""
        } else {
            "issuer = \"https://localhost:1/tenant/v2.0\"\n"
        };
        format!(
            "[ingress.oauth]\n{resource}{oauth}\n[[ingress.oauth.issuers]]\n{iss}{issuer}\n\
             [[ingress.clients]]\nid = \"token-agent\"\ntoken_ids = [\"app\"]\n"
        )
    };
    let route_defaults =
        [("prefix", "\"/health/\""), ("upstream", "\"https://apim.example.net/b/\"")]
            .iter()
            .filter(|(name, _)| !route.contains(&format!("{name} =")))
            .map(|(name, value)| format!("{name} = {value}\n"))
            .collect::<String>();
    format!(
        "[ingress]\nlisten = \"127.0.0.1:0\"\n{ingress}\n\
         [[ingress.clients]]\nid = \"agent\"\nsecret = \"mcp-client-agent\"\n{oauth}\
         [egress]\nlisten = \"127.0.0.1:0\"\n\
         [[egress.routes]]\nsecret = \"apim-key\"\n{route_defaults}{route}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [secrets]\nsource = \"file\"\ndir = \"/nonexistent/keyward-property\"\n{secrets}\n\
         [telemetry]\n{telemetry}\n"
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

/// One case: `Ok(true)` when accepted and started, `Ok(false)` when refused by key.
fn check(text: &str) -> Result<bool, TestCaseError> {
    match Config::parse(text) {
        Ok(mut config) => {
            // Nothing the generator sets moves a listener off loopback port 0, but be sure.
            config.ingress.listen = "127.0.0.1:0".parse().unwrap();
            config.admin.listen = "127.0.0.1:0".parse().unwrap();
            if config.ingress.workers.is_some_and(|n| n > 4) {
                config.ingress.workers = Some(4);
            }
            let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                runtime().block_on(async {
                    if let Ok(app) = App::start(config, Default::default()).await {
                        app.shutdown();
                        app.wait().await;
                    }
                })
            }));
            prop_assert!(started.is_ok(), "an accepted configuration panicked at start:\n{text}");
            Ok(true)
        }
        Err(err) => {
            let err = err.to_string();
            let (key, problem) = err.split_once(": ").unwrap_or(("", ""));
            let key_ok = key == "config"
                || key.split('.').all(|part| {
                    !part.is_empty()
                        && part.chars().all(|c| c.is_ascii_alphanumeric() || "_[]-".contains(c))
                });
            prop_assert!(key_ok && !problem.is_empty(), "no key in {err:?} for:\n{text}");
            prop_assert!(!err.contains(PLANTED), "the value was echoed: {err}");
            Ok(false)
        }
    }
}

#[test]
fn accepted_configs_start_and_refused_ones_name_a_key() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    });
    let accepted = std::cell::Cell::new(0);
    let refused = std::cell::Cell::new(0);
    let cases = proptest::collection::vec((0usize..64, value()), 0..5);
    runner
        .run(&cases, |overrides| {
            let counter = if check(&text(&overrides))? { &accepted } else { &refused };
            counter.set(counter.get() + 1);
            Ok(())
        })
        .unwrap();
    // Not vacuous: both sides were exercised.
    assert!(
        accepted.get() >= 16 && refused.get() >= 16,
        "{} accepted, {} refused",
        accepted.get(),
        refused.get()
    );
    eprintln!("{} accepted and started, {} refused by key", accepted.get(), refused.get());
}
