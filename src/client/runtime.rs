//! The tokio runtimes and the reqwest clients of one [`QuillClient`](super::QuillClient).
//!
//! Each client owns a small multi-thread runtime ("quill-io" threads) so that its calls
//! work from any caller: plain threads, the Python face, uniffi's foreign executors or
//! another async runtime. Work is spawned onto it and the caller awaits the
//! `JoinHandle`, which needs no reactor of its own.
//!
//! Handing a call to those workers costs two thread wake-ups (caller to worker and
//! back), which is most of a small call on loopback. So each client also owns up to
//! [`MAX_LANES`] [`Lane`]s, made on demand: thread-less current-thread runtimes with a
//! small pool each, each driven by one caller at a time that is willing to block (see
//! `blocking.rs`). A lane's connections live on its runtime and are only polled while a
//! caller drives it, which is why every lane has a pool of its own: a connection
//! spawned there must never be handed to a task elsewhere.
//!
//! Fork safety: a forked child inherits the runtime's memory but none of its threads,
//! the locks other threads held at that moment, and the pool's sockets, shared with the
//! parent. So everything of one process (`Local`: runtime, pools, lanes, the closing
//! signal) is a [`PerProcess`]: the child builds its own on its first call and leaves
//! the inherited one alone (see `fork.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::alt_svc::AltSvc;
use super::closer::{Closed, Closer};
use super::config::{ClientConfig, Http2Settings, HttpVersion};
use super::connections::{ConnectEvents, SeenConnections};
use super::errors::map_join_error;
use super::quic::{QuicPool, QuicSettings};
use super::transport::{AutoTransport, Transport};
use crate::error::{QuillError, Result};
use crate::fork::PerProcess;

/// Worker threads per client: the client is I/O bound; two keep one busy decoder from
/// stalling timers and sockets.
const WORKER_THREADS: usize = 2;
/// Redirects followed at most (same origin only).
const MAX_REDIRECTS: usize = 5;

/// What is needed to rebuild the reqwest client after a fork.
#[derive(Clone)]
pub(crate) struct HttpSettings {
    pub user_agent: String,
    pub extra_roots: Vec<reqwest::Certificate>,
    /// `host:port` of the server, for connection events.
    pub peer: String,
    pub version: HttpVersion,
    pub http2: Http2Settings,
    pub max_connections: u32,
    /// The PEM behind `extra_roots`, for the QUIC client's own TLS configuration.
    pub ca_pem: Option<Vec<u8>>,
    /// Whether the base URL is `https://` (`auto` may then move to HTTP/3).
    pub https: bool,
    /// `ClientConfig::tls_server_name`: the name calls use while `peer` is dialled.
    pub server_name: Option<String>,
    /// HTTP/3 as advertised by the server, shared by every pool of the client (lanes
    /// included) and kept across a fork.
    pub alt_svc: Arc<AltSvc>,
}

