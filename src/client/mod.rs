//! The Quill RPC client: [`QuillClient`] and [`ClientConfig`]; a call is described by
//! a [`Call`] (service, method, [`Body`], [`CallOptions`]) and run by
//! [`QuillClient::run`] or [`QuillClient::run_blocking`], which return the [`Answer`]
//! asked for: a [`Reply`], a [`Tensor`](crate::Tensor), a [`MessageStream`] or a
//! [`TokenStream`].
//!
//! One client owns one reqwest connection pool (HTTP/1.1 only, keep-alive, rustls with
//! the bundled webpki roots) and one small tokio runtime, both built once at
//! construction. Every async call is spawned onto that runtime, so the async methods
//! can be awaited from any executor — tokio, another runtime, the Kotlin and Swift
//! executors. The `*_blocking` methods serve plain threads with the lowest latency: the
//! calling thread drives the call itself (see `blocking.rs`). A panic inside a call
//! becomes a [`QuillError::Cancelled`] and never unwinds into the caller (or across FFI).
//!
//! ```no_run
//! use quill::client::{Call, Reply};
//! use quill::{ClientConfig, QuillClient};
//! let client = QuillClient::with_config(ClientConfig::new("http://127.0.0.1:8080")).unwrap();
//! client.set_bearer_token("secret").unwrap();
//! let call = Call::proto("echo.v1.EchoService", "Echo", "hi").idempotent(true);
//! let reply: Reply = client.run_blocking(call).unwrap();
//! assert_eq!(&reply.body[..], b"hi");
//! ```

mod alt_svc;
mod answer;
mod blocking;
mod body;
mod call;
mod closer;
mod compression;
mod config;
mod connections;
mod errors;
pub mod events;
mod negotiation;
mod quic;
mod reply_memory;
mod request;
mod retry;
mod runtime;
mod stream;
mod tensor;
mod transport;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::Duration;

use tokio::time::Instant;

pub use answer::{Answer, Reply};
pub use config::{
    ClientConfig, HeaderSetting, Http2Settings, HttpVersion, DEFAULT_API_KEY_HEADER,
    DEFAULT_HTTP2_CONNECTION_WINDOW, DEFAULT_HTTP2_STREAM_WINDOW, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT_MS, MAX_HTTP2_WINDOW, REDACTED,
};
pub use request::{
    request_stream, Body, Call, CallOptions, MessageQueue, RequestSender, RequestStream,
};
pub use stream::{MessageStream, TokenStream};

#[cfg(feature = "python")]
pub(crate) use reply_memory::Memory as ReplyMemory;
pub(crate) use reply_memory::Provider as ReplyMemoryProvider;

use call::{call_headers, CallContext};
use config::{default_user_agent, normalize_base_url, validate_path_part, HeaderStore};
use errors::CallLabel;
use quic::QuicPool;
use runtime::{run_on, ClientRuntime, HttpSettings, LaneGuard};
use transport::Transport;

use crate::error::{QuillError, Result};

/// A client of one Quill server. `Send + Sync`: share it (e.g. in an `Arc`) across
/// threads and tasks; calls run concurrently over the shared connection pool.
///
/// Headers set with the `set_*` methods go out on every later call. Secret values —
/// `Authorization`, the API-key header, headers set with
/// [`set_secret_header`](Self::set_secret_header) and any header whose name looks like
/// a credential (contains `auth`, `token`, `secret`, `password`, `passwd`, `key`,
/// `session`, `credential`, `cookie` or `signature`, in any case) — are shown as
/// [`REDACTED`] by [`headers`](Self::headers) and never appear in `Debug` or in error
/// messages.
///
/// ```
/// use quill::QuillClient;
/// let client = QuillClient::new("http://127.0.0.1:8080/", 500, false).unwrap();
/// client.set_bearer_token("s3cret").unwrap();
/// client.set_header("X-Trace", "abc").unwrap();
/// assert_eq!(client.headers()[0], ("Authorization".to_owned(), "<redacted>".to_owned()));
/// assert!(!format!("{client:?}").contains("s3cret"));
/// assert!(client.set_header("X-Bad", "a\r\nb").is_err());
/// ```
pub struct QuillClient {
    /// As given, except `base_url`, which is normalised.
    config: ClientConfig,
    /// `config.base_url`, parsed once: each call appends its path to a copy.
    base: reqwest::Url,
    runtime: Arc<ClientRuntime>,
    /// Lock-free, so that a fork while another thread reads or writes them leaves the
    /// child nothing locked (`fork.rs`).
    headers: ArcSwap<HeaderStore>,
    server: Arc<negotiation::ServerCodings>,
    /// `Prefer: prism=...` for this client's HTTP version and scheme.
    prefer: reqwest::header::HeaderValue,
}

