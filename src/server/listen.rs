//! The accept loop: HTTP/1.1 and cleartext HTTP/2 (h2c, prior knowledge) on one port,
//! told apart by the connection preface; with a certificate, TLS with ALPN `h2` and
//! `http/1.1` instead. Its own loop (rather than `axum::serve`) so that HTTP/2 limits
//! can be set and TLS put in front. HTTP/3 beside it, on UDP, is h3.rs.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Asks the connection a request came on to shut down gracefully (HTTP/2: GOAWAY, then
/// the streams already open finish; HTTP/1.1: close after this response). Every request
/// carries its connection's as an extension (`test.v1.FaultService/GoAway` uses it).
#[derive(Clone, Debug, Default)]
pub struct GoAway(Arc<tokio::sync::Notify>);

impl GoAway {
    /// Asks for the shutdown; the connection acts on it once, however often asked.
    pub fn send(&self) {
        // A stored permit: the connection task may not be waiting at this instant.
        self.0.notify_one();
    }

    /// Completes when a shutdown has been asked for.
    pub(super) async fn requested(&self) {
        self.0.notified().await;
    }
}

/// The router with this connection's [`GoAway`] put into every request.
#[derive(Clone)]
pub(super) struct WithGoAway {
    app: Router,
    goaway: GoAway,
}

impl WithGoAway {
    /// `app` for one new connection, with a [`GoAway`] of its own.
    pub(super) fn new(app: Router) -> WithGoAway {
        WithGoAway {
            app,
            goaway: GoAway::default(),
        }
    }

    /// The connection's shutdown request, which its requests carry.
    pub(super) fn goaway(&self) -> &GoAway {
        &self.goaway
    }
}

impl<B> tower_service::Service<Request<B>> for WithGoAway
where
    Router: tower_service::Service<Request<B>>,
{
    type Response = <Router as tower_service::Service<Request<B>>>::Response;
    type Error = <Router as tower_service::Service<Request<B>>>::Error;
    type Future = <Router as tower_service::Service<Request<B>>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower_service::Service::<Request<B>>::poll_ready(&mut self.app, cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.goaway.clone());
        self.app.call(req)
    }
}

/// Serves one connection until it ends, shutting it down gracefully when asked.
async fn drive<I>(builder: Arc<auto::Builder<TokioExecutor>>, io: I, service: WithGoAway)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let goaway = service.goaway.clone();
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    // A broken connection ends only itself.
    tokio::select! {
        _ = conn.as_mut() => {}
        () = goaway.requested() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A TLS acceptor offering `h2` and `http/1.1` by ALPN.
pub(crate) fn acceptor(mut config: rustls::ServerConfig) -> TlsAcceptor {
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

// HTTP/2 receive windows and send buffer: hyper's defaults (1 MiB windows, 400 KB send
// buffer) held uploads to about half of raw loopback TCP (docs/performance.md). HTTP/3
// (h3.rs) uses the same windows, so the two profiles are measured alike.
const H2_MAX_FRAME: u32 = 256 * 1024;
pub(super) const H2_STREAM_WINDOW: u32 = 8 * 1024 * 1024;
pub(super) const H2_CONN_WINDOW: u32 = 16 * 1024 * 1024;
const H2_SEND_BUF: usize = 4 * 1024 * 1024;

/// Serves `app` on every connection `listener` accepts, until the process ends.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    h2_max_streams: Option<u32>,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Fixed windows, never adaptive: the small-DATA-frame guard of the HTTP/2 library is
    // sized from the connection window, and an adaptive one starts at 64 KiB.
    builder
        .http2()
        .max_concurrent_streams(h2_max_streams)
        .max_frame_size(H2_MAX_FRAME)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .max_send_buf_size(H2_SEND_BUF);
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
        let service = WithGoAway::new(app.clone());
        let (builder, tls) = (builder.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => drive(builder, tcp, service).await,
                // A failed handshake ends only that connection.
                Some(tls) => {
                    if let Ok(stream) = tls.accept(tcp).await {
                        drive(builder, stream, service).await;
                    }
                }
            }
        });
    }
}
