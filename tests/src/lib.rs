//! Support for keyward's test suites: a streaming test backend, an HTTP client, a config
//! builder, temporary secret directories, fakes of Azure and of an OpenID provider, and a
//! handle on the real `keyward` binary.
//!
//! Everything listens on and connects to loopback only.

pub mod backend;
pub mod client;
pub mod config;
pub mod dir;
pub mod fake_azure;
pub mod fake_idp;
pub mod leak;
pub mod otlp;
pub mod process;
pub mod tls;
