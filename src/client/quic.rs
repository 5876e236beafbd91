//! HTTP/3 (the protocol's `hyper` profile): every call is a request stream of one QUIC
//! connection (quinn for QUIC, h3 for the HTTP/3 framing, rustls for TLS 1.3 with ALPN
//! `h3`), so a lost packet stalls only its own stream.
//!
//! One connection at a time per client, made by the first call and replaced when it has
//! closed (idle timeout, GOAWAY, server gone). Its driver task and the task that sends
//! each request body run on the client's worker runtime; HTTP/3 calls therefore never
//! use the blocking lanes of `runtime.rs`, whose runtimes are idle between calls.
//!
//! Request bodies are sent by their own task while the response is read, so streams are
//! full duplex. A body that fails (an aborted request stream) or is abandoned resets the
//! stream instead of finishing it: the server never mistakes a cut-off upload for a
//! whole one.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use h3::error::{Code, ConnectionError, StreamError};
use http_body_util::BodyExt;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, USER_AGENT};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::alt_svc::AltSvc;
use super::errors::{describe, BodyKind, CallLabel};
use super::events::{self, EventKind, Level};
use super::runtime::AbortOnDrop;
use crate::error::{QuillError, Result};

/// The ALPN protocol of HTTP/3 (RFC 9114).
pub(crate) const ALPN_H3: &[u8] = b"h3";

/// QUIC flow-control windows, as the HTTP/2 defaults (`config.rs`): room for a tensor
/// stream at loopback speed without letting one stream hold the whole connection.
const STREAM_WINDOW: u32 = 8 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;

/// Longest wait for a QUIC handshake (or the connection's idle timeout, if shorter).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type SendHalf = h3::client::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type RecvHalf = h3::client::RequestStream<h3_quinn::RecvStream, Bytes>;
type Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// Where and how to connect: built once per client.
pub(crate) struct QuicSettings {
    /// The host and port the URL names: what is resolved and dialled (an `Alt-Svc`
    /// port replaces the port).
    pub host: String,
    pub port: u16,
    /// The TLS server name (SNI and certificate name).
    pub server_name: String,
    pub user_agent: HeaderValue,
    /// Extra trusted roots (PEM), beside the bundled webpki roots.
    pub ca_pem: Option<Vec<u8>>,
    /// `Alt-Svc` as learned by the client (the port to dial, when advertised).
    pub alt_svc: Arc<AltSvc>,
    /// PING interval while the connection is open (`Http2Settings`' keep-alive).
    pub keep_alive: Option<Duration>,
    /// Silence after which the connection counts as dead: its streams and calls end
    /// with an error (QUIC's idle timeout; peers use the smaller of their two values).
    pub idle_timeout: Duration,
}

/// The client's QUIC endpoint and its current connection.
pub(crate) struct QuicPool {
    settings: QuicSettings,
    client_config: quinn::ClientConfig,
    /// The UDP endpoint, bound by the first connection; a plain lock, since
    /// [`rebind`](Self::rebind) is called from any thread and never waits.
    endpoint: std::sync::Mutex<Option<quinn::Endpoint>>,
    /// The current connection; held across a handshake so concurrent first calls share
    /// one connection.
    conn: tokio::sync::Mutex<Option<Conn>>,
    /// What the server advertised over TCP (`auto` clients; shared with the client's
    /// runtime, which learns it from every response).
    pub alt_svc: Arc<AltSvc>,
    /// Calls sent as 0-RTT early data.
    early_data_calls: AtomicU64,
}

/// An open HTTP/3 connection.
#[derive(Clone)]
pub(crate) struct Conn {
    quic: quinn::Connection,
    sender: Sender,
    handshake: tokio::sync::watch::Receiver<Handshake>,
}

/// Where a connection's TLS handshake is: a resumed (0-RTT) connection is usable
/// before it completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handshake {
    Pending,
    Done,
    Failed,
}

impl Conn {
    /// Waits for the handshake (at once for a connection not resumed with 0-RTT).
    pub async fn handshake(&self, label: &CallLabel) -> Result<()> {
        let mut handshake = self.handshake.clone();
        let done = handshake
            .wait_for(|h| *h != Handshake::Pending)
            .await
            .is_ok_and(|h| *h == Handshake::Done);
        if done {
            Ok(())
        } else {
            Err(connect_error(label, "the resumed (0-RTT) handshake failed"))
        }
    }