impl HttpSettings {
    pub fn new(config: &ClientConfig, user_agent: String, peer: String) -> Result<HttpSettings> {
        let ca_cert_pem = config.ca_cert_pem.as_deref();
        let extra_roots = match ca_cert_pem {
            None => Vec::new(),
            Some(pem) => {
                let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                    QuillError::invalid(format!("ca_cert_pem is not a valid PEM certificate: {e}"))
                })?;
                if certs.is_empty() {
                    return Err(QuillError::invalid(
                        "ca_cert_pem contains no PEM certificate",
                    ));
                }
                certs
            }
        };
        // Checked here so an invalid override fails at construction, not per call.
        reqwest::header::HeaderValue::from_str(&user_agent)
            .map_err(|_| QuillError::invalid("user_agent is not a valid header value"))?;
        Ok(HttpSettings {
            user_agent,
            extra_roots,
            peer,
            version: config.http_version,
            http2: config.http2.clone(),
            max_connections: config.max_connections,
            ca_pem: config.ca_cert_pem.clone(),
            https: config.base_url.starts_with("https://"),
            alt_svc: Arc::default(),
            server_name: match &config.tls_server_name {
                None => None,
                Some(name) => Some(checked_server_name(name, &config.base_url)?),
            },
        })
    }

    /// The transport of [`version`](Self::version); a QUIC one needs the runtime
    /// entered (its endpoint is driven there).
    fn build_transport(&self) -> Result<Transport> {
        match (self.version, self.https) {
            (HttpVersion::Http3, _) => Ok(Transport::Quic(Arc::new(self.quic_pool()?))),
            (HttpVersion::Auto, true) => Ok(Transport::Auto(Arc::new(AutoTransport::new(
                self.build_client()?,
                self.quic_pool()?,
            )))),
            _ => self.build_client().map(Transport::Tcp),
        }
    }

    /// The host of the configured URL, without IPv6 brackets: what is dialled.
    fn dial_host(&self) -> &str {
        let host = self.peer.rsplit_once(':').map_or("", |(host, _)| host);
        host.trim_start_matches('[').trim_end_matches(']')
    }

    fn quic_pool(&self) -> Result<QuicPool> {
        let (host, port) = self
            .peer
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse().ok()?)))
            .ok_or_else(|| QuillError::invalid("base_url names no host and port"))?;
        // An IPv6 literal is bracketed in URLs; the resolver wants it bare.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        QuicPool::new(QuicSettings {
            server_name: self.server_name.clone().unwrap_or_else(|| host.clone()),
            host,
            port,
            user_agent: reqwest::header::HeaderValue::from_str(&self.user_agent)
                .map_err(|_| QuillError::invalid("user_agent is not a valid header value"))?,
            ca_pem: self.ca_pem.clone(),
            alt_svc: self.alt_svc.clone(),
            keep_alive: self.keep_alive_interval(),
            // A PING goes out after `interval` of quiet and gets `timeout` to be
            // answered, as over HTTP/2.
            idle_timeout: self.keep_alive_interval().unwrap_or_default()
                + Duration::from_millis(self.http2.keep_alive_timeout_ms),
        })
    }

    fn build_client(&self) -> Result<reqwest::Client> {
        let builder = reqwest::Client::builder();
        let mut builder = match self.version {
            HttpVersion::Http1 => builder.http1_only(),
            // reqwest offers ALPN h2 and http/1.1 over TLS and speaks HTTP/1.1 over
            // cleartext unless told otherwise: exactly `Auto`.
            HttpVersion::Auto => self.tune_http2(builder),
            HttpVersion::Http2 => self.tune_http2(builder.http2_prior_knowledge()),
            // Not reached (`build_transport`); a TCP pool for it would be the same as Auto.
            HttpVersion::Http3 => self.tune_http2(builder),
        }
        .use_rustls_tls()
        .user_agent(self.user_agent.clone())
        .referer(false)
        .redirect(same_origin_redirects())
        .connector_layer(ConnectEvents {
            peer: self.peer.clone(),
        });
        for cert in &self.extra_roots {
            builder = builder.add_root_certificate(cert.clone());
        }
        if self.server_name.is_some() {
            // The URL names the server name; its address is the configured host's.
            builder = builder.dns_resolver(Arc::new(DialHost(self.dial_host().to_owned())));
        }
        builder.build().map_err(|e| {
            QuillError::invalid(format!(
                "could not build the HTTP client: {}",
                super::errors::describe(&e)
            ))
        })
    }
}

/// The largest HTTP/2 DATA frame the client accepts. hyper's default, 16 KiB, cut every
/// 64 KiB tensor payload into four frames; a whole payload per frame took HTTP/2 tensor
/// downloads from about half to over two thirds of raw loopback TCP
/// (docs/performance.md), and a frame still stays small next to the stream window.
const HTTP2_MAX_FRAME_SIZE: u32 = 256 * 1024;

impl HttpSettings {
    fn tune_http2(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let h2 = &self.http2;
        let mut builder = builder
            .http2_keep_alive_timeout(Duration::from_millis(h2.keep_alive_timeout_ms))
            .http2_keep_alive_interval(self.keep_alive_interval())
            .http2_max_frame_size(HTTP2_MAX_FRAME_SIZE);
        if h2.adaptive_window {
            builder = builder.http2_adaptive_window(true);
        } else {
            builder = builder
                .http2_initial_stream_window_size(
                    h2.initial_stream_window
                        .unwrap_or(super::config::DEFAULT_HTTP2_STREAM_WINDOW),
                )
                .http2_initial_connection_window_size(
                    h2.initial_connection_window
                        .unwrap_or(super::config::DEFAULT_HTTP2_CONNECTION_WINDOW),
                );
        }
        builder
    }
}

