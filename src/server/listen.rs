//! The accept loop: HTTP/1.1 and cleartext HTTP/2 (h2c, prior knowledge) on one port,
//! told apart by the connection preface; with a certificate, TLS with ALPN `h2` and
//! `http/1.1` instead. Its own loop (rather than `axum::serve`) so that HTTP/2 limits
//! can be set and TLS put in front.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A certificate chain and its private key, PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A TLS acceptor offering `h2` and `http/1.1` by ALPN.
pub(crate) fn acceptor(files: &TlsFiles) -> io::Result<TlsAcceptor> {
    let invalid = |what: &Path, e: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: {e}", what.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(&files.cert, &e))?;
    if certs.is_empty() {
        return Err(invalid(&files.cert, &"no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| invalid(&files.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&files.cert, &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(&files.key, &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` on every connection `listener` accepts, until the process ends.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    h2_max_streams: Option<u32>,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's fixed windows (1 MiB): the small-DATA-frame guard of the HTTP/2 library is
    // sized from the connection window, and an adaptive one starts at 64 KiB.
    builder.http2().max_concurrent_streams(h2_max_streams);
    let builder = Arc::new(builder);
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            // Out of file descriptors and the like: back off instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Streams flush frame by frame: do not let Nagle hold them back.
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let (builder, tls) = (builder.clone(), tls.clone());
        tokio::spawn(async move {
            // A failed handshake or a broken connection ends only that connection.
            let _ = match tls {
                None => {
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                        .await
                }
                Some(tls) => match tls.accept(tcp).await {
                    Ok(stream) => {
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await
                    }
                    Err(_) => return,
                },
            };
        });
    }
}
