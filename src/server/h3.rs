//! HTTP/3 (the `hyper` profile): QUIC on UDP, on the same port as the TLS listener,
//! every request run through the same router as TCP.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::Router;
use bytes::{Buf, Bytes};
use h3::error::{Code, StreamError};
use http::{header, HeaderValue, Request, Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::BodyExt;
use quinn::crypto::rustls::QuicServerConfig;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::listen::{WithGoAway, H2_CONN_WINDOW, H2_STREAM_WINDOW};

/// Concurrent request streams per connection without `--h2-max-streams`: hyper's HTTP/2
/// default, so that one flag and one default bound both protocols.
const DEFAULT_MAX_STREAMS: u32 = 200;
/// A connection silent this long is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Well inside the idle timeout, so a call whose handler is silent for minutes (`Slow`,
/// `Stall`, `StreamSlow`) keeps its connection, as it would over TCP.
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// After a GOAWAY and its last request, how long the client has to close the connection
/// itself before the server does. Closing at once could drop response bytes the client
/// has not acknowledged yet.
const GOAWAY_GRACE: Duration = Duration::from_secs(2);

type H3Connection = h3::server::Connection<h3_quinn::Connection, Bytes>;
type Resolver = h3::server::RequestResolver<h3_quinn::Connection, Bytes>;
type SendHalf = h3::server::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type RecvHalf = h3::server::RequestStream<h3_quinn::RecvStream, Bytes>;

/// A QUIC endpoint bound to `addr`, offering ALPN `h3` with `tls` (the certificate of
/// the TCP listener), at most `max_streams` concurrent requests per connection.
pub(super) fn endpoint(
    mut tls: rustls::ServerConfig,
    addr: SocketAddr,
    max_streams: Option<u32>,
) -> io::Result<quinn::Endpoint> {
    tls.alpn_protocols = vec![b"h3".to_vec()];
    // Resumed clients may send idempotent calls as 0-RTT early data (QUIC allows no
    // other size than "unlimited"); the client decides which calls may.
    tls.max_early_data_size = u32::MAX;
    let crypto = QuicServerConfig::try_from(tls)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(max_streams.unwrap_or(DEFAULT_MAX_STREAMS).into())
        .stream_receive_window(H2_STREAM_WINDOW.into())
        .receive_window(H2_CONN_WINDOW.into())
        .send_window(H2_CONN_WINDOW.into())
        .max_idle_timeout(Some(
            IDLE_TIMEOUT
                .try_into()
                .expect("30 s is within QUIC's idle timeout range"),
        ))
        .keep_alive_interval(Some(KEEP_ALIVE))
        // BBR rather than quinn's default Cubic: under random loss Cubic keeps cutting
        // the window, and 100 token streams at 2 % loss and 40 ms RTT got 0.12 of
        // HTTP/2's tokens/s with Cubic, 0.62 with BBR (docs/performance.md).
        .congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    quinn::Endpoint::server(config, addr)
}

/// Serves `app` on every connection `endpoint` accepts, until the endpoint is closed.
pub(super) async fn serve(endpoint: quinn::Endpoint, app: Router) {
    while let Some(incoming) = endpoint.accept().await {
        let app = app.clone();
        tokio::spawn(async move {
            // A failed handshake ends only that connection.
            if let Ok(conn) = incoming.await {
                connection(conn, app).await;
            }
        });
    }
}

/// Serves one connection until it ends or, after a `GoAway` request, until its last
/// request is answered.
async fn connection(conn: quinn::Connection, app: Router) {
    let Ok(mut conn) = H3Connection::new(h3_quinn::Connection::new(conn)).await else {
        return;
    };
    let service = WithGoAway::new(app);
    let goaway = service.goaway().clone();
    // Dropped with the connection: its requests end with it, as over TCP.
    let mut requests = JoinSet::new();
    let mut closing = false;
    loop {
        tokio::select! {
            accepted = conn.accept() => match accepted {
                Ok(Some(resolver)) => {
                    requests.spawn(request(resolver, service.clone()));
                }
                // Closed by the client, or broken: either ends only this connection.
                Ok(None) | Err(_) => break,
            },
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
            () = goaway.requested(), if !closing => {
                closing = true;
                // The requests accepted so far finish; later ones are refused with
                // H3_REQUEST_REJECTED, which tells the client they are safe to retry.
                if conn.shutdown(0).await.is_err() {
                    break;
                }
            }
            () = tokio::time::sleep(GOAWAY_GRACE), if closing && requests.is_empty() => break,
        }
    }
}

/// Runs one request stream through the router; its failures end only this stream.
async fn request(resolver: Resolver, mut service: WithGoAway) {
    let Ok((req, stream)) = resolver.resolve_request().await else {
        return;
    };
    let (mut send, recv) = stream.split();
    let (mut parts, ()) = req.into_parts();
    // layer.rs names the profile from the version: pinned here rather than trusted to
    // whatever h3 fills in.
    parts.version = Version::HTTP_3;
    let (body, mut unread) = RecvBody::new(recv);
    let req = Request::from_parts(parts, Body::new(body));
    let Ok(resp) = tower_service::Service::call(&mut service, req).await;
    respond(&mut send, resp).await;
    // RFC 9114 §4.1: a server that answered without the rest of the request asks the
    // client to stop sending. Only now, so that a client still uploading is not cut off
    // before it has the answer. quinn does it when the unread half is dropped (h3-quinn's
    // own `stop_sending` panics if a read was pending when the body was dropped).
    drop(unread.try_recv());
}

/// Headers that RFC 9114 §4.2 forbids in HTTP/3.
const CONNECTION_HEADERS: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Sends `resp`: headers, then each body frame as it is produced, then the end.
async fn respond(send: &mut SendHalf, resp: Response<Body>) {
    let (mut parts, mut body) = resp.into_parts();
    for name in CONNECTION_HEADERS {
        parts.headers.remove(name);
    }
    // As hyper does over TCP: a body of known size says so, which lets a client size
    // its buffer once.
    let bodiless = matches!(
        parts.status,
        StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
    );
    if let (Some(len), false) = (body.size_hint().exact(), bodiless) {
        parts
            .headers
            .entry(header::CONTENT_LENGTH)
            .or_insert_with(|| HeaderValue::from(len));
    }
    if send
        .send_response(Response::from_parts(parts, ()))
        .await
        .is_err()
    {
        return;
    }
    while let Some(frame) = body.frame().await {
        let sent = match frame.map(Frame::into_data) {
            Ok(Ok(data)) if data.is_empty() => Ok(()),
            Ok(Ok(data)) => send.send_data(data).await,
            Ok(Err(frame)) => match frame.into_trailers() {
                Ok(trailers) => send.send_trailers(trailers).await,
                Err(_) => Ok(()),
            },
            Err(_) => {
                // After the headers the only failure signal left is a reset stream: a
                // clean end would pass the truncated body off as complete.
                send.stop_stream(Code::H3_INTERNAL_ERROR);
                return;
            }
        };
        // The client reset the stream or the connection broke.
        if sent.is_err() {
            return;
        }
    }
    let _ = send.finish().await;
}

/// The request half of a stream as a body, read only as fast as the handler reads it:
/// QUIC flow control then paces the client, so streaming routes run full duplex and an
/// unread upload stalls, as over TCP.
struct RecvBody {
    /// `None` once the request has ended.
    recv: Option<RecvHalf>,
    /// Where an unfinished request half goes when the body is dropped.
    unread: Option<oneshot::Sender<RecvHalf>>,
}

impl RecvBody {
    /// The body, and where its request half comes back if it is dropped unfinished.
    fn new(recv: RecvHalf) -> (RecvBody, oneshot::Receiver<RecvHalf>) {
        let (tx, rx) = oneshot::channel();
        let body = RecvBody {
            recv: Some(recv),
            unread: Some(tx),
        };
        (body, rx)
    }
}

impl HttpBody for RecvBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let Some(recv) = self.recv.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(recv.poll_recv_data(cx)) {
            Ok(Some(mut data)) => {
                Poll::Ready(Some(Ok(Frame::data(data.copy_to_bytes(data.remaining())))))
            }
            Ok(None) => {
                self.recv = None;
                Poll::Ready(None)
            }
            Err(e) => {
                self.recv = None;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_none()
    }
}

impl Drop for RecvBody {
    fn drop(&mut self) {
        // Kept open until the response is sent (quinn would stop it on drop, at once).
        if let (Some(recv), Some(unread)) = (self.recv.take(), self.unread.take()) {
            if let Err(mut recv) = unread.send(recv) {
                recv.stop_sending(Code::H3_NO_ERROR);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rustls::pki_types::CertificateDer;

    use super::*;
    use crate::codec::stream::{encode_data, Event, MessageReader, END_STREAM_FRAME};
    use crate::server::{Config, Server, TlsFiles};

    type Client = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;
    type ClientStream = h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

    /// Every step of a test is bounded: a hang fails instead of blocking the suite.
    const STEP: Duration = Duration::from_secs(10);

    async fn within<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(STEP, f).await.expect("timed out")
    }

    /// A TLS server on a free port of 127.0.0.1 (so HTTP/3 too), serving in the
    /// background, and its self-signed certificate.
    async fn start() -> (SocketAddr, CertificateDer<'static>) {
        static N: AtomicUsize = AtomicUsize::new(0);
        let key = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("self-signed certificate");
        let dir = std::env::temp_dir().join(format!(
            "quill-h3-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, key.cert.pem()).unwrap();
        std::fs::write(&files.key, key.signing_key.serialize_pem()).unwrap();
        let config = Config {
            host: "127.0.0.1".into(),
            tls: Some(files),
            ..Config::default()
        };
        let server = Server::bind(config).await.expect("bind");
        // Loaded at bind: the files are no longer needed.
        let _ = std::fs::remove_dir_all(&dir);
        let addr = server.local_addr();
        tokio::spawn(server.serve());
        (addr, key.cert.der().clone())
    }

    /// An HTTP/3 connection to `addr` trusting `cert`, with its driver running; the
    /// driver's task ends (with the connection's close reason) when the connection does.
    async fn connect(
        addr: SocketAddr,
        cert: &CertificateDer<'static>,
    ) -> (
        quinn::Endpoint,
        Client,
        tokio::task::JoinHandle<h3::error::ConnectionError>,
    ) {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let conn = within(endpoint.connect(addr, "localhost").unwrap())
            .await
            .expect("QUIC handshake");
        let (mut driver, client) = within(h3::client::new(h3_quinn::Connection::new(conn)))
            .await
            .expect("HTTP/3 connection");
        let driver = tokio::spawn(async move { poll_fn(|cx| driver.poll_close(cx)).await });
        (endpoint, client, driver)
    }

    async fn open(client: &mut Client, addr: SocketAddr, path: &str) -> ClientStream {
        let req = http::Request::post(format!("https://localhost:{}{path}", addr.port()))
            .header(header::CONTENT_TYPE, "application/proto")
            .body(())
            .unwrap();
        within(client.send_request(req)).await.expect("request")
    }

    async fn read_to_end(stream: &mut ClientStream) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(mut chunk) = within(stream.recv_data()).await.expect("body") {
            out.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        out
    }

    /// A whole unary call: `body` sent, the response and its body read.
    async fn call(
        client: &mut Client,
        addr: SocketAddr,
        path: &str,
        body: &'static [u8],
    ) -> (http::Response<()>, Vec<u8>) {
        let mut stream = open(client, addr, path).await;
        within(stream.send_data(Bytes::from_static(body)))
            .await
            .unwrap();
        within(stream.finish()).await.unwrap();
        let resp = within(stream.recv_response()).await.expect("response");
        let body = read_to_end(&mut stream).await;
        (resp, body)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn echo_over_http3() {
        let (addr, cert) = start().await;
        let (_endpoint, mut client, _driver) = connect(addr, &cert).await;
        let (resp, body) = call(
            &mut client,
            addr,
            "/echo.v1.EchoService/Echo",
            b"hello over quic",
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(body, b"hello over quic");
        assert_eq!(resp.headers()["selected-prism"], "hyper");
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], "15");
        assert!(!resp.headers().contains_key(header::ALT_SVC));
        // A failed request ends only its own stream: the connection still serves.
        let (resp, _) = call(&mut client, addr, "/no.such/Route", b"ignored").await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let (resp, body) = call(&mut client, addr, "/echo.v1.EchoService/Echo", b"again").await;
        assert_eq!((resp.status(), &body[..]), (StatusCode::OK, &b"again"[..]));
        // HTTP/3 requests are counted like any other.
        let (_, stats) = call(&mut client, addr, "/test.v1.FaultService/Stats", b"").await;
        let stats: serde_json::Value = serde_json::from_slice(&stats).unwrap();
        assert_eq!(stats["requests"], 4, "{stats}");
    }

    /// Reads until the response stream yields its next event.
    async fn next_event(stream: &mut ClientStream, reader: &mut MessageReader) -> Event {
        loop {
            if let Some(event) = reader.next_event().expect("well-formed frames") {
                return event;
            }
            let mut chunk = within(stream.recv_data())
                .await
                .expect("body")
                .expect("more body before the next event");
            reader.push(&chunk.copy_to_bytes(chunk.remaining()));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bidi_echo_is_full_duplex_over_http3() {
        let (addr, cert) = start().await;
        let (_endpoint, mut client, _driver) = connect(addr, &cert).await;
        let mut stream = open(&mut client, addr, "/echo.v1.EchoService/BidiEcho").await;
        let data = |m: &[u8]| Bytes::from(encode_data(m).unwrap());
        within(stream.send_data(data(b"ping"))).await.unwrap();
        let resp = within(stream.recv_response()).await.expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["selected-prism"], "hyper");
        let mut reader = MessageReader::new();
        // Each echo arrives while the request is still open.
        let ping = Event::Message(Bytes::from_static(b"ping"));
        assert_eq!(next_event(&mut stream, &mut reader).await, ping);
        within(stream.send_data(data(b"pong"))).await.unwrap();
        let pong = Event::Message(Bytes::from_static(b"pong"));
        assert_eq!(next_event(&mut stream, &mut reader).await, pong);
        within(stream.send_data(Bytes::from_static(&END_STREAM_FRAME)))
            .await
            .unwrap();
        within(stream.finish()).await.unwrap();
        assert_eq!(next_event(&mut stream, &mut reader).await, Event::End);
        assert!(read_to_end(&mut stream).await.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn goaway_closes_the_http3_connection() {
        let (addr, cert) = start().await;
        let (_endpoint, mut client, driver) = connect(addr, &cert).await;
        let (resp, body) = call(&mut client, addr, "/test.v1.FaultService/GoAway", b"").await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(body, br#"{"ok":true}"#);
        // GOAWAY, then the server closes the connection once it is idle.
        let closed = within(driver).await.expect("driver task");
        assert!(closed.is_h3_no_error(), "{closed}");
        // A new connection is served as before.
        let (_endpoint, mut client, _driver) = connect(addr, &cert).await;
        let (resp, _) = call(&mut client, addr, "/echo.v1.EchoService/Echo", b"x").await;
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_responses_advertise_http3() {
        let (addr, cert) = start().await;
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_der(&cert).unwrap())
            .resolve("localhost", addr)
            .build()
            .unwrap();
        let resp = within(
            client
                .post(format!(
                    "https://localhost:{}/echo.v1.EchoService/Echo",
                    addr.port()
                ))
                .body("tcp")
                .send(),
        )
        .await
        .expect("HTTPS call");
        assert_eq!(resp.status(), StatusCode::OK);
        let alt_svc = format!("h3=\":{}\"; ma=86400", addr.port());
        assert_eq!(resp.headers()[header::ALT_SVC], alt_svc.as_str());
        assert_ne!(resp.headers()["selected-prism"], "hyper");
    }
}