impl HttpSettings {
    /// The PING interval of HTTP/2 and HTTP/3 connections (`None`: no pings).
    fn keep_alive_interval(&self) -> Option<Duration> {
        self.http2
            .keep_alive_interval_ms
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis)
    }
}

/// `tls_server_name`, checked: a DNS name or IP address, on an `https://` URL.
fn checked_server_name(name: &str, base_url: &str) -> Result<String> {
    if !base_url.starts_with("https://") {
        return Err(QuillError::invalid(
            "tls_server_name needs an https:// base_url",
        ));
    }
    rustls::pki_types::ServerName::try_from(name)
        .map_err(|_| QuillError::invalid(format!("tls_server_name {name:?} is not a host name")))?;
    Ok(name.to_owned())
}

/// Resolves every name to the configured host's addresses (`tls_server_name`: the URL
/// names the certificate's host, but the configured host is what is dialled).
struct DialHost(String);

impl reqwest::dns::Resolve for DialHost {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = self.0.clone();
        Box::pin(async move {
            // Port 0: the connector puts the URL's port on each address.
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.collect::<Vec<_>>().into_iter());
            Ok(addrs)
        })
    }
}

/// Follows redirects only within the origin of the original URL, so no header (bearer
/// token, API key under any name) is ever sent to another host. A cross-origin redirect
/// is not followed: its 3xx response is returned and becomes a `Status` error.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        let Some(first) = attempt.previous().first() else {
            return attempt.stop();
        };
        let next = attempt.url();
        let same = first.scheme() == next.scheme()
            && first.host_str() == next.host_str()
            && first.port_or_known_default() == next.port_or_known_default();
        if same {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

fn runtime_error(e: std::io::Error) -> QuillError {
    QuillError::Connection {
        reason: format!("could not start the client's I/O runtime: {e}"),
    }
}

/// A current-thread runtime and its own pool, driven by at most one blocking caller at
/// a time (`busy`).
pub(crate) struct Lane {
    runtime: Option<tokio::runtime::Runtime>,
    http: reqwest::Client,
    busy: AtomicBool,
    created: std::time::Instant,
    /// When the last call on the lane ended, in ns since `created`.
    last_used_ns: AtomicU64,
}

/// Threads that can drive their own blocking calls at once; more run on the workers.
/// Each lane keeps its own keep-alive connection, and beyond a few threads the GIL (in
/// Python) and the cores, not the hand-off, limit a shared client.
const MAX_LANES: usize = 4;

/// Idle time after which a call first lets the lane catch up on its sockets; see
/// [`LaneGuard::catch_up`].
const CATCH_UP_AFTER: Duration = Duration::from_millis(1);

impl Lane {
    fn build(settings: &HttpSettings) -> Result<Lane> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(runtime_error)?;
        Ok(Lane {
            runtime: Some(runtime),
            http: settings.build_client()?,
            busy: AtomicBool::new(false),
            created: std::time::Instant::now(),
            last_used_ns: AtomicU64::new(0),
        })
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Never blocks, so a client may be dropped inside async code.
            rt.shutdown_background();
        }
    }
}

/// Exclusive use of a [`Lane`] by the calling thread; released on drop.
pub(crate) struct LaneGuard(Arc<Lane>);

impl LaneGuard {
    /// The lane's own pool: connections made through it live on the lane's runtime.
    pub fn http(&self) -> Transport {
        Transport::Tcp(self.0.http.clone())
    }

    /// Nothing polls the lane between calls, so a keep-alive connection the server
    /// closed meanwhile (servers drop idle ones after a few seconds) still looks
    /// reusable to the pool; a request written to it would fail with "connection closed
    /// before message completed". After an idle gap this runs the lane briefly first: the first yield
    /// lets the driver collect pending socket events (the FIN), the second lets the
    /// woken connection task see the close, so the pool drops it. Back-to-back calls
    /// skip it (a close racing a call is a risk for every HTTP client).
    pub fn catch_up(&self) {
        let idle_ns = self
            .0
            .now_ns()
            .saturating_sub(self.0.last_used_ns.load(Ordering::Relaxed));
        if Duration::from_nanos(idle_ns) >= CATCH_UP_AFTER {
            self.block_on(async {
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
            });
        }
    }

