//! The bundled Quill server (feature `server`, binary `quill-server`).
//!
//! An axum 0.8 / hyper server (HTTP/1.1 and HTTP/2, cleartext or TLS; with TLS also
//! HTTP/3 over QUIC) that speaks protocol.md: unary, server-,
//! client- and bidirectional streaming calls, zstd in both directions, Problem Details
//! errors, plus `test.v1.FaultService/*` routes that misbehave on purpose so client test
//! suites can check their error handling. See docs/server.md for every route.
//!
//! Every frame, token, tensor and dtype codec comes from the core crate; this module
//! holds only HTTP plumbing and the demo handlers.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let config = quill::server::Config { port: 0, ..Default::default() };
//! let server = quill::server::Server::bind(config).await?;
//! println!("listening on http://{}", server.local_addr());
//! server.serve().await
//! # }
//! ```

mod body;
mod echo;
mod fault;
pub mod generator;
mod h3;
mod hash;
mod inference;
mod inference_v1;
mod layer;
mod listen;
mod problem;
mod tensor;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::HeaderValue;
use axum::routing::post;
use axum::Router;

pub use tls::TlsFiles;

pub use crate::protocol::MAX_REQUEST_BODY;

/// Server settings, usually parsed from the command line by [`Config::from_args`].
#[derive(Clone, Default)]
pub struct Config {
    /// Address to bind; `127.0.0.1` when empty.
    pub host: String,
    /// TCP port; 0 picks a free one.
    pub port: u16,
    /// Bearer token demanded by the auth-required routes (`test.v1.FaultService/Auth`).
    pub token: Option<String>,
    /// Log one line per request to stderr.
    pub log: bool,
    /// Serve TLS (ALPN `h2` and `http/1.1`) with this certificate and key instead of
    /// cleartext HTTP/1.1 and h2c, and HTTP/3 on UDP on the same port.
    pub tls: Option<TlsFiles>,
    /// Most concurrent streams per HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS)
    /// and per HTTP/3 connection (QUIC bidirectional streams); `None` = hyper's
    /// default (200).
    pub h2_max_streams: Option<u32>,
    /// The UDP port HTTP/3 is served on, advertised in `Alt-Svc` on every HTTP/1.1 and
    /// HTTP/2 response. [`Server::bind`] sets it when it serves HTTP/3.
    pub alt_svc_port: Option<u16>,
    /// With TLS: advertise HTTP/3 but drop every UDP datagram, as a firewall that
    /// blocks QUIC does (`--udp-blocked`, for clients' fallback tests).
    pub udp_blocked: bool,
}

impl std::fmt::Debug for Config {
    // Never show the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("log", &self.log)
            .field("tls", &self.tls)
            .field("h2_max_streams", &self.h2_max_streams)
            .field("alt_svc_port", &self.alt_svc_port)
            .field("udp_blocked", &self.udp_blocked)
            .finish()
    }
}

