//! The accept loop: HTTP/1.1 and cleartext HTTP/2 (h2c, prior knowledge) on one port,
//! told apart by the connection preface; with a certificate, TLS with ALPN `h2` and
//! `http/1.1` instead. Its own loop (rather than `axum::serve`) so that HTTP/2 limits
//! can be set and TLS put in front. HTTP/3 beside it, on UDP, is h3.rs.
//!
//! Each accepted connection is served whole on one of a few connection threads, each
//! a current-thread runtime: the connection's task and the tasks of its HTTP/2 streams
//! then hand frames to each other on one thread. On the multi-thread runtime they sat
//! on different workers, and every DATA frame woke the other thread (about a thousand
//! context switches per 64 MiB transfer); see docs/performance.md. Connections are
//! dealt out in turn, so many connections still use every core.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
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
async fn drive<I>(builder: &auto::Builder<TokioExecutor>, io: I, service: WithGoAway)
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
    let serve_one = Arc::new(ServeOne { builder, app, tls });
    let mut threads = ConnectionThreads::start(serve_one.clone());
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
        if let Err(tcp) = threads.hand(tcp) {
            // No connection thread could be started: serve it here instead.
            tokio::spawn(serve_one.clone().serve(tcp));
        }
    }
}

/// What serving one accepted connection needs, shared by every connection thread.
struct ServeOne {
    builder: auto::Builder<TokioExecutor>,
    app: Router,
    tls: Option<TlsAcceptor>,
}

impl ServeOne {
    async fn serve(self: Arc<Self>, tcp: TcpStream) {
        let service = WithGoAway::new(self.app.clone());
        match &self.tls {
            None => drive(&self.builder, tcp, service).await,
            // A failed handshake ends only that connection.
            Some(tls) => {
                if let Ok(stream) = tls.accept(tcp).await {
                    drive(&self.builder, stream, service).await;
                }
            }
        }
    }
}

/// The connection threads: one current-thread runtime each, fed accepted sockets in
/// turn. They end when the accept loop does (their senders drop), cancelling their
/// connections.
struct ConnectionThreads {
    senders: Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
    /// Accepted connections so far: the next goes to thread `turn % senders.len()`.
    turn: usize,
}

impl ConnectionThreads {
    fn start(serve_one: Arc<ServeOne>) -> ConnectionThreads {
        let count = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut senders = Vec::with_capacity(count);
        for i in 0..count {
            let (tx, mut rx) = mpsc::unbounded_channel::<std::net::TcpStream>();
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                break;
            };
            let serve_one = serve_one.clone();
            let started = std::thread::Builder::new()
                .name(format!("quill-conn-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        while let Some(tcp) = rx.recv().await {
                            // Registered with this thread's reactor, so that its
                            // readiness wakes this thread and no other.
                            if let Ok(tcp) = TcpStream::from_std(tcp) {
                                tokio::spawn(serve_one.clone().serve(tcp));
                            }
                        }
                    });
                });
            if started.is_ok() {
                senders.push(tx);
            }
        }
        ConnectionThreads { senders, turn: 0 }
    }

    /// Gives `tcp` to the next connection thread; the socket back when there is none
    /// to take it.
    fn hand(&mut self, tcp: TcpStream) -> Result<(), TcpStream> {
        if self.senders.is_empty() {
            return Err(tcp);
        }
        let std = match tcp.into_std() {
            Ok(std) => std,
            // Could not be taken off this reactor: the connection is lost either way.
            Err(_) => return Ok(()),
        };
        self.turn = self.turn.wrapping_add(1);
        let thread = &self.senders[self.turn % self.senders.len()];
        let Err(refused) = thread.send(std) else {
            return Ok(());
        };
        // That thread has ended: hand the socket back, registered here again.
        match TcpStream::from_std(refused.0) {
            Ok(tcp) => Err(tcp),
            Err(_) => Ok(()),
        }
    }
}