    /// Drives `f` (and the lane's connections, timers and sockets) on this thread.
    ///
    /// # Panics
    /// Inside an async runtime (checked by the caller) or if `f` panics.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.0
            .runtime
            .as_ref()
            .expect("the runtime is only taken on drop")
            .block_on(f)
    }
}

impl Drop for LaneGuard {
    fn drop(&mut self) {
        let now = self.0.now_ns();
        self.0.last_used_ns.store(now, Ordering::Relaxed);
        self.0.busy.store(false, Ordering::Release);
    }
}

struct Parts {
    runtime: Option<tokio::runtime::Runtime>,
    /// Dropped by `close`, which closes the pool's idle connections.
    http: Option<Transport>,
    /// Created on demand, up to [`MAX_LANES`]: one per thread blocking at once.
    lanes: Vec<Arc<Lane>>,
    /// `max_connections` permits shared by the workers and every lane (HTTP/1.1).
    slots: Option<Arc<tokio::sync::Semaphore>>,
}

impl Parts {
    fn build(settings: &HttpSettings) -> Result<Parts> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("quill-io")
            .on_thread_start(super::events::mark_worker)
            .enable_all()
            .build()
            .map_err(runtime_error)?;
        let http = {
            let _entered = runtime.enter();
            settings.build_transport()?
        };
        Ok(Parts {
            runtime: Some(runtime),
            http: Some(http),
            lanes: Vec::new(),
            slots: (settings.max_connections > 0
                && matches!(settings.version, HttpVersion::Auto | HttpVersion::Http1))
            .then(|| {
                Arc::new(tokio::sync::Semaphore::new(
                    settings.max_connections as usize,
                ))
            }),
        })
    }

    fn handle(&self) -> Handle {
        self.runtime
            .as_ref()
            .expect("the runtime is only taken on drop")
            .handle()
            .clone()
    }

    fn http(&self) -> Transport {
        self.http
            .clone()
            .expect("the pool is only dropped on close, checked before")
    }
}

impl Drop for Parts {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Never blocks, so a client may be dropped inside async code.
            rt.shutdown_background();
        }
    }
}

/// What one process has of a client: its runtime and pools, the signal its calls
/// watch, the connections it has seen. A forked child builds its own (see `fork.rs`):
/// another thread of the parent may have held the parts' lock or the closing signal's
/// at the moment of the fork, and the runtime's threads are not in the child.
struct Local {
    parts: Mutex<Parts>,
    closer: Closer,
    seen: SeenConnections,
}

impl Local {
    fn build(settings: &HttpSettings, closed: bool) -> Result<Local> {
        let mut parts = Parts::build(settings)?;
        let closer = Closer::new();
        if closed {
            // The child of a closed client: closed too, with the pools gone.
            closer.close();
            parts.http = None;
        }
        Ok(Local {
            parts: Mutex::new(parts),
            closer,
            seen: SeenConnections::default(),
        })
    }
}

/// The runtime and HTTP client of one `QuillClient`, rebuilt after a fork.
///
/// Closing ([`close`](Self::close)) cancels every call in flight and drops the pools,
/// which closes their connections; the worker threads stay until the client is
/// dropped, because a caller still unwinding from a cancelled call may be waiting on
/// their timers.
pub(crate) struct ClientRuntime {
    local: PerProcess<Local>,
    settings: HttpSettings,
    /// Whether `close` was called; crosses a fork, where the child's `Local` is built
    /// closed.
    closed: AtomicBool,
}

impl ClientRuntime {
    pub fn new(settings: HttpSettings) -> Result<ClientRuntime> {
        Ok(ClientRuntime {
            local: PerProcess::new(Local::build(&settings, false)?),
            settings,
            closed: AtomicBool::new(false),
        })
    }

    /// This process's part of the client, built first in a forked child.
    fn local(&self) -> Result<&Local> {
        self.local
            .get_or_try(|| Local::build(&self.settings, self.closed.load(Ordering::SeqCst)))
    }

