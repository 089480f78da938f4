//! health-api: a stand-in for the APIM-fronted Biotrackr health-data API, for tests on loopback.
//!
//! `health-api --listen 127.0.0.1:0 --key-file KEY [--record FILE] [--prefix /biotrackr/]
//! [--leak MODE] [--leak-value-file FILE]` prints `health-api listening on ADDR` once bound. It
//! never prints or records a key; a leak mode (`echo`, `base64`, `split`, `gzip`,
//! `client-key`; also set by `POST /_leak {"mode": ...}`) puts one in its answers, on purpose.

mod health_api;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;

/// Serves deterministic activity, sleep, food and vitals records behind a subscription key.
#[derive(Debug, Parser)]
#[command(name = "health-api")]
struct Cli {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8095")]
    listen: SocketAddr,

    /// File holding the expected Ocp-Apim-Subscription-Key (trailing CR/LF ignored); re-read
    /// on every request.
    #[arg(long)]
    key_file: PathBuf,

    /// Append one JSON line per request (method, path, header names; never values).
    #[arg(long)]
    record: Option<PathBuf>,

    /// Path prefix the API sits under, e.g. /biotrackr/.
    #[arg(long, default_value = "")]
    prefix: String,

    /// Leak mode at start: successful answers carry the subscription key (`echo`, `base64`,
    /// `split`, `gzip`) or the value file's contents (`client-key`). `POST /_leak` changes it.
    #[arg(long, value_enum, default_value_t = health_api::leak::Mode::None)]
    leak: health_api::leak::Mode,

    /// The value the `client-key` mode leaks (a client's key, say); re-read on every request.
    #[arg(long)]
    leak_value_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    let leaks = health_api::leak::Leaks::new(cli.leak, cli.leak_value_file)?;
    let api = Arc::new(health_api::HealthApi::new(cli.key_file, &cli.prefix, cli.record, leaks)?);
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    println!("health-api listening on {}", listener.local_addr()?);
    let server = health_api::serve(listener, move |request| {
        let api = Arc::clone(&api);
        async move { api.handle(request).await }
    });
    tokio::select! {
        () = server => {}
        () = terminated() => {}
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn terminated() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
