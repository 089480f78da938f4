//! The config loader (`keyward::config::Config::parse`) on any UTF-8 text.
//!
//! Input: UTF-8 text (anything else is skipped). The seeds plant the canary `kwcanary7f3e`
//! in values, where a secret pasted into the wrong key would be.
//! Invariants:
//! - no panic, and an accepted config keeps the promises the rest of keyward relies on
//!   ("validated at load"): an http backend, at least one client, routes shaped `/name/`,
//!   positive timeouts, at least one worker;
//! - every error is `Invalid` and displays as `{key}: {problem}`, both non-empty; a syntax
//!   error is `config: ...` with a line and column inside the text;
//! - in a document whose keys are all bare, the key is a dotted path whose names are keys of
//!   the document or of keyward's reference config (with `[n]` indexes);
//! - when the canary occurs in no key of the document, no error message contains it.

#![no_main]

use std::collections::HashSet;

use keyward::config::{Config, ConfigError, REFERENCE};
use libfuzzer_sys::fuzz_target;

const CANARY: &str = "kwcanary7f3e";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text) {
        Ok(config) => check_accepted(&config),
        Err(err) => check_refused(text, &err),
    }
});

fn check_accepted(config: &Config) {
    assert_eq!(config.backend_uri().scheme_str(), Some("http"));
    assert!(!config.ingress.clients.is_empty());
    let secrets = config.referenced_secrets();
    assert!(!secrets.is_empty() && secrets.windows(2).all(|w| w[0] < w[1]), "{secrets:?}");
    for route in config.egress.iter().flat_map(|e| &e.routes) {
        assert!(route.prefix.starts_with('/') && route.prefix.ends_with('/'), "{route:?}");
        assert!(!route.timeout.is_zero());
    }
    let ingress = &config.ingress;
    assert!(!ingress.unauthenticated_timeout().is_zero());
    assert!(!ingress.header_read_timeout.is_zero() && !ingress.idle_timeout.is_zero());
    assert!(ingress.worker_count() >= 1);
}

/// What the parsed document says about its keys and the canary.
#[derive(Default)]
struct Facts {
    keys: HashSet<String>,
    all_bare: bool,
    canary_in_key: bool,
}

fn walk(value: &toml::Value, facts: &mut Facts) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                facts.all_bare &= !key.is_empty()
                    && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                facts.canary_in_key |= key.contains(CANARY);
                facts.keys.insert(key.clone());
                walk(value, facts);
            }
        }
        toml::Value::Array(values) => values.iter().for_each(|v| walk(v, facts)),
        _ => {}
    }
}

fn check_refused(text: &str, err: &ConfigError) {
    let ConfigError::Invalid { key, problem } = err else {
        panic!("parsing text cannot fail to read a file: {err}");
    };
    let shown = err.to_string();
    assert!(!key.is_empty() && !problem.is_empty(), "{shown:?}");
    assert_eq!(shown, format!("{key}: {problem}"));

    let Ok(document) = text.parse::<toml::Table>() else {
        // Not TOML: the whole file is at fault, at a place inside it.
        assert_eq!(key, "config", "{shown:?}");
        let (line, column) = position(problem).unwrap_or_else(|| panic!("no position: {shown:?}"));
        assert!(line >= 1 && line <= text.split('\n').count(), "{shown:?}");
        assert!(column >= 1 && column <= text.len() + 1, "{shown:?}");
        return;
    };
    let mut facts = Facts { all_bare: true, ..Facts::default() };
    walk(&toml::Value::Table(document), &mut facts);

    if facts.all_bare && key != "config" {
        let reference: HashSet<&str> = REFERENCE
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .collect();
        for segment in key.split('.') {
            let name = segment.split('[').next().unwrap_or_default();
            assert!(
                name == "?" || facts.keys.contains(name) || reference.contains(name),
                "{name:?} is no key: {shown:?}"
            );
            let indexes = &segment[name.len()..];
            assert!(
                indexes.split('[').skip(1).all(|index| index
                    .strip_suffix(']')
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))),
                "{segment:?} is no path segment: {shown:?}"
            );
        }
    }

    assert!(facts.canary_in_key || !shown.contains(CANARY), "a value was echoed: {shown:?}");
}

/// The `(line L, column C)` a syntax error ends with.
fn position(problem: &str) -> Option<(usize, usize)> {
    let at = problem.rfind(" (line ")?;
    let (line, column) = problem[at + 7..].strip_suffix(')')?.split_once(", column ")?;
    Some((line.parse().ok()?, column.parse().ok()?))
}