    /// Whether a request sent now goes out as 0-RTT early data.
    fn early(&self) -> bool {
        *self.handshake.borrow() == Handshake::Pending
    }

    fn failed(&self) -> bool {
        *self.handshake.borrow() == Handshake::Failed
    }
}

impl QuicPool {
    /// Checks the TLS settings; nothing is bound or dialled until the first call.
    pub fn new(settings: QuicSettings) -> Result<QuicPool> {
        let client_config = client_config(&settings)?;
        Ok(QuicPool {
            client_config,
            endpoint: std::sync::Mutex::new(None),
            conn: tokio::sync::Mutex::new(None),
            alt_svc: settings.alt_svc.clone(),
            early_data_calls: AtomicU64::new(0),
            settings,
        })
    }

    /// Sends a POST with `headers` and `body` on a new request stream and waits for the
    /// response headers. Must run on the client's worker runtime.
    pub async fn post(
        &self,
        url: &reqwest::Url,
        headers: HeaderMap,
        body: reqwest::Body,
        label: &CallLabel,
        idempotent: bool,
    ) -> Result<QuicResponse> {
        let conn = self.connection(label).await?;
        self.post_on(conn, url, headers, body, label, idempotent)
            .await
    }

    /// [`post`](Self::post) on `conn`, a connection [`connection`](Self::connection)
    /// made (or, if it refuses new streams, on a fresh one). On a resumed connection
    /// whose handshake is still running, only an `idempotent` call with a buffered body
    /// goes out at once, as 0-RTT early data (which an attacker could replay); any other
    /// waits for the handshake. If the server refuses the early data, it never ran the
    /// call, so the call is sent again on a new connection after its handshake.
    pub async fn post_on(
        &self,
        conn: Conn,
        url: &reqwest::Url,
        mut headers: HeaderMap,
        body: reqwest::Body,
        label: &CallLabel,
        idempotent: bool,
    ) -> Result<QuicResponse> {
        if !headers.contains_key(USER_AGENT) {
            headers.insert(USER_AGENT, self.settings.user_agent.clone());
        }
        if let Some(len) = http_body::Body::size_hint(&body).exact() {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
        let mut request = http::Request::post(url.as_str())
            .body(())
            .map_err(|e| QuillError::invalid(format!("request to {}: {e}", label.path)))?;
        *request.headers_mut() = headers;
        // The copy is kept only for early calls (the first of a resumed connection).
        let replay = match body.as_bytes() {
            Some(bytes) if idempotent && conn.early() => Some(Bytes::copy_from_slice(bytes)),
            _ => None,
        };
        let Some(replay) = replay else {
            conn.handshake(label).await?;
            return self.send(conn, request, body, label).await;
        };
        self.early_data_calls.fetch_add(1, Ordering::Relaxed);
        match self.send(conn.clone(), request.clone(), body, label).await {
            Err(e) if conn.handshake(label).await.is_err() => {
                events::emit(Level::Info, EventKind::RetryScheduled, |ev| {
                    ev.target = label.path.clone();
                    ev.message = format!(
                        "{}: the server refused the 0-RTT early data ({e}); sending the call \
                         again after a full handshake",
                        label.path
                    );
                });
                let conn = self.connection_with(label, false).await?;
                conn.handshake(label).await?;
                self.send(conn, request, replay.into(), label).await
            }
            sent => sent,
        }
    }

    /// Opens a request stream on `conn` (on a fresh connection, after its handshake, if
    /// `conn` refuses new streams), sends `body` from a task of its own and waits for the
    /// response headers.
    async fn send(
        &self,
        mut conn: Conn,
        request: http::Request<()>,
        body: reqwest::Body,
        label: &CallLabel,
    ) -> Result<QuicResponse> {
        // A connection that received GOAWAY refuses new streams before anything is
        // sent, so the call may go to a fresh connection once.
        let stream = match conn.sender.send_request(request.clone()).await {
            Ok(stream) => stream,
            Err(e) if refused_before_sending(&e) => {
                self.forget(&conn).await;
                conn = self.connection(label).await?;
                conn.handshake(label).await?;
                conn.sender
                    .send_request(request)
                    .await
                    .map_err(|e| send_error(&e, label))?
            }
            Err(e) => return Err(send_error(&e, label)),
        };
        let (send, mut recv) = stream.split();
        let (failed, mut body_failed) = tokio::sync::oneshot::channel();
        let pump = AbortOnDrop(tokio::spawn(send_body(
            body,
            BodySender {
                send,
                done: false,
                failed: Some(failed),
            },
        )));
        let head = tokio::select! {
            biased;
            head = recv.recv_response() => head.map_err(|e| answer_error(&e, label))?,
            // A request body that broke off ends the call here, and dropping `recv` asks
            // the server to stop sending: a server that then ends the stream without an
            // answer would otherwise be a connection error (RFC 9114 §4.1) failing every
            // other call on the connection.
            Ok(()) = &mut body_failed => {
                return Err(connect_error(
                    label,
                    "the request body broke off before the response (stream reset)",
                ));
            }
        }
        .into_parts()
        .0;
        Ok(QuicResponse {
            head,
            recv,
            _pump: pump,
            _conn: conn.quic,
        })
    }

    /// The open connection, or a new one (resumed with 0-RTT when the client holds a
    /// session ticket for the server).
    pub async fn connection(&self, label: &CallLabel) -> Result<Conn> {
        self.connection_with(label, true).await
    }

    /// [`connection`](Self::connection), where a new connection attempts 0-RTT only if
    /// `early`: after a refusal, the client's other tickets came from the same server
    /// and would be refused too.
    async fn connection_with(&self, label: &CallLabel, early: bool) -> Result<Conn> {
        let mut current = self.conn.lock().await;
        if let Some(conn) = &*current {
            if conn.quic.close_reason().is_none() && !conn.failed() {
                events::emit(Level::Debug, EventKind::ConnectionReused, |e| {
                    e.target = label.path.clone();
                    e.message = format!("{}: reusing the HTTP/3 connection", label.path);
                });
                return Ok(conn.clone());
            }
        }
        let started = std::time::Instant::now();
        let addr = self.resolve(label).await?;
        let endpoint = self.endpoint(addr, label)?;
        let connecting = endpoint
            .connect_with(self.client_config.clone(), addr, &self.settings.server_name)
            .map_err(|e| connect_error(label, &describe(&e)))?;
        // A server this client has talked to before accepts a resumed connection at
        // once (0-RTT); the handshake then completes in the background.
        let attempt = if early {
            connecting.into_0rtt()
        } else {
            Err(connecting)
        };
        let (quic, handshake) = match attempt {
            Ok((quic, accepted)) => {
                let (tx, rx) = tokio::sync::watch::channel(Handshake::Pending);
                let watched = quic.clone();
                tokio::spawn(async move {
                    let done = accepted.await;
                    if !done {
                        // Rejected early data is lost, HTTP/3's own streams included:
                        // the connection is dropped and the next call makes a new one.
                        watched.close(
                            Code::H3_NO_ERROR.value().try_into().unwrap_or_default(),
                            b"",
                        );
                    }
                    let _ = tx.send(if done {
                        Handshake::Done
                    } else {
                        Handshake::Failed
                    });
                });
                (quic, rx)
            }
            Err(connecting) => {
                // UDP dropped on the way (a firewall) looks like silence: say so after
                // a bounded wait rather than only at the call's deadline.
                let budget = HANDSHAKE_TIMEOUT.min(self.settings.idle_timeout);
                let quic = tokio::time::timeout(budget, connecting)
                    .await
                    .map_err(|_| {
                        connect_error(
                            label,
                            &format!(
                                "no QUIC handshake with {addr} within {} ms (is UDP blocked?)",
                                budget.as_millis()
                            ),
                        )
                    })?
                    .map_err(|e| connect_error(label, &describe(&e)))?;
                (quic, tokio::sync::watch::channel(Handshake::Done).1)
            }
        };
        let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(quic.clone()))
            .await
            .map_err(|e| connect_error(label, &connection_text(&e)))?;
        // The driver answers the server's control stream (SETTINGS, GOAWAY) until the
        // connection ends.
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        events::emit(Level::Debug, EventKind::ConnectionOpened, |e| {
            e.target = format!("{}:{}", self.settings.host, self.settings.port);
            e.elapsed = started.elapsed();
            e.message = format!(
                "HTTP/3 connection to {} ({addr}) in {}",
                e.target,
                events::millis(e.elapsed)
            );
        });
        let conn = Conn {
            quic,
            sender,
            handshake,
        };
        *current = Some(conn.clone());
        Ok(conn)
    }