    /// Cancels every call in flight and drops the connection pools; later calls fail
    /// with [`QuillError::Cancelled`]. Whether this call closed it (false when it
    /// already was). Never blocks.
    pub fn close(&self) -> bool {
        if self.closed.swap(true, Ordering::SeqCst) {
            return false;
        }
        // Without a `Local` of this process nothing is in flight here, and the one a
        // later call builds starts closed.
        if let Some(local) = self.local.get_if_built() {
            local.closer.close();
            let mut parts = lock(&local.parts);
            // A lane a caller is driving right now stays with its guard until the
            // caller returns (with the cancellation), and is dropped then.
            parts.lanes.clear();
            parts.http = None;
        }
        true
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Notes what a TCP response says about HTTP/3 (`Alt-Svc`); only `auto` clients of
    /// `https://` servers move to it.
    pub fn learn_alt_svc(&self, headers: &reqwest::header::HeaderMap) {
        let settings = &self.settings;
        if settings.version == HttpVersion::Auto && settings.https {
            settings.alt_svc.learn(headers, settings.dial_host());
        }
    }

    /// Whether a call on local address `local` found a connection used before.
    pub fn seen_before(&self, local: std::net::SocketAddr) -> bool {
        self.local().is_ok_and(|l| l.seen.seen_before(local))
    }

    /// The signal a call watches to end when the client closes.
    pub fn closed(&self) -> Result<Closed> {
        Ok(self.local()?.closer.watch())
    }

    /// The parts for this process; with `open`, an error once the client is closed
    /// (its pools are gone).
    fn parts(&self, open: bool) -> Result<MutexGuard<'_, Parts>> {
        let local = self.local()?;
        let parts = lock(&local.parts);
        // Checked under the lock: `close` fires before it takes the lock to drop the
        // pools, so a caller that finds them gone has seen the signal.
        if open && local.closer.is_closed() {
            return Err(QuillError::Cancelled {
                reason: "the client is closed".to_owned(),
            });
        }
        Ok(parts)
    }

    /// The connection slots for this process (its own after a fork: a parent's calls
    /// in flight must not hold the child's).
    pub fn slots(&self) -> Option<Arc<tokio::sync::Semaphore>> {
        self.parts(false).ok()?.slots.clone()
    }

    /// The runtime handle for this process, also on a closed client (the runtime runs
    /// until the client is dropped).
    pub fn handle(&self) -> Result<Handle> {
        Ok(self.parts(false)?.handle())
    }

    /// The runtime handle and reqwest client for this process.
    pub fn current(&self) -> Result<(Handle, Transport)> {
        let parts = self.parts(true)?;
        Ok((parts.handle(), parts.http()))
    }

    /// [`current`](Self::current), plus a free lane: an idle one, or a new one while
    /// there are fewer than [`MAX_LANES`]; `None` when all are busy (or a new one
    /// could not be built), and the call then runs on the workers. HTTP/3 calls (and
    /// `auto` ones once HTTP/3 is advertised) always run on the workers, where the QUIC
    /// endpoint is driven.
    pub fn for_blocking(&self) -> Result<(Handle, Transport, Option<LaneGuard>)> {
        {
            let parts = self.parts(true)?;
            if parts.http().needs_workers() {
                return Ok((parts.handle(), parts.http(), None));
            }
            let free = parts.lanes.iter().find(|lane| {
                lane.busy
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            });
            if let Some(lane) = free {
                let lane = LaneGuard(lane.clone());
                return Ok((parts.handle(), parts.http(), Some(lane)));
            }
            if parts.lanes.len() >= MAX_LANES {
                return Ok((parts.handle(), parts.http(), None));
            }
        }
        // Built without the lock: a runtime and a TLS client take milliseconds, and
        // other threads' calls need the lock meanwhile.
        let built = Lane::build(&self.settings).ok().map(Arc::new);
        let mut parts = self.parts(true)?;
        let lane = match built {
            // Another thread may have taken the last place meanwhile: this call then
            // runs on the workers, and the lane built for it is dropped.
            Some(lane) if parts.lanes.len() < MAX_LANES => {
                lane.busy.store(true, Ordering::Relaxed);
                parts.lanes.push(lane.clone());
                Some(LaneGuard(lane))
            }
            _ => None,
        };
        Ok((parts.handle(), parts.http(), lane))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A `JoinHandle` that aborts its task when dropped, so cancelling the caller's future
/// (a timeout, a dropped Python awaitable) also stops the work on the client runtime.
pub(crate) struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.map_err(map_join_error))
    }
}

