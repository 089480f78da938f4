//! mcp-backend: the MCP server that sits behind keyward, serving twelve read-only health tools
//! over Streamable HTTP at `/mcp`: stateless by default, with in-memory sessions on `--stateful`.
//!
//! It holds no secret and must never send a credential: it reaches the health-data API through
//! keyward's egress, which adds the upstream's key. This file is CLI and wiring only.

mod health_api;
mod server;
mod tools;

#[cfg(test)]
mod e2e_tests;

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};

/// A minimal stateless MCP server with health-data tools; it holds no secret.
#[derive(Debug, Parser)]
#[command(name = "mcp-backend", version, about)]
struct Cli {
    /// Address to listen on (keep it on loopback: only keyward should reach it).
    #[arg(long, env = "MCP_BACKEND_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,

    /// Base URL of the health-data API: keyward's egress route, plain HTTP on loopback.
    #[arg(
        long = "health-api",
        env = "HEALTH_API_URL",
        default_value = "http://127.0.0.1:8090/health/"
    )]
    health_api: String,

    /// Extra Host header values to accept, on top of localhost, 127.0.0.1 and ::1.
    #[arg(long = "allowed-host", env = "MCP_BACKEND_ALLOWED_HOSTS", value_delimiter = ',')]
    allowed_hosts: Vec<String>,

    /// Answer simple calls with application/json instead of an SSE stream.
    #[arg(long, env = "MCP_BACKEND_JSON_RESPONSE")]
    json_response: bool,

    /// Issue an `Mcp-Session-Id` on `initialize` and require it afterwards (GET opens the
    /// session's SSE stream, DELETE ends it); sessions live in this process's memory.
    #[arg(long, env = "MCP_BACKEND_STATEFUL")]
    stateful: bool,

    /// Log format on stdout.
    #[arg(long, env = "MCP_BACKEND_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);

    let api = health_api::HealthApi::new(&cli.health_api)
        .with_context(|| format!("--health-api {:?} is not usable", cli.health_api))?;
    let options = server::McpOptions {
        extra_allowed_hosts: cli.allowed_hosts,
        json_response: cli.json_response,
        stateful: cli.stateful,
    };
    let service = server::mcp_service(api.clone(), &options);
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let addr = listener.local_addr().context("listener has no address")?;
    tracing::info!(
        %addr,
        path = server::MCP_PATH,
        health_api = api.base(),
        "mcp-backend listening"
    );
    server::serve(listener, service, shutdown_signal()).await;
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // rmcp logs every stateless request's lifecycle at info; keep its warnings only.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rmcp=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGTERM (what container runtimes send) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
