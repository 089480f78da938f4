//! fake-azure: a fake Azure Key Vault and managed identity endpoint on loopback, for running
//! keyward locally without Azure.
//!
//! `fake-azure --dir DIR [--vault-port P] [--identity-port P] [--secret NAME=@FILE ...]`
//! writes `DIR/ca.pem`, then prints one JSON line on stdout,
//! `{"vault_url","vault_addr","identity_endpoint","identity_header","ca_file"}`, and serves
//! until SIGTERM or Ctrl-C. Secret values are read from files only, never from the command
//! line, and are never printed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use keyward_tests::fake_azure::FakeAzure;

/// Serves a fake Key Vault (HTTPS) and managed identity endpoint (HTTP) on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "fake-azure")]
struct Cli {
    /// Directory to write `ca.pem` (the CA that signed the vault's certificate) into.
    #[arg(long)]
    dir: PathBuf,

    /// Vault port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    vault_port: u16,

    /// Identity endpoint port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    identity_port: u16,

    /// A secret to serve, as NAME=@FILE (the file's content, trailing CR/LF removed). Repeat
    /// for more secrets.
    #[arg(long = "secret", value_name = "NAME=@FILE")]
    secrets: Vec<String>,

    /// Require token requests to name this user-assigned identity by `client_id`.
    #[arg(long)]
    client_id: Option<String>,

    /// Lifetime of issued tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    token_lifetime: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fake-azure: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let secrets = cli.secrets.iter().map(|spec| load(spec)).collect::<Result<Vec<_>, _>>()?;
    let fake = FakeAzure::start_on(cli.vault_port, cli.identity_port)
        .await
        .map_err(|e| format!("cannot listen: {e}"))?;
    for (name, value) in &secrets {
        fake.set_secret(name, value);
    }
    if let Some(id) = &cli.client_id {
        fake.expect_client_id(Some(id));
    }
    fake.set_token_lifetime(cli.token_lifetime);
    std::fs::create_dir_all(&cli.dir)
        .map_err(|e| format!("cannot create {}: {e}", cli.dir.display()))?;
    let ca_file = cli.dir.join("ca.pem");
    std::fs::write(&ca_file, fake.ca_pem())
        .map_err(|e| format!("cannot write {}: {e}", ca_file.display()))?;
    let ready = serde_json::json!({
        "vault_url": fake.vault_url(),
        "vault_addr": fake.vault_addr().to_string(),
        "identity_endpoint": fake.identity_endpoint(),
        "identity_header": fake.identity_header(),
        "ca_file": ca_file.display().to_string(),
    });
    println!("{ready}");
    terminated().await;
    Ok(())
}

/// Reads one `NAME=@FILE` secret. Errors name the argument's name and file, never a value.
fn load(spec: &str) -> Result<(String, String), String> {
    let (name, source) =
        spec.split_once('=').ok_or_else(|| "--secret takes NAME=@FILE".to_owned())?;
    let Some(file) = source.strip_prefix('@') else {
        return Err(format!(
            "--secret {name}: give the value as @FILE; values are never taken from the command line"
        ));
    };
    let valid = (1..=127).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid {
        return Err(format!(
            "--secret {name:?}: Key Vault names are 1 to 127 letters, digits or dashes"
        ));
    }
    let value = std::fs::read_to_string(Path::new(file))
        .map_err(|e| format!("--secret {name}: cannot read {file}: {e}"))?;
    Ok((name.to_owned(), value.trim_end_matches(['\r', '\n']).to_owned()))
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