/// Runs `fut` on `handle`'s runtime and waits for it from any executor.
pub(crate) fn spawn_on<T, F>(handle: &Handle, fut: F) -> AbortOnDrop<Result<T>>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    // The task works for whoever spawned it: its events are that caller's.
    let caller = super::events::current_caller();
    AbortOnDrop(handle.spawn(super::events::for_caller(caller, fut)))
}

/// Flattens the task's own `Result` with the join result.
pub(crate) async fn run_on<T, F>(handle: &Handle, fut: F) -> Result<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    spawn_on(handle, fut).await?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> ClientRuntime {
        let config = ClientConfig::new("http://h:1");
        let settings = HttpSettings::new(&config, "quill/test".into(), "h:1".into()).unwrap();
        ClientRuntime::new(settings).unwrap()
    }

    #[test]
    fn runs_work_from_a_plain_thread_and_names_threads() {
        let rt = runtime();
        let (handle, _) = rt.current().unwrap();
        let name = handle
            .block_on(run_on(&handle, async {
                Ok(std::thread::current().name().map(str::to_owned))
            }))
            .unwrap();
        assert_eq!(name.as_deref(), Some("quill-io"));
    }

    #[test]
    fn panics_become_errors() {
        let rt = runtime();
        let (handle, _) = rt.current().unwrap();
        let r: Result<()> = handle.block_on(run_on(&handle, async { panic!("kaboom") }));
        assert!(matches!(r, Err(QuillError::Cancelled { reason }) if reason.contains("kaboom")));
    }

    #[test]
    fn dropping_inside_async_code_does_not_panic() {
        let outer = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let rt = runtime();
        outer.block_on(async move { drop(rt) });
    }

    #[test]
    fn lanes_are_made_on_demand_up_to_the_limit_and_reused() {
        let rt = runtime();
        assert!(rt.parts(false).unwrap().lanes.is_empty());
        let held: Vec<LaneGuard> = (0..MAX_LANES)
            .map(|_| rt.for_blocking().unwrap().2.expect("a free lane"))
            .collect();
        assert!(
            rt.for_blocking().unwrap().2.is_none(),
            "all lanes busy: the call goes to the workers"
        );
        drop(held);
        let again = rt.for_blocking().unwrap().2;
        assert!(again.is_some());
        assert_eq!(rt.parts(false).unwrap().lanes.len(), MAX_LANES);
    }

    #[test]
    fn a_forked_child_rebuilds_without_touching_the_inherited_lock() {
        let rt = runtime();
        let (before, _) = rt.current().unwrap();
        // Another thread holds the parts' lock when the process forks.
        let held = rt.local().unwrap().parts.lock().unwrap();
        rt.local.pretend_inherited();
        let (after, _) = rt.current().unwrap();
        assert_ne!(before.id(), after.id());
        assert!(
            rt.for_blocking().unwrap().2.is_some(),
            "the child makes its own lanes"
        );
        drop(held);
    }

    #[test]
    fn the_child_of_a_closed_client_is_closed() {
        let rt = runtime();
        assert!(rt.close());
        rt.local.pretend_inherited();
        assert!(rt.is_closed());
        assert!(matches!(rt.current(), Err(QuillError::Cancelled { .. })));
        assert!(rt.closed().unwrap().is_fired());
        assert!(
            rt.handle().is_ok(),
            "the runtime stays for callers unwinding"
        );
        assert!(!rt.close(), "closing again is a no-op");
    }

    #[test]
    fn bad_settings_are_invalid_arguments() {
        let mut config = ClientConfig::new("http://h:1");
        assert!(matches!(
            HttpSettings::new(&config, "bad\nua".into(), "h:1".into()),
            Err(QuillError::InvalidArgument { .. })
        ));
        config.ca_cert_pem = Some(b"not pem".to_vec());
        assert!(matches!(
            HttpSettings::new(&config, "ua".into(), "h:1".into()),
            Err(QuillError::InvalidArgument { .. })
        ));
    }
}
