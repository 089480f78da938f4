//! TLS termination at the ingress: h2 and http/1.1 by ALPN, and a renewed certificate picked
//! up without a restart.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keyward::app::App;
use keyward_tests::backend::TestBackend;
use keyward_tests::config::Builder;
use keyward_tests::dir::TempDir;
use keyward_tests::process::eventually;
use keyward_tests::tls::TestCa;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

mod common;
use common::parse;

const KEY: &str = "tls-client-key-0123456789abcdef";

/// One request over a fresh TLS connection; returns the status, the negotiated ALPN protocol
/// and the server certificate's DER.
async fn fetch(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<(u16, Vec<u8>, Vec<u8>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let tls = TlsConnector::from(config).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    let alpn = session.alpn_protocol().unwrap_or_default().to_vec();
    let leaf = session.peer_certificates().unwrap()[0].to_vec();
    let request = http::Request::get("https://localhost/tls")
        .header("host", "localhost")
        .header("x-api-key", KEY)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let status = if alpn == b"h2" {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await.unwrap().status()
    } else {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await.unwrap().status()
    };
    Ok((status.as_u16(), alpn, leaf))
}

#[tokio::test]
async fn tls_terminates_with_alpn_and_reloads_a_renewed_certificate() {
    let backend = TestBackend::start().await;
    let dir = TempDir::new("tls");
    dir.write_secret("client", KEY);
    let ca = TestCa::new("keyward test CA");
    let first = ca.issue(&["localhost"]);
    let cert = dir.write("tls.crt", &first.cert_pem);
    let key = dir.write("tls.key", &first.key_pem);
    let config = parse(
        &Builder::files(dir.path())
            .backend(backend.addr)
            .client("tls-client", "client")
            .set("ingress.tls.cert", cert.to_str().unwrap())
            .set("ingress.tls.key", key.to_str().unwrap()),
    );
    let app = App::start(config, Default::default()).await.unwrap();
    let addr = app.ingress_addr;

    let h2 = ca.client_config(&[b"h2", b"http/1.1"]);
    assert!(
        eventually(Duration::from_secs(5), || async {
            matches!(fetch(addr, h2.clone()).await, Ok((200, _, _)))
        })
        .await
    );
    let (_, alpn, leaf) = fetch(addr, h2.clone()).await.unwrap();
    assert_eq!(alpn, b"h2");
    let (status, alpn, _) = fetch(addr, ca.client_config(&[b"http/1.1"])).await.unwrap();
    assert_eq!((status, alpn.as_slice()), (200, &b"http/1.1"[..]));

    // A client that does not trust the CA fails the handshake.
    let stranger = TestCa::new("another CA");
    assert!(fetch(addr, stranger.client_config(&[b"h2"])).await.is_err());

    // Renew: write the new pair; the next handshakes present the new certificate.
    let second = ca.issue(&["localhost"]);
    dir.write("tls.key", &second.key_pem);
    dir.write("tls.crt", &second.cert_pem);
    assert!(
        eventually(Duration::from_secs(10), || async {
            fetch(addr, h2.clone()).await.is_ok_and(|(_, _, now)| now != leaf)
        })
        .await,
        "the renewed certificate was never served"
    );
    assert_eq!(fetch(addr, h2).await.unwrap().0, 200);
}