impl fmt::Debug for QuillClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuillClient")
            .field("base_url", &self.config.base_url)
            .field("timeout_ms", &self.config.timeout_ms)
            .field("compression", &self.config.enable_compression)
            .field("max_retries", &self.config.max_retries)
            .field("header_names", &self.read_headers().names())
            .finish_non_exhaustive()
    }
}

impl QuillClient {
    /// Builds a client: validates the config, starts the runtime and the connection
    /// pool. Never panics; a bad URL, certificate or user agent is
    /// [`QuillError::InvalidArgument`]. No connection is made until the first call.
    pub fn with_config(mut config: ClientConfig) -> Result<QuillClient> {
        config.base_url = normalize_base_url(&config.base_url)?;
        config.validate()?;
        let mut base = reqwest::Url::parse(&config.base_url)
            .map_err(|e| QuillError::invalid(format!("base_url is not a valid URL: {e}")))?;
        if config.http_version == config::HttpVersion::Http3 && base.scheme() != "https" {
            return Err(QuillError::invalid(
                "http_version \"http3\" needs an https:// base_url (QUIC always runs TLS 1.3)",
            ));
        }
        let user_agent = config.user_agent.clone().unwrap_or_else(default_user_agent);
        let peer = format!(
            "{}:{}",
            base.host_str().unwrap_or_default(),
            base.port_or_known_default().unwrap_or_default()
        );
        let settings = HttpSettings::new(&config, user_agent, peer)?;
        if let Some(name) = &config.tls_server_name {
            // Calls name the certificate's host; the settings above still dial the URL's
            // address (`peer`).
            base.set_host(Some(name))
                .map_err(|e| QuillError::invalid(format!("tls_server_name {name:?}: {e}")))?;
        }
        let prefer = reqwest::header::HeaderValue::from_str(
            &config.http_version.prefer(base.scheme() == "https"),
        )
        .expect("profile names are header-safe");
        Ok(QuillClient {
            config,
            base,
            prefer,
            runtime: Arc::new(ClientRuntime::new(settings)?),
            server: Arc::default(),
            headers: ArcSwap::from_pointee(HeaderStore::default()),
        })
    }

