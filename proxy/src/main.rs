//! The `keyward` binary: command line and process lifecycle only; the rest is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use keyward::app::App;
use keyward::config::{self, Config};
use keyward::telemetry::redact::Redactor;
use std::sync::Arc;

/// Every heap block is zeroed when it is freed: what held a key (a header map, a body
/// buffer, the safety net's automaton) leaves nothing behind for a later allocation to read.
#[global_allocator]
static ALLOCATOR: zeroizing_alloc::ZeroAlloc<std::alloc::System> =
    zeroizing_alloc::ZeroAlloc(std::alloc::System);

/// keyward keeps every credential of an MCP server out of the MCP server: it checks each
/// client's X-Api-Key in constant time, strips client credentials, tells the backend who the
/// client is, and streams MCP (SSE included) both ways.
#[derive(Debug, Parser)]
#[command(version, after_long_help = concat!(
    "CONFIGURATION (TOML; names and places, never secret values):\n\n",
    include_str!("../keyward.example.toml"),
))]
struct Cli {
    /// The configuration file.
    #[arg(long, short, env = "KEYWARD_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve (the default).
    Run,
    /// Validate the configuration and exit: 0 when valid, 2 with the reason otherwise.
    CheckConfig,
    /// Read a client key from standard input (not echoed at a terminal) and print the
    /// `sha256:<hex>` value to store as that client's secret instead of the key.
    HashKey,
}

fn main() -> ExitCode {
    // First: nothing below may leave a core file or readable memory behind.
    let unhardened = keyward::process::harden();
    let cli = Cli::parse();
    if let Some(Command::HashKey) = cli.command {
        return hash_key();
    }
    let Some(path) = cli.config else {
        eprintln!("keyward: no configuration; pass --config PATH or set KEYWARD_CONFIG");
        return ExitCode::from(2);
    };
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("keyward: invalid configuration {}: {err}", path.display());
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => {
            println!("{}: valid", path.display());
            println!("{}", summary(&config));
            for warning in warnings(&config) {
                eprintln!("keyward: warning: {warning}");
            }
            for notice in notices(&config) {
                eprintln!("keyward: notice: {notice}");
            }
            ExitCode::SUCCESS
        }
        Command::HashKey => unreachable!("handled before the configuration is read"),
        Command::Run => match run(config, unhardened) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!(error = format!("{err:#}"), "keyward stopped");
                eprintln!("keyward: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// What is valid but will not work on this machine as it is now (the file may be checked
/// before its volumes are mounted, so these do not fail the check).
fn warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(dir) = config.secrets.dir() {
        if !dir.is_dir() {
            warnings.push(format!(
                "secrets.dir {} does not exist or is not a directory here; keyward will not be \
                 ready until it is",
                dir.display()
            ));
        }
    }
    let off = keyward::safety::Mode::Off;
    if config.ingress.safety_net == off {
        warnings.push(
            "ingress.safety_net = \"off\": responses to clients are not checked for \
            secret values"
                .to_owned(),
        );
    }
    if config.egress.as_ref().is_some_and(|e| e.safety_net == off) {
        warnings.push(
            "egress.safety_net = \"off\": upstream answers and the backend's requests \
            are not checked for secret values"
                .to_owned(),
        );
    }
    warnings
}

/// What is valid and intended more often than not, but worth saying.
fn notices(config: &Config) -> Vec<String> {
    let mut notices: Vec<String> = config
        .ingress
        .clients
        .iter()
        .enumerate()
        .filter(|(_, c)| c.tools.is_none())
        .map(|(i, c)| {
            format!(
                "ingress.clients[{i}] ({}) may list and call every tool; set tools = [...] to \
                 restrict it",
                c.id
            )
        })
        .collect();
    if config.ingress.session_secret.is_none() {
        notices.push(
            "ingress.session_secret is not set: MCP sessions are bound to their client by a \
             key of this process only, so a session does not survive a restart or move to \
             another replica"
                .to_owned(),
        );
    }
    notices
}

/// What the configuration will do, with secret names and never values.
fn summary(config: &Config) -> String {
    let clients: Vec<String> = config
        .ingress
        .clients
        .iter()
        .map(|c| {
            let mut how = Vec::new();
            if let Some(secret) = &c.secret {
                how.push(format!("secret {secret}"));
            }
            if !c.token_ids.is_empty() {
                how.push(format!("{} token id(s)", c.token_ids.len()));
            }
            format!("{} ({})", c.id, how.join(", "))
        })
        .collect();
    let source = match &config.secrets.source {
        config::SecretSource::File { dir } => format!("files in {}", dir.display()),
        config::SecretSource::KeyVault(_) => "Key Vault".to_owned(),
    };
    format!(
        "ingress {} -> {}; admin {}; clients: {}; secrets: {source}",
        config.ingress.listen,
        config.ingress.backend.as_str(),
        config.admin.listen,
        clients.join(", ")
    )
}

/// `keyward hash-key`: one line from standard input (its line ending dropped), echo off at a
/// terminal, to the `sha256:` line on standard output. The key is never an argument, so it
/// is in no shell history and no process listing.
fn hash_key() -> ExitCode {
    use std::io::BufRead;
    let stdin = std::io::stdin();
    let echo = keyward::process::EchoOff::on(&stdin);
    if echo.is_terminal() {
        eprint!("key (not shown): ");
    }
    let mut line = zeroize::Zeroizing::new(String::new());
    let read = stdin.lock().read_line(&mut line);
    drop(echo);
    let key = line.trim_end_matches(['\r', '\n']);
    match read {
        Ok(_) if !key.is_empty() => {
            println!("{}", keyward::auth::hashed_key_line(key.as_bytes()));
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!("keyward: no key on standard input");
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("keyward: cannot read standard input: {err}");
            ExitCode::from(2)
        }
    }
}

fn run(config: Config, unhardened: Vec<&'static str>) -> anyhow::Result<()> {
    // Requests are served on keyward's own worker threads (see `server::spawn_worker`); this
    // runtime only runs the admin listener, the secret refresh and the signal handlers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let redactor = Arc::new(Redactor::default());
        let telemetry = keyward::telemetry::init(&config.telemetry, redactor.clone());
        for what in unhardened {
            tracing::warn!(call = what, "process hardening failed; memory may be dumped or read");
        }
        let app = App::start(config, redactor).await?;
        let store = app.store.clone();
        tokio::spawn(async move {
            let mut hangup = signal(tokio::signal::unix::SignalKind::hangup());
            while hangup.recv().await.is_some() {
                store.request_reload();
            }
        });
        let mut terminate = signal(tokio::signal::unix::SignalKind::terminate());
        let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt());
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: draining"),
            _ = interrupt.recv() => tracing::info!("SIGINT: draining"),
        }
        app.shutdown();
        app.wait().await;
        tracing::info!("keyward stopped");
        // The exporter's shutdown blocks on its own thread; keep it off the runtime's workers.
        tokio::task::spawn_blocking(move || telemetry.shutdown()).await.ok();
        Ok(())
    })
}

fn signal(kind: tokio::signal::unix::SignalKind) -> tokio::signal::unix::Signal {
    tokio::signal::unix::signal(kind).expect("signal handlers can be installed")
}