/// Usage text of the binary.
pub const USAGE: &str = "\
usage: quill-server [--port N] [--host ADDR] [--token T] [--log]
                    [--tls-cert PEM --tls-key PEM | --tls-self-signed DIR]
                    [--h2-max-streams N] [--udp-blocked]

  --port N     TCP port to listen on (default 0: pick a free port)
  --host ADDR  address to bind (default 127.0.0.1)
  --token T    demand `Authorization: Bearer T` on test.v1.FaultService/Auth
               (or set QUILL_SERVER_TOKEN, which keeps it out of `ps`)
  --log        log one line per request to stderr
  --tls-cert PEM, --tls-key PEM
               serve TLS with this certificate chain and key (ALPN h2 and
               http/1.1) instead of cleartext HTTP/1.1 and h2c, and also
               HTTP/3 (QUIC, ALPN h3) on UDP on the same port number
  --tls-self-signed DIR
               as --tls-cert/--tls-key with a fresh certificate for localhost,
               127.0.0.1 and ::1, written to DIR/cert.pem (trust it in
               clients) and DIR/key.pem; for local use only
  --h2-max-streams N
               most concurrent streams per HTTP/2 (and HTTP/3) connection
               (default 200)
  --udp-blocked
               with TLS: advertise HTTP/3 but drop every UDP datagram, as a
               firewall blocking QUIC would (tests clients' fallback to TCP)

Serves HTTP/1.1 and HTTP/2 on the same port (with TLS, HTTP/3 on UDP too).
When ready, prints `listening on http://HOST:PORT` (`https://` with TLS) on
stdout.";

impl Config {
    /// Parses `--port N --host H --token T --log` (also `--flag=value`). The token may
    /// also come from the `QUILL_SERVER_TOKEN` environment variable.
    pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Result<Config, String> {
        let mut cfg = Config {
            host: "127.0.0.1".to_owned(),
            token: std::env::var("QUILL_SERVER_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            ..Config::default()
        };
        let (mut tls_cert, mut tls_key) = (None, None);
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let mut value = |name: &str| {
                inline
                    .clone()
                    .or_else(|| it.next())
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match flag.as_str() {
                "--port" | "-p" => {
                    let v = value("--port")?;
                    cfg.port = v
                        .parse()
                        .map_err(|_| format!("--port: {v:?} is not a port number (0-65535)"))?;
                }
                "--host" => cfg.host = value("--host")?,
                "--token" => {
                    let v = value("--token")?;
                    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic()) {
                        // Do not echo the value: it is a secret.
                        return Err("--token must be non-empty visible ASCII".to_owned());
                    }
                    cfg.token = Some(v);
                }
                "--log" => cfg.log = true,
                "--udp-blocked" => cfg.udp_blocked = true,
                "--tls-cert" => tls_cert = Some(PathBuf::from(value("--tls-cert")?)),
                "--tls-key" => tls_key = Some(PathBuf::from(value("--tls-key")?)),
                "--tls-self-signed" => {
                    let dir = PathBuf::from(value("--tls-self-signed")?);
                    let files = tls::write_self_signed(&dir)
                        .map_err(|e| format!("--tls-self-signed {}: {e}", dir.display()))?;
                    (tls_cert, tls_key) = (Some(files.cert), Some(files.key));
                }
                "--h2-max-streams" => {
                    let v = value("--h2-max-streams")?;
                    cfg.h2_max_streams =
                        Some(v.parse().ok().filter(|&n: &u32| n > 0).ok_or_else(|| {
                            format!("--h2-max-streams: {v:?} is not a positive integer")
                        })?);
                }
                "--help" | "-h" => return Err(String::new()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        cfg.tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together".to_owned()),
        };
        Ok(cfg)
    }
}

/// Counters behind `test.v1.FaultService/Stats`.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub open_streams: AtomicU64,
    pub cancelled_streams: AtomicU64,
    /// `Stall` requests whose handler is still alive.
    pub stalled: AtomicU64,
    /// Requests whose handler has not answered yet (this one excluded in `Stats`).
    pub in_flight: AtomicU64,
    /// Requests whose handler was dropped before it answered: the client closed the
    /// connection or reset the stream while waiting.
    pub abandoned: AtomicU64,
}

/// State shared by all handlers.
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub stats: Stats,
    /// `h3=":PORT"; ma=86400` from `config.alt_svc_port`, built once.
    pub alt_svc: Option<HeaderValue>,
}

pub(crate) type SharedState = Arc<AppState>;

/// The router: every route of docs/server.md, 405 for other methods on them, 404
/// Problem Details for anything else.
pub fn router(config: Config) -> Router {
    let alt_svc = config.alt_svc_port.map(|port| {
        HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400"))
            .expect("a port number makes a valid header value")
    });
    let state: SharedState = Arc::new(AppState {
        config,
        stats: Stats::default(),
        alt_svc,
    });
    Router::new()
        .route("/echo.v1.EchoService/Echo", post(echo::echo))
        .route("/echo.v1.EchoService/Headers", post(echo::headers))
        .route("/echo.v1.EchoService/BidiEcho", post(echo::bidi_echo))
        .route(
            "/echo.v1.EchoService/ClientStream",
            post(echo::client_stream),
        )
        .route(
            "/inference.v1.LLMService/Generate",
            post(inference::generate),
        )
        .route(
            "/inference.v1.LLMService/GenerateStream",
            post(inference::generate_stream),
        )
        .route("/inference.v1.LLMService/Embed", post(inference::embed))
        .route(
            "/quill.inference.v1.InferenceService/Generate",
            post(inference_v1::generate),
        )
        .route(
            "/quill.inference.v1.InferenceService/Embed",
            post(inference_v1::embed),
        )
        .route(
            "/quill.inference.v1.InferenceService/Chat",
            post(inference_v1::chat),
        )
        .route("/tensor.v1.TensorService/Upload", post(tensor::upload))
        .route("/tensor.v1.TensorService/Download", post(tensor::download))
        .route("/tensor.v1.TensorService/Sink", post(tensor::sink))
        .route("/test.v1.FaultService/Error", post(fault::error))
        .route("/test.v1.FaultService/PlainText", post(fault::plain_text))
        .route("/test.v1.FaultService/Html", post(fault::html))
        .route("/test.v1.FaultService/Slow", post(fault::slow))
        .route("/test.v1.FaultService/Auth", post(fault::auth))
        .route("/test.v1.FaultService/StreamCut", post(fault::stream_cut))
        .route(
            "/test.v1.FaultService/StreamBreak",
            post(fault::stream_break),
        )
        .route(
            "/test.v1.FaultService/StreamOversized",
            post(fault::stream_oversized),
        )
        .route(
            "/test.v1.FaultService/StreamCancel",
            post(fault::stream_cancel),
        )
        .route(
            "/test.v1.FaultService/StreamCombined",
            post(fault::stream_combined),
        )
        .route("/test.v1.FaultService/StreamSlow", post(fault::stream_slow))
        .route("/test.v1.FaultService/Stats", post(fault::stats))
        .route("/test.v1.FaultService/Batches", post(fault::batches))
        .route("/test.v1.FaultService/Big", post(fault::big))
        .route("/test.v1.FaultService/Flood", post(fault::flood))
        .route("/test.v1.FaultService/Stall", post(fault::stall))
        .route("/test.v1.FaultService/GoAway", post(fault::goaway))
        .route("/test.v1.FaultService/Bomb", post(fault::bomb))
        .route("/test.v1.EmptyAnswers/{*path}", post(fault::empty_answer))
        .method_not_allowed_fallback(problem::method_not_allowed)
        .fallback(problem::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            layer::common,
        ))
        .with_state(state)
}