    /// Runs `f` to completion on the calling thread, with this client's runtime as
    /// context (for blocking Rust users of streams; unary and tensor calls have faster
    /// `*_blocking` methods).
    ///
    /// # Panics
    /// When called from inside an async runtime (tokio forbids blocking there), or if
    /// the runtime cannot be rebuilt after a fork (the OS refused to start threads).
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime_handle().block_on(f)
    }

    /// The handle of this client's runtime (rebuilt first if the process forked).
    ///
    /// # Panics
    /// If the runtime has to be rebuilt after a fork and the OS refuses to start threads.
    pub fn runtime_handle(&self) -> tokio::runtime::Handle {
        match self.runtime.handle() {
            Ok(handle) => handle,
            Err(e) => panic!("quill client runtime unavailable: {e}"),
        }
    }

    /// The handle of this client's runtime, or an error where
    /// [`runtime_handle`](Self::runtime_handle) would panic (the faces use this one).
    pub fn try_runtime_handle(&self) -> Result<tokio::runtime::Handle> {
        self.runtime.handle()
    }

    /// Tasks alive on this client's runtime: async calls, stream readers, and one per
    /// open connection. For leak checks: once calls have ended or been cancelled, it
    /// falls back to the number of open connections (0 for a closed client).
    ///
    /// ```
    /// let client = quill::QuillClient::new("http://127.0.0.1:9", 1000, false).unwrap();
    /// assert_eq!(client.live_tasks(), 0);
    /// ```
    pub fn live_tasks(&self) -> usize {
        self.try_runtime_handle()
            .map_or(0, |h| h.metrics().num_alive_tasks())
    }

    /// Moves this client's HTTP/3 connection to a new local UDP socket, as a phone does
    /// when it switches from Wi-Fi to cellular: QUIC connection migration keeps open
    /// streams and later calls on the same connection. Call it when the platform
    /// reports a network change. `Ok(false)` when there is nothing to move (not HTTP/3,
    /// or no call made yet); TCP connections cannot migrate and are left alone.
    ///
    /// ```
    /// let client = quill::QuillClient::new("http://127.0.0.1:9", 1000, false).unwrap();
    /// assert!(!client.rebind().unwrap());
    /// ```
    pub fn rebind(&self) -> Result<bool> {
        let (handle, transport) = self.runtime.current()?;
        match transport.quic() {
            Some(pool) => {
                // The new socket is registered with the runtime's reactor.
                let _entered = handle.enter();
                pool.rebind()
            }
            None => Ok(false),
        }
    }

    /// Calls this client sent as HTTP/3 0-RTT early data (idempotent calls on a resumed
    /// connection, before its handshake completed): shows 0-RTT at work.
    ///
    /// ```
    /// let client = quill::QuillClient::new("http://127.0.0.1:9", 1000, false).unwrap();
    /// assert_eq!(client.early_data_calls(), 0);
    /// ```
    pub fn early_data_calls(&self) -> u64 {
        self.runtime
            .current()
            .ok()
            .and_then(|(_, transport)| transport.quic().map(QuicPool::early_data_calls))
            .unwrap_or(0)
    }

    fn read_headers(&self) -> arc_swap::Guard<Arc<HeaderStore>> {
        self.headers.load()
    }

    /// Applies `change` to a copy of the headers and publishes it; writers racing each
    /// other each see the other's change (`change` runs again on the newer headers).
    fn update_headers<T>(&self, change: impl Fn(&mut HeaderStore) -> T) -> T {
        let mut outcome = None;
        self.headers.rcu(|current| {
            let mut next = HeaderStore::clone(current);
            outcome = Some(change(&mut next));
            next
        });
        outcome.expect("rcu runs its closure at least once")
    }

    /// Runs `call` and reads its answer as `A`: a [`Reply`] (one message), a
    /// [`Tensor`](crate::Tensor), a [`MessageStream`] or a [`TokenStream`]. The call runs on the
    /// client's own runtime, so the future can be awaited from any executor. A non-2xx
    /// answer is [`QuillError::Status`] with the server's Problem Details; calls marked
    /// idempotent whose body can be sent again are retried per `max_retries`.
    ///
    /// ```no_run
    /// # async fn demo(client: &quill::QuillClient) -> quill::Result<()> {
    /// use quill::client::{Call, Reply};
    /// let reply: Reply = client.run(Call::proto("echo.v1.EchoService", "Echo", "hi")).await?;
    /// assert_eq!(&reply.body[..], b"hi");
    /// # Ok(()) }
    /// ```
    pub async fn run<A: Answer>(&self, call: Call) -> Result<A> {
        let (handle, http) = self.runtime.current().map_err(|e| call.unless_closed(e))?;
        let (ctx, body, retries) = self.context(call, http)?;
        run_on(&handle, A::read(ctx, body, retries)).await
    }

    /// [`run`](Self::run) for a thread that blocks: a reply or tensor call is driven on
    /// the calling thread itself (no hop to the client's workers, about twice as fast
    /// for a small call); a stream is opened on the workers, where it is read later.
    /// Safe from many threads at once. Inside an async runtime it returns
    /// [`QuillError::InvalidArgument`]: await `run` there.
    ///
    /// ```no_run
    /// # let client = quill::QuillClient::new("http://127.0.0.1:8080", 5000, false).unwrap();
    /// use quill::client::{Call, Reply};
    /// let reply: Reply = client.run_blocking(Call::proto("echo.v1.EchoService", "Echo", "hi"))?;
    /// assert_eq!(&reply.body[..], b"hi");
    /// # Ok::<(), quill::QuillError>(())
    /// ```
    pub fn run_blocking<A: Answer>(&self, call: Call) -> Result<A> {
        self.run_blocking_with(call, blocking::NO_TICK, None)
    }

    /// [`run_blocking`](Self::run_blocking) calling `tick` (when given) every 50 ms while
    /// it waits (the Python face checks signals there); an error from `tick` cancels the
    /// call.
    /// `memory` provides the memory of a reply body of known length
    /// (`reply_memory.rs`); it is called on whichever thread reads the body: the
    /// caller's own on a lane, a worker otherwise.
    pub(crate) fn run_blocking_with<A: Answer, E: From<QuillError>>(
        &self,
        call: Call,
        tick: Option<impl FnMut() -> std::result::Result<(), E>>,
        memory: Option<ReplyMemoryProvider>,
    ) -> std::result::Result<A, E> {
        let parts = if A::ON_CALLER {
            self.runtime.for_blocking()
        } else {
            let current = self.runtime.current();
            current.map(|(handle, http)| (handle, http, None))
        };
        let (handle, shared, lane) = parts.map_err(|e| call.unless_closed(e))?;
        let http = lane.as_ref().map_or(shared, LaneGuard::http);
        let (mut ctx, body, retries) = self.context(call, http)?;
        ctx.reply_memory = memory;
        blocking::drive(
            handle,
            lane,
            ctx,
            move |ctx| A::read(ctx, body, retries),
            tick,
        )
    }

    /// `POST {base_url}/{service}/{method}`, built from the parsed base URL.
    fn call_url(&self, service: &str, method: &str) -> Result<reqwest::Url> {
        validate_path_part("service", service)?;
        validate_path_part("method", method)?;
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| QuillError::invalid("base_url cannot take a path"))?
            .pop_if_empty()
            .push(service)
            .push(method);
        Ok(url)
    }

    /// Everything `call` needs, captured now (later header changes do not affect it),
    /// its body and how often it may be retried.
    fn context(&self, call: Call, http: Transport) -> Result<(CallContext, Body, u32)> {
        let Call {
            service,
            method,
            body,
            options,
        } = call;
        options.validate()?;
        let url = self.call_url(&service, &method)?;
        let mut own_headers = HeaderStore::default();
        for (name, value) in &options.headers {
            own_headers.set(name, value, false)?;
        }
        let timeout_ms = options.timeout_ms.unwrap_or(self.config.timeout_ms);
        let deadline = (timeout_ms > 0)
            .then(|| Instant::now().checked_add(Duration::from_millis(timeout_ms)))
            .flatten();
        let kind = body.content_kind();
        let ctx = CallContext {
            http,
            url,
            headers: call_headers(
                kind,
                &self.prefer,
                self.config.enable_compression,
                &self.read_headers(),
                &own_headers,
            ),
            label: CallLabel {
                path: format!("{service}/{method}"),
                timeout_ms,
                // Set by the stream reader when it sends the call.
                streamed: false,
            },
            deadline,
            idle_timeout: self
                .config
                .idle_timeout_ms
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis),
            max_decoded_size: self.config.max_decoded_size,
            compression: self.config.enable_compression,
            slots: self.runtime.slots(),
            server: self.server.clone(),
            runtime: self.runtime.clone(),
            closed: self.runtime.closed()?,
            idempotent: options.idempotent,
            started: Instant::now(),
            reply_memory: None,
        };
        let retries = if options.idempotent {
            self.config.max_retries
        } else {
            0
        };
        Ok((ctx, body, retries))
    }

    /// The configured headers in insertion order, secret values as [`REDACTED`].
    pub fn headers(&self) -> Vec<(String, String)> {
        self.read_headers().list(false)
    }

    /// The configured headers with secret values shown. Keep out of logs.
    pub fn headers_unredacted(&self) -> Vec<(String, String)> {
        self.read_headers().list(true)
    }

    /// Closes the client: every call and stream in flight ends with
    /// [`QuillError::Cancelled`], the connections close, and later calls fail the same
    /// way. Idempotent, never blocks, and safe while other threads are inside calls.
    /// The worker threads end when the client is dropped.
    ///
    /// ```
    /// use quill::client::{Call, Reply};
    /// let client = quill::QuillClient::new("http://127.0.0.1:9", 1000, false).unwrap();
    /// client.close();
    /// assert!(client.is_closed());
    /// let err = client.run_blocking::<Reply>(Call::proto("s.v1.S", "M", "")).unwrap_err();
    /// assert!(matches!(err, quill::QuillError::Cancelled { .. }));
    /// ```
    pub fn close(&self) {
        self.runtime.close();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.runtime.is_closed()
    }

    /// The headers as set, with their secrecy, for rebuilding an equal client
    /// elsewhere; secret ones only when `include_secrets`.
    ///
    /// ```
    /// let c = quill::QuillClient::new("http://h", 0, false).unwrap();
    /// c.set_bearer_token("t").unwrap();
    /// c.set_header("X-Trace", "1").unwrap();
    /// assert_eq!(c.header_settings(false).len(), 1);
    /// assert!(c.header_settings(true)[0].secret);
    /// ```
    pub fn header_settings(&self, include_secrets: bool) -> Vec<HeaderSetting> {
        self.read_headers().settings(include_secrets)
    }
}

