//! One checked-URL type for every URL the configuration holds (the backend, upstreams, the
//! vault, the Entra ID authority host, browser origins, the OTLP endpoint, the RFC 9728
//! metadata URL), each key with its own [`Rules`]. A URL is checked once, at load, and what
//! the rest of keyward needs from it (authority, `Host` value, base path) is taken out then:
//! nothing later parses it again.

use std::net::IpAddr;

use http::header::HeaderValue;
use http::uri::{Authority, Scheme};
use http::Uri;
use serde::{Deserialize, Deserializer};

/// What a key accepts.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Accepted schemes.
    pub schemes: &'static [&'static str],
    /// `http` only to a loopback host (the rest must be https).
    pub http_only_to_loopback: bool,
    /// The path allowed.
    pub path: PathRule,
    /// The problem reported for any other shape (never quoting the value).
    pub shape: &'static str,
}

/// The path a URL may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRule {
    /// None, or `/`.
    Root,
    /// A base path ending in `/` (routes join the rest onto it).
    Base,
    /// Any path.
    Any,
}

/// `ingress.backend`: the MCP server in the pod.
pub const BACKEND: Rules = Rules {
    schemes: &["http"],
    http_only_to_loopback: false,
    path: PathRule::Root,
    shape: "must be http://host:port of the MCP server in the pod (no path, no query)",
};
/// `egress.routes[].upstream`.
pub const UPSTREAM: Rules = Rules {
    schemes: &["https", "http"],
    http_only_to_loopback: true,
    path: PathRule::Base,
    shape: "must be https://host[:port]/path/ (http only for a loopback host), ending in /, \
            with no query or user info",
};
/// `secrets.vault_url`.
pub const VAULT: Rules = Rules {
    schemes: &["https"],
    http_only_to_loopback: false,
    path: PathRule::Root,
    shape: "must be https://<vault>.vault.azure.net/ (https, no path or query)",
};
/// `secrets.authority_host`: the SDK joins `/{tenant}/oauth2/v2.0/token` onto it, which would
/// silently drop a path.
pub const AUTHORITY_HOST: Rules = Rules {
    schemes: &["https"],
    http_only_to_loopback: false,
    path: PathRule::Root,
    shape: "must be https://<host>[:port] such as https://login.microsoftonline.us (https, no \
            path or query)",
};
/// `ingress.allowed_origins[]`.
pub const ORIGIN: Rules = Rules {
    schemes: &["http", "https"],
    http_only_to_loopback: false,
    path: PathRule::Root,
    shape: "must be an origin: scheme://host[:port], no path",
};
/// `telemetry.otlp_endpoint`.
pub const OTLP: Rules = Rules {
    schemes: &["http", "https"],
    http_only_to_loopback: false,
    path: PathRule::Any,
    shape: "must be an http(s) URL",
};
/// `ingress.resource_metadata`.
pub const METADATA: Rules = Rules {
    schemes: &["https"],
    http_only_to_loopback: false,
    path: PathRule::Any,
    shape: "must be an https URL",
};

/// `ingress.oauth.resource`: the MCP endpoint's public URL (RFC 8707 resource indicator).
pub const RESOURCE: Rules = Rules {
    schemes: &["https", "http"],
    http_only_to_loopback: true,
    path: PathRule::Any,
    shape: "must be the MCP endpoint's public URL, https://host[:port]/path (http only for a \
            loopback host)",
};
/// `ingress.oauth.issuers[].issuer` and `jwks_uri`.
pub const ISSUER: Rules = Rules {
    schemes: &["https"],
    http_only_to_loopback: false,
    path: PathRule::Any,
    shape: "must be an https URL such as https://login.microsoftonline.com/<tenant>/v2.0",
};

/// A URL that passed its key's [`Rules`]: it has a scheme and an authority, no user info, no
/// fragment, and a query only where the rules allow a path of any shape.
#[derive(Debug, Clone)]
pub struct CheckedUrl {
    text: String,
    uri: Uri,
    scheme: Scheme,
    authority: Authority,
    host: HeaderValue,
}

impl CheckedUrl {
    /// Checks `text` against `rules`; the problem says what is expected, never what was found.
    pub fn parse(text: &str, rules: &Rules) -> Result<Self, &'static str> {
        let shape = rules.shape;
        if text.contains(['#', '"', '\\']) || text.chars().any(char::is_whitespace) {
            return Err(shape);
        }
        let uri: Uri = text.parse().map_err(|_| shape)?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return Err(shape);
        };
        if authority.as_str().contains('@') || authority.host().is_empty() {
            return Err(shape);
        }
        if !rules.schemes.contains(&scheme.as_str()) {
            return Err(shape);
        }
        if rules.http_only_to_loopback && scheme == Scheme::HTTP && !is_loopback(authority.host()) {
            return Err("plain http is allowed only to a loopback host; use https");
        }
        let path_ok = match rules.path {
            PathRule::Root => matches!(uri.path(), "" | "/") && uri.query().is_none(),
            PathRule::Base => uri.path().ends_with('/') && uri.query().is_none(),
            PathRule::Any => true,
        };
        if !path_ok {
            return Err(shape);
        }
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| shape)?;
        Ok(Self { text: text.to_owned(), uri, scheme, authority, host })
    }

    /// The whole URL.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// `host[:port]`.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The authority as a `Host` header value.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host
    }

    /// The path, `/` when there is none.
    pub fn path(&self) -> &str {
        match self.uri.path() {
            "" => "/",
            path => path,
        }
    }

    /// The URL as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Whether `host` (as in a URL, IPv6 in brackets) is a loopback host.
pub fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Deserializes a URL checked against `rules` (for `deserialize_with` helpers).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D, rules: &Rules) -> Result<CheckedUrl, D::Error> {
    let text = String::deserialize(d)?;
    CheckedUrl::parse(&text, rules).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_s_rules() {
        assert!(CheckedUrl::parse("http://127.0.0.1:8081", &BACKEND).is_ok());
        assert!(CheckedUrl::parse("https://127.0.0.1:8081", &BACKEND).is_err());
        assert!(CheckedUrl::parse("http://127.0.0.1:8081/mcp", &BACKEND).is_err());
        let upstream = CheckedUrl::parse("https://apim.example.net/b/", &UPSTREAM).unwrap();
        assert_eq!((upstream.authority().as_str(), upstream.path()), ("apim.example.net", "/b/"));
        assert_eq!(upstream.host_header(), "apim.example.net");
        assert!(CheckedUrl::parse("http://[::1]:8095/api/", &UPSTREAM).is_ok());
        assert_eq!(
            CheckedUrl::parse("http://apim.example.net/", &UPSTREAM).unwrap_err(),
            "plain http is allowed only to a loopback host; use https"
        );
        for bad in [
            "https://apim.example.net/no-slash",
            "https://user:pw@apim.example.net/",
            "https://apim.example.net/?code=1",
            "ftp://apim.example.net/",
            "/relative/",
            "https://x/\n",
        ] {
            assert!(CheckedUrl::parse(bad, &UPSTREAM).is_err(), "{bad}");
        }
        assert!(CheckedUrl::parse("https://mcp.example/.well-known/x?y=1", &METADATA).is_ok());
        assert!(CheckedUrl::parse("https://x\n", &METADATA).is_err());
        assert!(CheckedUrl::parse("https://", &METADATA).is_err());
        assert!(CheckedUrl::parse("https://a.example#frag", &ORIGIN).is_err());
        assert_eq!(
            CheckedUrl::parse("https://kv.vault.test/", &VAULT).unwrap().as_str(),
            "https://kv.vault.test/"
        );
    }
}