    /// How many calls went out as 0-RTT early data.
    pub fn early_data_calls(&self) -> u64 {
        self.early_data_calls.load(Ordering::Relaxed)
    }

    /// The endpoint, bound on first use to the address family of `peer`.
    fn endpoint(&self, peer: SocketAddr, label: &CallLabel) -> Result<quinn::Endpoint> {
        let mut endpoint = self.endpoint.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(endpoint) = &*endpoint {
            return Ok(endpoint.clone());
        }
        let bound = quinn::Endpoint::client(unspecified(peer))
            .map_err(|e| connect_error(label, &format!("could not open a UDP socket: {e}")))?;
        *endpoint = Some(bound.clone());
        Ok(bound)
    }

    /// Moves the endpoint, and with it the open connection, to a fresh UDP socket, as
    /// after a network change: QUIC's connection migration keeps open streams and later
    /// calls on the same connection. Whether there was an endpoint to move. Must run
    /// inside the client's runtime context.
    pub fn rebind(&self) -> Result<bool> {
        let endpoint = self.endpoint.lock().unwrap_or_else(|p| p.into_inner());
        let Some(endpoint) = &*endpoint else {
            return Ok(false);
        };
        let local = endpoint.local_addr().map_err(|e| QuillError::Connection {
            reason: format!("the HTTP/3 socket has no address: {e}"),
        })?;
        std::net::UdpSocket::bind(unspecified(local))
            .and_then(|socket| endpoint.rebind(socket))
            .map_err(|e| QuillError::Connection {
                reason: format!("could not move HTTP/3 to a new UDP socket: {e}"),
            })?;
        Ok(true)
    }