impl QuillClient {
    /// A client of `base_url` with a whole-call timeout (0 = none) and optional zstd
    /// compression; other settings default as in [`ClientConfig::new`].
    pub fn new(
        base_url: impl Into<String>,
        timeout_ms: u64,
        enable_compression: bool,
    ) -> Result<QuillClient> {
        let mut config = ClientConfig::new(base_url);
        config.timeout_ms = timeout_ms;
        config.enable_compression = enable_compression;
        QuillClient::with_config(config)
    }

    /// Sets `Authorization: Bearer <token>` (replacing any API key under
    /// `Authorization`).
    pub fn set_bearer_token(&self, token: &str) -> Result<()> {
        self.update_headers(|h| h.set_bearer_token(token))
    }

    /// Sets the API key under `header_name` (default [`DEFAULT_API_KEY_HEADER`]). It
    /// writes that header only: a key under another name stays (remove it with
    /// [`remove_header`](Self::remove_header)), and a key under `Authorization`
    /// replaces the bearer token.
    pub fn set_api_key(&self, key: &str, header_name: Option<&str>) -> Result<()> {
        self.update_headers(|h| h.set_api_key(key, header_name))
    }

    /// Sets a header sent on every call. Names must be HTTP tokens; values visible
    /// ASCII, space or tab (no CR/LF); headers the client manages itself
    /// (`Content-Type`, `Accept`, `Content-Encoding`, `Content-Length`, …) are refused.
    /// Errors name the header, never the value.
    pub fn set_header(&self, name: &str, value: &str) -> Result<()> {
        self.update_headers(|h| h.set(name, value, false))
    }

