//! fake-idp: a fake Entra ID OpenID provider on loopback, for the Python suites and for running
//! keyward's OAuth ingress locally without Entra.
//!
//! `fake-idp --ca-out FILE [--port P] [--control-port P]` writes the CA that signed the
//! provider's `localhost` certificate to FILE, then prints one JSON line on stdout,
//! `{"issuer","issuer_v1","jwks_uri","control","tenant_id","resource_app_id","ca_file"}`, and
//! serves until SIGTERM or Ctrl-C: the provider over HTTPS, and its control API (mint tokens,
//! rotate and retire keys, go down and up; `keyward_tests::fake_idp::ControlServer` documents
//! the routes) over plain HTTP, both on 127.0.0.1. Tokens are returned to the control
//! client only, never printed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use keyward_tests::fake_idp::{ControlServer, FakeIdp};

/// Serves a fake Entra ID OpenID provider (HTTPS) and its control API (HTTP) on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "fake-idp")]
struct Cli {
    /// File to write the CA certificate (PEM) that signed the provider's certificate to.
    #[arg(long)]
    ca_out: PathBuf,

    /// Provider port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,

    /// Control API port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    control_port: u16,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fake-idp: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let idp =
        Arc::new(FakeIdp::start_on(cli.port).await.map_err(|e| format!("cannot listen: {e}"))?);
    let control = ControlServer::start(idp.clone(), cli.control_port)
        .await
        .map_err(|e| format!("cannot listen for control: {e}"))?;
    if let Some(parent) = cli.ca_out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::write(&cli.ca_out, idp.ca_pem())
        .map_err(|e| format!("cannot write {}: {e}", cli.ca_out.display()))?;
    let ready = serde_json::json!({
        "issuer": idp.issuer(),
        "issuer_v1": idp.issuer_v1(),
        "jwks_uri": idp.jwks_uri(),
        "control": control.url(),
        "tenant_id": idp.tenant_id(),
        "resource_app_id": idp.resource_app_id(),
        "ca_file": cli.ca_out.display().to_string(),
    });
    println!("{ready}");
    terminated().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn terminated() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