/// A bound, not yet serving, server.
pub struct Server {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    config: Config,
    tls: Option<tokio_rustls::TlsAcceptor>,
    quic: Option<quinn::Endpoint>,
    /// The UDP socket of `--udp-blocked`: bound so the port stays ours, never read.
    _blackhole: Option<std::net::UdpSocket>,
}

/// Fresh ports tried when port 0 was asked for and the UDP twin of the TCP port the
/// system picked is taken.
const BIND_ATTEMPTS: usize = 8;

impl Server {
    /// Binds `config.host:config.port` (and loads the TLS certificate and key, if any).
    /// With TLS it also binds UDP at the same address and port for HTTP/3.
    pub async fn bind(mut config: Config) -> std::io::Result<Server> {
        let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
        let host = if config.host.is_empty() {
            "127.0.0.1"
        } else {
            config.host.as_str()
        };
        let mut attempt = 1;
        let (listener, addr, quic, blackhole) = loop {
            let listener = tokio::net::TcpListener::bind((host, config.port)).await?;
            let addr = listener.local_addr()?;
            let Some(tls) = &tls else {
                break (listener, addr, None, None);
            };
            let udp = if config.udp_blocked {
                std::net::UdpSocket::bind(addr).map(|socket| (None, Some(socket)))
            } else {
                self::h3::endpoint(tls.clone(), addr, config.h2_max_streams)
                    .map(|quic| (Some(quic), None))
            };
            match udp {
                Ok((quic, blackhole)) => break (listener, addr, quic, blackhole),
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && config.port == 0
                        && attempt < BIND_ATTEMPTS =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        config.alt_svc_port = (quic.is_some() || blackhole.is_some()).then_some(addr.port());
        Ok(Server {
            listener,
            addr,
            config,
            tls: tls.map(listen::acceptor),
            quic,
            _blackhole: blackhole,
        })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The bound address (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until the process ends: TCP, and HTTP/3 too when TLS is on. Both share
    /// one router, so `Stats` counts requests of every protocol.
    pub async fn serve(self) -> std::io::Result<()> {
        let h2_max_streams = self.config.h2_max_streams;
        let app = router(self.config);
        let quic = async {
            if let Some(endpoint) = self.quic {
                self::h3::serve(endpoint, app.clone()).await;
            }
        };
        let tcp = listen::serve(self.listener, app.clone(), self.tls, h2_max_streams);
        tokio::join!(tcp, quic).0
    }
}

/// Entry point of the `quill-server` binary: parses `args` (without the program name),
/// binds, prints `listening on http://ADDR` and serves on a multi-threaded runtime.
pub fn main_with_args<I: IntoIterator<Item = String>>(args: I) -> std::process::ExitCode {
    use std::io::Write as _;
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(msg) if msg.is_empty() => {
            println!("{USAGE}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("quill-server: {msg}\n\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quill-server: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let server = match Server::bind(config.clone()).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "quill-server: cannot listen on {}:{}: {e}",
                    config.host, config.port
                );
                return std::process::ExitCode::FAILURE;
            }
        };
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "listening on {}://{}",
                server.scheme(),
                server.local_addr()
            );
            let _ = out.flush();
        }
        if config.log {
            eprintln!(
                "quill-server: serving on {} (auth token {})",
                server.local_addr(),
                if config.token.is_some() {
                    "set"
                } else {
                    "not set"
                }
            );
        }
        match server.serve().await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("quill-server: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    })
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        Config::from_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn tls_and_http2_flags() {
        let c = parse(&[
            "--tls-cert",
            "c.pem",
            "--tls-key=k.pem",
            "--h2-max-streams",
            "1",
        ])
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!((tls.cert, tls.key), ("c.pem".into(), "k.pem".into()));
        assert_eq!(c.h2_max_streams, Some(1));
        assert!(parse(&["--tls-cert", "c.pem"])
            .unwrap_err()
            .contains("go together"));
        assert!(parse(&["--h2-max-streams", "0"]).is_err());
        assert!(parse(&[]).unwrap().tls.is_none());
    }
}