    /// [`set_header`](Self::set_header) for a value that must always be redacted.
    pub fn set_secret_header(&self, name: &str, value: &str) -> Result<()> {
        self.update_headers(|h| h.set(name, value, true))
    }

    /// Removes a configured header (any case); whether it was set.
    pub fn remove_header(&self, name: &str) -> bool {
        self.update_headers(|h| h.remove(name))
    }

    /// The base URL as it is sent (parsed and re-serialised, no trailing `/`).
    pub fn base_url(&self) -> String {
        self.config.base_url.clone()
    }

    pub fn timeout_ms(&self) -> u64 {
        self.config.timeout_ms
    }

    pub fn compression_enabled(&self) -> bool {
        self.config.enable_compression
    }

    /// The transport profile the server last named in a `Selected-Prism` response
    /// header (`"classic"` for HTTP/1.1, `"turbo"` for HTTP/2); `None` until a server
    /// names one (existing Quill servers never do).
    ///
    /// ```
    /// let client = quill::QuillClient::new("http://127.0.0.1:8080", 1000, false).unwrap();
    /// assert_eq!(client.selected_prism(), None); // no answer yet
    /// ```
    pub fn selected_prism(&self) -> Option<String> {
        self.server.selected_prism()
    }

    /// The configured HTTP version.
    pub fn http_version(&self) -> HttpVersion {
        self.config.http_version
    }

    /// A copy of the configuration (with the normalised base URL).
    pub fn config(&self) -> ClientConfig {
        self.config.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_urls_append_the_path_to_the_base() {
        let url = |base: &str| {
            let c = QuillClient::new(base, 0, false).unwrap();
            c.call_url("echo.v1.EchoService", "Echo")
                .unwrap()
                .to_string()
        };
        assert_eq!(url("http://h:1"), "http://h:1/echo.v1.EchoService/Echo");
        assert_eq!(url("http://h:1/"), "http://h:1/echo.v1.EchoService/Echo");
        assert_eq!(
            url("https://h/api//"),
            "https://h/api/echo.v1.EchoService/Echo"
        );
        let c = QuillClient::new("http://h", 0, false).unwrap();
        assert!(matches!(
            c.call_url("..", "Echo"),
            Err(QuillError::InvalidArgument { .. })
        ));
        assert!(matches!(
            c.call_url("svc", "a/b"),
            Err(QuillError::InvalidArgument { .. })
        ));
    }

    #[test]
    fn http3_needs_an_https_url() {
        let config = |url: &str| {
            let mut cfg = ClientConfig::new(url);
            cfg.http_version = config::HttpVersion::Http3;
            cfg
        };
        let err = QuillClient::with_config(config("http://127.0.0.1:1")).unwrap_err();
        assert!(matches!(err, QuillError::InvalidArgument { .. }), "{err:?}");
        assert!(err.to_string().contains("https://"), "{err}");
        // Nothing is dialled at construction.
        assert!(QuillClient::with_config(config("https://127.0.0.1:1")).is_ok());
    }
}