    /// Drops `conn` as the current connection (it refused a new stream).
    async fn forget(&self, conn: &Conn) {
        let mut current = self.conn.lock().await;
        if current
            .as_ref()
            .is_some_and(|c| c.quic.stable_id() == conn.quic.stable_id())
        {
            *current = None;
        }
    }

    /// Where HTTP/3 is: the advertised UDP port, else the URL's port.
    async fn resolve(&self, label: &CallLabel) -> Result<SocketAddr> {
        let port = self.alt_svc.h3_port().unwrap_or(self.settings.port);
        let target = (self.settings.host.as_str(), port);
        let mut addrs = tokio::net::lookup_host(target)
            .await
            .map_err(|e| connect_error(label, &format!("could not resolve the host: {e}")))?;
        addrs
            .next()
            .ok_or_else(|| connect_error(label, "the host resolved to no address"))
    }
}

impl Drop for QuicPool {
    fn drop(&mut self) {
        // Closing the client ends its calls at once, as dropping a TCP pool does.
        let endpoint = self.endpoint.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(endpoint) = endpoint.take() {
            endpoint.close(
                Code::H3_NO_ERROR.value().try_into().unwrap_or_default(),
                b"",
            );
        }
    }
}

fn unspecified(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// TLS 1.3 only (QUIC requires it), ALPN `h3`, the bundled webpki roots plus `ca_pem`.
fn client_config(settings: &QuicSettings) -> Result<quinn::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = settings.ca_pem.as_deref() {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| {
                QuillError::invalid(format!("ca_cert_pem is not a valid PEM certificate: {e}"))
            })?;
            roots.add(cert).map_err(|e| {
                QuillError::invalid(format!("ca_cert_pem holds an unusable certificate: {e}"))
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuillError::invalid(format!("TLS 1.3 is unavailable: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_H3.to_vec()];
    // Resumed connections may carry idempotent calls in their first flight (0-RTT);
    // `post_on` keeps every other call until the handshake is done.
    tls.enable_early_data = true;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| QuillError::invalid(format!("TLS settings unusable for QUIC: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(STREAM_WINDOW.into())
        .receive_window(CONNECTION_WINDOW.into())
        .send_window(CONNECTION_WINDOW.into())
        .keep_alive_interval(settings.keep_alive)
        .max_idle_timeout(Some(settings.idle_timeout.try_into().map_err(|_| {
            QuillError::invalid("the HTTP/3 idle timeout (keep-alive settings) is too long")
        })?));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// A response whose headers arrived over HTTP/3.
pub(crate) struct QuicResponse {
    pub head: http::response::Parts,
    /// Dropping it before the end tells the server at once that nobody reads the rest
    /// (quinn sends STOP_SENDING; h3-quinn's own `stop_sending` panics while a read is
    /// pending, so it is not called).
    recv: RecvHalf,
    /// Sends the request body; aborted (resetting the stream) when the response is
    /// dropped.
    _pump: AbortOnDrop<()>,
    /// Keeps the connection open while its body is read, whatever the pool does.
    _conn: quinn::Connection,
}

impl QuicResponse {
    /// The next DATA frame's bytes; `None` at the end of the body.
    pub async fn chunk(&mut self, label: &CallLabel, kind: BodyKind) -> Result<Option<Bytes>> {
        loop {
            match self.recv.recv_data().await {
                Ok(Some(mut data)) => {
                    if data.has_remaining() {
                        return Ok(Some(data.copy_to_bytes(data.remaining())));
                    }
                }
                Ok(None) => return Ok(None),
                Err(e) => return Err(body_error(&e, label, kind)),
            }
        }
    }
}

/// The sending half of a request stream; reset unless the body was sent whole.
struct BodySender {
    send: SendHalf,
    done: bool,
    /// Told when the body itself failed (its producer aborted), not when the server
    /// stopped reading it: the server's answer then still comes.
    failed: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for BodySender {
    fn drop(&mut self) {
        if !self.done {
            self.send.stop_stream(Code::H3_REQUEST_CANCELLED);
        }
    }
}

async fn send_body(mut body: reqwest::Body, mut out: BodySender) {
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // The request stream was aborted: `out` resets the stream.
            if let Some(failed) = out.failed.take() {
                let _ = failed.send(());
            }
            return;
        };
        if let Ok(data) = frame.into_data() {
            if !data.is_empty() && out.send.send_data(data).await.is_err() {
                return;
            }
        }
    }
    if out.send.finish().await.is_ok() {
        out.done = true;
    }
}

fn refused_before_sending(err: &StreamError) -> bool {
    matches!(
        err,
        StreamError::RemoteClosing { .. } | StreamError::ConnectionError { .. }
    )
}

fn connect_error(label: &CallLabel, why: &str) -> QuillError {
    QuillError::Connection {
        reason: format!("call to {} (HTTP/3): {why}", label.path),
    }
}

fn connection_text(err: &ConnectionError) -> String {
    match err {
        ConnectionError::Timeout { .. } => "the QUIC connection timed out".to_owned(),
        other => describe(other),
    }
}

fn stream_text(err: &StreamError) -> String {
    match err {
        StreamError::ConnectionError { 0: e, .. } => connection_text(e),
        StreamError::RemoteTerminate { code, .. } => {
            format!("the server reset the stream ({code})")
        }
        StreamError::RemoteClosing { .. } => {
            "the server is closing the connection (GOAWAY)".to_owned()
        }
        other => describe(other),
    }
}

/// An error before the response headers arrived.
fn send_error(err: &StreamError, label: &CallLabel) -> QuillError {
    connect_error(label, &stream_text(err))
}

/// An error while waiting for the response headers of a request that was sent: a
/// stream call's stream broke off (as over TCP), any other call's connection failed.
fn answer_error(err: &StreamError, label: &CallLabel) -> QuillError {
    if label.streamed {
        return label.broke_off_before_response(&format!("{} (HTTP/3)", stream_text(err)));
    }
    send_error(err, label)
}

/// An error while reading a response body.
fn body_error(err: &StreamError, label: &CallLabel, kind: BodyKind) -> QuillError {
    let message = format!(
        "response body of {} broke off (HTTP/3): {}",
        label.path,
        stream_text(err)
    );
    match kind {
        BodyKind::Stream => QuillError::Stream { reason: message },
        BodyKind::Unary => QuillError::Connection { reason: message },
    }
}
