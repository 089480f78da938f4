//! keyward: a sidecar that keeps every credential of an MCP server out of the MCP server.
//!
//! The modules follow the paths traffic and secrets take: `ingress` (clients in), `auth`
//! (who they are), `headers` (what may pass), `forward` (to the backend), `secrets` (where
//! credentials live, and the `Secret` type they live in), `admin` and `metrics` (what operators see), `server`
//! and `tls` (sockets), `config` and `app` (wiring).

pub(crate) mod admin;
pub mod app;
pub mod auth;
pub mod client_addr;
pub mod config;
pub mod egress;
pub(crate) mod error;
pub(crate) mod exchange;
pub(crate) mod forward;
pub mod headers;
pub(crate) mod ingress;
pub(crate) mod mcp;
pub(crate) mod metrics;
pub mod process;
pub mod safety;
pub mod secrets;
pub(crate) mod server;
pub mod telemetry;
pub(crate) mod tls;
pub(crate) mod trust;

/// The body of every response keyward sends: a forwarded stream or keyward's own short body.
pub type Body = http_body_util::Either<forward::UpstreamBody, http_body_util::Full<bytes::Bytes>>;
