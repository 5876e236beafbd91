//! Client configuration, base-URL normalisation and the header store.
//!
//! Header values are validated once, when they are set, so a bad value is reported to
//! the caller that set it rather than surfacing later as a failed request. Secret values
//! never leave the store except onto the wire: `headers()` and `Debug` redact them, and
//! validation errors never quote a value.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::error::{QuillError, Result};
use crate::protocol::{
    DEFAULT_MAX_DECODED_SIZE, MAX_TIMEOUT_MS, PRISM_CLASSIC, PRISM_HYPER, PRISM_TURBO,
};

/// What `headers()` shows instead of a secret value.
pub const REDACTED: &str = "<redacted>";

/// The header an API key goes to unless another name is given.
pub const DEFAULT_API_KEY_HEADER: &str = "X-API-Key";

/// Default whole-call timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// Default [`ClientConfig::max_connections`], as httpx and aiohttp limit theirs.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 100;

/// Settings of a [`QuillClient`](crate::client::QuillClient), fixed at construction.
///
/// ```
/// use quill::ClientConfig;
/// let mut cfg = ClientConfig::new("http://127.0.0.1:8080/");
/// cfg.timeout_ms = 500;
/// cfg.max_retries = 2;
/// let client = quill::QuillClient::with_config(cfg).unwrap();
/// assert_eq!(client.base_url(), "http://127.0.0.1:8080");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `http://` or `https://` URL the `{service}/{method}` path is appended to; a
    /// trailing `/` is stripped. Credentials in the URL are refused (use the auth setters).
    pub base_url: String,
    /// Deadline of a whole call, response body (and whole stream) included; 0 = none;
    /// at most [`MAX_TIMEOUT_MS`](crate::protocol::MAX_TIMEOUT_MS).
    pub timeout_ms: u64,
    /// Send `Accept-Encoding: zstd`, and zstd-compress request bodies of at least
    /// [`COMPRESSION_THRESHOLD`](crate::protocol::COMPRESSION_THRESHOLD) bytes once a
    /// response of this server has carried `Accept-Encoding: zstd` (so a server that
    /// cannot decode zstd, as existing Quill servers cannot, never receives it).
    pub enable_compression: bool,
    /// Cap on a buffered (unary, client-stream or tensor) response body after decoding,
    /// and on each message of a stream (a stream's total is not capped: decoding is
    /// incremental, so memory stays bounded by one frame).
    pub max_decoded_size: u64,
    /// Longest wait for the next message of a stream, counted from the response headers
    /// and then from each message (time the consumer spends holding a message does not
    /// count); `None` or 0 = only the call timeout; at most
    /// [`MAX_TIMEOUT_MS`](crate::protocol::MAX_TIMEOUT_MS).
    pub idle_timeout_ms: Option<u64>,
    /// Retries of calls marked idempotent (transport errors and 408/425/429/5xx); 0 = off.
    pub max_retries: u32,
    /// Extra trusted root certificate(s), PEM; the bundled webpki roots stay trusted.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// The TLS server name (SNI, and the name the certificate must carry) when it is
    /// not the URL's host: for a server reached by IP whose certificate names only a
    /// host (`https://10.0.0.7:8443` presenting a certificate for `localhost`). Calls
    /// then name this host (`Host`/`:authority`) and still dial the URL's address.
    /// HTTPS over TCP and HTTP/3 alike.
    pub tls_server_name: Option<String>,
    /// `User-Agent` to send instead of `quill/<version>`.
    pub user_agent: Option<String>,
    /// Most HTTP/1.1 calls in flight at once, each holding a connection until its
    /// answer is read (a stream until it ends); more wait for a free one, within their
    /// deadline. 0 = no limit. Not applied to [`HttpVersion::Http2`] and
    /// [`HttpVersion::Http3`], whose calls share one connection (the server's stream
    /// limit applies there).
    pub max_connections: u32,
    /// Which HTTP to speak; [`HttpVersion::Auto`] by default.
    pub http_version: HttpVersion,
    /// Tuning of HTTP/2 connections (used when HTTP/2 is spoken).
    pub http2: Http2Settings,
}

/// Which HTTP a client speaks: the protocol's transport profiles `classic` (HTTP/1.1),
/// `turbo` (HTTP/2) and `hyper` (HTTP/3).
///
/// ```
/// use quill::client::HttpVersion;
/// assert_eq!(HttpVersion::from_name("http2").unwrap(), HttpVersion::Http2);
/// assert_eq!(HttpVersion::default().name(), "auto");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HttpVersion {
    /// Over TLS, h2 or http/1.1 as ALPN decides; over cleartext, HTTP/1.1 (existing Quill
    /// servers reset cleartext HTTP/2 connections).
    #[default]
    Auto,
    /// HTTP/1.1 only, over a pool of keep-alive connections.
    Http1,
    /// HTTP/2 only: over TLS by ALPN `h2`, over cleartext by prior knowledge (h2c). Calls
    /// are multiplexed as streams of one connection (per calling lane).
    Http2,
    /// HTTP/3 over QUIC (UDP, TLS 1.3, ALPN `h3`); `https://` URLs only. Calls are
    /// streams of one QUIC connection per client.
    Http3,
}

impl HttpVersion {
    pub const ALL: [HttpVersion; 4] = [
        HttpVersion::Auto,
        HttpVersion::Http1,
        HttpVersion::Http2,
        HttpVersion::Http3,
    ];

    /// `"auto"`, `"http1"`, `"http2"` or `"http3"`.
    pub fn name(self) -> &'static str {
        match self {
            HttpVersion::Auto => "auto",
            HttpVersion::Http1 => "http1",
            HttpVersion::Http2 => "http2",
            HttpVersion::Http3 => "http3",
        }
    }

    /// The version of [`name`](Self::name) (ASCII case-insensitive).
    pub fn from_name(name: &str) -> Result<HttpVersion> {
        HttpVersion::ALL
            .into_iter()
            .find(|v| v.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                QuillError::invalid(format!(
                    "http_version must be \"auto\", \"http1\", \"http2\" or \"http3\", not {name:?}"
                ))
            })
    }

    /// The `Prefer` header value: only the profiles this client will speak to a server
    /// of this scheme.
    pub(crate) fn prefer(self, https: bool) -> String {
        let profiles: &[&str] = match (self, https) {
            (HttpVersion::Http3, _) => &[PRISM_HYPER],
            (HttpVersion::Http2, _) => &[PRISM_TURBO],
            (HttpVersion::Auto, true) => &[PRISM_TURBO, PRISM_CLASSIC],
            (HttpVersion::Auto, false) | (HttpVersion::Http1, _) => &[PRISM_CLASSIC],
        };
        format!("prism={}", profiles.join(", "))
    }
}

/// The HTTP/2 receive window of each stream when [`Http2Settings`] leaves it unset.
pub const DEFAULT_HTTP2_STREAM_WINDOW: u32 = 8 << 20;
/// The HTTP/2 receive window of a connection when [`Http2Settings`] leaves it unset.
pub const DEFAULT_HTTP2_CONNECTION_WINDOW: u32 = 16 << 20;

/// HTTP/2 connection tuning. The defaults suit many concurrent token streams and large
/// tensors: keep-alive pings find a dead connection within 50 s, and the receive windows
/// (8 MiB per stream, 16 MiB per connection, the bundled server's own, where hyper's are
/// 2 / 5 MiB) let a stream run ahead of its reader.
///
/// The connection window also sizes the HTTP/2 library's guard against floods of small
/// DATA frames: once the small frames buffered for readers that have not caught up cost
/// more than half the connection window, it closes the connection (`ENHANCE_YOUR_CALM`).
/// Many streams of small messages need a window that is not too small for that — which
/// is why adaptive windows, which start at 64 KiB, are not the default.
///
/// HTTP/3 uses the two keep-alive settings too: QUIC PINGs at the same interval, and a
/// connection silent for interval + timeout (the QUIC idle timeout) is dead.
///
/// ```
/// let mut h2 = quill::client::Http2Settings::default();
/// h2.keep_alive_interval_ms = Some(10_000);
/// h2.initial_connection_window = Some(16 << 20); // 1,000 streams of small messages
/// assert_eq!(h2.keep_alive_timeout_ms, 20_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http2Settings {
    /// Interval of PING frames while calls are open; `None` or 0 = no pings.
    pub keep_alive_interval_ms: Option<u64>,
    /// How long a PING may go unanswered before the connection (and every call on it)
    /// fails with a connection error.
    pub keep_alive_timeout_ms: u64,
    /// Receive window of each stream in bytes; `None` = [`DEFAULT_HTTP2_STREAM_WINDOW`].
    pub initial_stream_window: Option<u32>,
    /// Receive window of the whole connection in bytes; `None` =
    /// [`DEFAULT_HTTP2_CONNECTION_WINDOW`].
    pub initial_connection_window: Option<u32>,
    /// Size the windows from the measured bandwidth-delay product instead, starting at
    /// 64 KiB (the two windows above are then not used).
    pub adaptive_window: bool,
}

/// The largest HTTP/2 flow-control window (RFC 9113 §6.9.1).
pub const MAX_HTTP2_WINDOW: u32 = (1 << 31) - 1;

impl Default for Http2Settings {
    fn default() -> Self {
        Http2Settings {
            keep_alive_interval_ms: Some(30_000),
            keep_alive_timeout_ms: 20_000,
            initial_stream_window: None,
            initial_connection_window: None,
            adaptive_window: false,
        }
    }
}

impl Http2Settings {
    fn validate(&self) -> Result<()> {
        let timeouts = [
            ("http2 keep_alive_interval_ms", self.keep_alive_interval_ms),
            (
                "http2 keep_alive_timeout_ms",
                Some(self.keep_alive_timeout_ms),
            ),
        ];
        for (name, value) in timeouts {
            if let Some(v) = value.filter(|&v| v > MAX_TIMEOUT_MS) {
                return Err(QuillError::invalid(format!(
                    "{name} is {v}; at most {MAX_TIMEOUT_MS} (30 days) is accepted"
                )));
            }
        }
        let windows = [
            ("http2 initial_stream_window", self.initial_stream_window),
            (
                "http2 initial_connection_window",
                self.initial_connection_window,
            ),
        ];
        for (name, value) in windows {
            if let Some(v) = value.filter(|&v| v == 0 || v > MAX_HTTP2_WINDOW) {
                return Err(QuillError::invalid(format!(
                    "{name} is {v}; it must be 1..={MAX_HTTP2_WINDOW} bytes"
                )));
            }
        }
        Ok(())
    }
}

impl ClientConfig {
    /// The defaults for `base_url`: 30 s timeout, no compression, 64 MiB decode cap,
    /// no idle timeout, no retries, no extra roots, the default user agent.
    pub fn new(base_url: impl Into<String>) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            timeout_ms: DEFAULT_TIMEOUT_MS,
            enable_compression: false,
            max_decoded_size: DEFAULT_MAX_DECODED_SIZE,
            idle_timeout_ms: None,
            max_retries: 0,
            ca_cert_pem: None,
            tls_server_name: None,
            user_agent: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            http_version: HttpVersion::Auto,
            http2: Http2Settings::default(),
        }
    }

    /// Checks the numeric settings; the base URL is checked where it is normalised.
    pub(crate) fn validate(&self) -> Result<()> {
        let timeouts = [
            ("timeout_ms", Some(self.timeout_ms)),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ];
        for (name, value) in timeouts {
            if let Some(v) = value.filter(|&v| v > MAX_TIMEOUT_MS) {
                return Err(QuillError::invalid(format!(
                    "{name} is {v}; at most {MAX_TIMEOUT_MS} (30 days) is accepted, 0 means none"
                )));
            }
        }
        self.http2.validate()
    }
}

/// One configured header as it was set; `QuillClient::header_settings` lists them so a
/// face can rebuild an equal client elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSetting {
    pub name: String,
    pub value: String,
    /// Redacted everywhere (set as a secret, or a credential by its name).
    pub secret: bool,
}

/// The `User-Agent` sent when the config sets none.
pub(crate) fn default_user_agent() -> String {
    format!("quill/{}", env!("CARGO_PKG_VERSION"))
}

/// Validates `raw` as an http(s) URL and returns it as it goes on the wire (the parsed
/// URL's serialization), without trailing `/`.
pub(crate) fn normalize_base_url(raw: &str) -> Result<String> {
    let trimmed = raw.trim();
    let url = reqwest::Url::parse(trimmed).map_err(|e| {
        QuillError::invalid(format!("base_url {trimmed:?} is not a valid URL: {e}"))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(QuillError::invalid(format!(
            "base_url must use http or https, not {:?}",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(QuillError::invalid("base_url has no host"));
    }
    // Shown in Debug and in error messages, so it must not carry secrets.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(QuillError::invalid(
            "base_url must not contain credentials; use set_bearer_token, set_api_key or set_header",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(QuillError::invalid(
            "base_url must not have a query or fragment: the call path is appended to it",
        ));
    }
    // URL parsing resolves `.` and `..` segments, percent-encoded ones (`%2e%2e`)
    // included, so such a prefix would silently vanish from every request.
    if raw_path_segments(trimmed) != url.path().split('/').count() - 1 {
        return Err(QuillError::invalid(format!(
            "base_url {trimmed:?} has '.' or '..' path segments (perhaps percent-encoded), \
             which URL parsing removes; write the path the server should see"
        )));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// The number of path segments of `raw` as written (before any resolution); a URL
/// without a path counts as `/`, as the parser makes it.
fn raw_path_segments(raw: &str) -> usize {
    let after_scheme = raw.split_once("://").map_or(raw, |(_, rest)| rest);
    // WHATWG parsing treats `\` as `/` in http(s) URLs; the query and fragment are
    // refused before this runs.
    match after_scheme.find(['/', '\\']) {
        None => 1,
        Some(start) => after_scheme[start..].split(['/', '\\']).count() - 1,
    }
}

/// Checks one path part (`service` or `method`): the path is built by concatenation and
/// must not be re-encoded, so only characters that never need percent-encoding pass.
pub(crate) fn validate_path_part(what: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(QuillError::invalid(format!("{what} name is empty")));
    }
    // A URL would resolve these as relative segments and call another path.
    if value == "." || value == ".." {
        return Err(QuillError::invalid(format!(
            "{what} name {value:?} is not a name but a relative path segment"
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(QuillError::invalid(format!(
            "{what} name {value:?} contains {c:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
        )));
    }
    Ok(())
}

/// Headers the client sets itself per call or that control HTTP framing; letting users
/// override them would desynchronise the body from its description.
const RESERVED: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "accept",
    "accept-encoding",
    "prefer",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Parts of header names that mark a credential: `key` covers API, subscription,
/// function and access keys (`X-API-Key`, `Ocp-Apim-Subscription-Key`,
/// `x-functions-key`, `X-Access-Key`, `X-Key`), `auth` covers `Authorization` and
/// `Proxy-Authorization`, `cookie` covers `Cookie`.
pub(crate) const SECRET_NAME_PARTS: &[&str] = &[
    "auth",
    "token",
    "secret",
    "password",
    "passwd",
    "key",
    "session",
    "credential",
    "cookie",
    "signature",
];

/// Whether a header name looks like it carries a credential: it contains one of
/// [`SECRET_NAME_PARTS`], in any case. Errs on the side of redacting (`X-Monkey` is
/// redacted too): a redacted harmless value costs nothing, a shown secret leaks.
pub(crate) fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_NAME_PARTS
        .iter()
        .any(|needle| lower.contains(needle))
}

#[derive(Debug, Clone)]
struct Entry {
    /// The name as the user spelled it, for `headers()`.
    display: String,
    name: HeaderName,
    value: HeaderValue,
    secret: bool,
}

/// Configured headers in insertion order; names compare case-insensitively and setting
/// an existing name replaces its value in place. Every setter writes exactly one header
/// and never touches another: an API key set under a second header name joins the
/// first (a gateway key and a service key), and `remove` is how a key moves.
#[derive(Clone, Default)]
pub(crate) struct HeaderStore {
    entries: Vec<Entry>,
}

impl HeaderStore {
    fn parse_name(name: &str) -> Result<HeaderName> {
        let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            QuillError::invalid(format!("invalid header name {name:?}: not an HTTP token"))
        })?;
        if RESERVED.contains(&parsed.as_str()) {
            return Err(QuillError::invalid(format!(
                "header {name} is set by the client itself and cannot be configured"
            )));
        }
        Ok(parsed)
    }

    /// Visible ASCII, space and tab only; in particular no CR/LF (header injection).
    fn parse_value(name: &str, value: &str) -> Result<HeaderValue> {
        if let Some(b) = value
            .bytes()
            .find(|&b| !(b == b'\t' || (0x20..0x7f).contains(&b)))
        {
            let what = match b {
                b'\r' | b'\n' => "a CR or LF",
                0x80.. => "a non-ASCII character",
                _ => "a control character",
            };
            // The value itself is never quoted: it may be a secret.
            return Err(QuillError::invalid(format!(
                "invalid value for header {name}: it contains {what}"
            )));
        }
        HeaderValue::from_str(value)
            .map_err(|_| QuillError::invalid(format!("invalid value for header {name}")))
    }

    /// Sets `name` to `value`; `secret` forces redaction even for innocuous names.
    pub fn set(&mut self, name: &str, value: &str, secret: bool) -> Result<()> {
        let parsed = Self::parse_name(name)?;
        let mut value = Self::parse_value(name, value)?;
        let secret = secret || is_secret_name(parsed.as_str());
        value.set_sensitive(secret);
        let entry = Entry {
            display: name.to_owned(),
            name: parsed,
            value,
            secret,
        };
        match self.entries.iter_mut().find(|e| e.name == entry.name) {
            Some(existing) => {
                // A header once marked secret stays secret when overwritten.
                let secret = existing.secret || entry.secret;
                *existing = Entry { secret, ..entry };
                existing.value.set_sensitive(secret);
            }
            None => self.entries.push(entry),
        }
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> bool {
        let Ok(parsed) = HeaderName::from_bytes(name.as_bytes()) else {
            return false;
        };
        let before = self.entries.len();
        self.entries.retain(|e| e.name != parsed);
        self.entries.len() != before
    }

    pub fn set_bearer_token(&mut self, token: &str) -> Result<()> {
        if token.trim().is_empty() {
            return Err(QuillError::invalid("bearer token is empty"));
        }
        if let Err(QuillError::InvalidArgument { reason }) =
            Self::parse_value("Authorization", token)
        {
            return Err(QuillError::invalid(
                reason.replace("header Authorization", "the bearer token"),
            ));
        }
        self.set("Authorization", &format!("Bearer {token}"), true)
    }

    pub fn set_api_key(&mut self, key: &str, header_name: Option<&str>) -> Result<()> {
        if key.trim().is_empty() {
            return Err(QuillError::invalid("API key is empty"));
        }
        self.set(header_name.unwrap_or(DEFAULT_API_KEY_HEADER), key, true)
    }

    /// `(name, value)` pairs in insertion order, secrets as [`REDACTED`] unless `reveal`.
    pub fn list(&self, reveal: bool) -> Vec<(String, String)> {
        self.entries
            .iter()
            .map(|e| {
                let value = if e.secret && !reveal {
                    REDACTED.to_owned()
                } else {
                    // Validated as visible ASCII when set.
                    e.value.to_str().unwrap_or_default().to_owned()
                };
                (e.display.clone(), value)
            })
            .collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.display.clone()).collect()
    }

    /// Every header as set, with whether it is secret; secret ones only when
    /// `include_secrets`. What rebuilding an equal store needs.
    pub fn settings(&self, include_secrets: bool) -> Vec<HeaderSetting> {
        self.entries
            .iter()
            .filter(|e| include_secrets || !e.secret)
            .map(|e| HeaderSetting {
                name: e.display.clone(),
                value: e.value.to_str().unwrap_or_default().to_owned(),
                secret: e.secret,
            })
            .collect()
    }

    /// Adds the configured headers to a request's headers, replacing defaults.
    pub fn apply(&self, map: &mut HeaderMap) {
        for e in &self.entries {
            map.insert(e.name.clone(), e.value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_lists_only_the_profiles_spoken() {
        let cases = [
            (HttpVersion::Auto, false, "prism=classic"),
            (HttpVersion::Auto, true, "prism=turbo, classic"),
            (HttpVersion::Http1, true, "prism=classic"),
            (HttpVersion::Http2, false, "prism=turbo"),
            (HttpVersion::Http2, true, "prism=turbo"),
            (HttpVersion::Http3, true, "prism=hyper"),
        ];
        for (version, https, prefer) in cases {
            assert_eq!(version.prefer(https), prefer, "{version:?} https={https}");
        }
        assert_eq!(HttpVersion::from_name("HTTP2").unwrap(), HttpVersion::Http2);
        assert_eq!(HttpVersion::from_name("http3").unwrap(), HttpVersion::Http3);
        let err = HttpVersion::from_name("h3").unwrap_err().to_string();
        assert!(
            err.contains("\"auto\", \"http1\", \"http2\" or \"http3\""),
            "{err}"
        );
    }

    #[test]
    fn http2_settings_are_bounded() {
        let mut cfg = ClientConfig::new("http://h:1");
        assert!(cfg.validate().is_ok());
        cfg.http2.initial_stream_window = Some(0);
        assert!(matches!(
            cfg.validate(),
            Err(QuillError::InvalidArgument { .. })
        ));
        cfg.http2.initial_stream_window = Some(MAX_HTTP2_WINDOW);
        assert!(cfg.validate().is_ok());
        cfg.http2.initial_connection_window = Some(MAX_HTTP2_WINDOW + 1);
        assert!(matches!(
            cfg.validate(),
            Err(QuillError::InvalidArgument { .. })
        ));
        cfg.http2.initial_connection_window = None;
        cfg.http2.keep_alive_timeout_ms = MAX_TIMEOUT_MS + 1;
        assert!(matches!(
            cfg.validate(),
            Err(QuillError::InvalidArgument { .. })
        ));
    }

    #[test]
    fn base_url_normalisation() {
        assert_eq!(normalize_base_url("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(
            normalize_base_url(" https://h/api// ").unwrap(),
            "https://h/api"
        );
        for bad in [
            "ftp://h",
            "h:80",
            "not a url",
            "http://u:p@h",
            "http://h/?q=1",
            "http://h/#f",
            "file:///x",
        ] {
            assert!(
                matches!(
                    normalize_base_url(bad),
                    Err(QuillError::InvalidArgument { .. })
                ),
                "{bad}"
            );
        }
        let e = normalize_base_url("http://user:hunter2@h").unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
        // What is shown is what goes on the wire.
        assert_eq!(
            normalize_base_url("HTTP://H:80/a b/").unwrap(),
            "http://h/a%20b"
        );
        assert_eq!(normalize_base_url("http://h/a//").unwrap(), "http://h/a");
        assert_eq!(normalize_base_url("http://h/...").unwrap(), "http://h/...");
        for dots in [
            "http://h/%2e%2e/",
            "http://h/api/%2E/",
            "http://h/a/../b",
            "http://h/./a",
            "http://h/a/%2e%2E",
            "http://h/a\\..\\b",
        ] {
            let e = normalize_base_url(dots).unwrap_err();
            assert!(e.to_string().contains("'..'"), "{dots}: {e}");
        }
    }

    #[test]
    fn timeouts_are_bounded() {
        let mut cfg = ClientConfig::new("http://h");
        cfg.timeout_ms = MAX_TIMEOUT_MS;
        cfg.idle_timeout_ms = Some(0);
        cfg.validate().unwrap();
        cfg.timeout_ms = MAX_TIMEOUT_MS + 1;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("timeout_ms"));
        cfg.timeout_ms = 0;
        cfg.idle_timeout_ms = Some(u64::MAX);
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("idle_timeout_ms"));
    }

    #[test]
    fn path_parts() {
        validate_path_part("service", "echo.v1.EchoService").unwrap();
        validate_path_part("method", "Echo_2-x").unwrap();
        validate_path_part("method", "...").unwrap();
        for bad in ["", ".", "..", "a/b", "a b", "a?b", "ä", "a%2f"] {
            assert!(
                matches!(
                    validate_path_part("method", bad),
                    Err(QuillError::InvalidArgument { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn header_validation_never_echoes_values() {
        let mut h = HeaderStore::default();
        for bad in ["v\r\nX-Evil: 1", "v\n", "v\0", "v\x7f", "vé"] {
            let e = h.set("X-Custom", bad, false).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, QuillError::InvalidArgument { .. }));
            assert!(msg.contains("X-Custom"), "{msg}");
            assert!(!msg.contains(bad), "{msg}");
        }
        assert!(h.set("Bad Name", "v", false).is_err());
        assert!(h.set("X-Evil\r\n", "v", false).is_err());
        assert!(h.set("", "v", false).is_err());
        assert!(h.set("Content-Length", "3", false).is_err());
        assert!(h.set("transfer-encoding", "chunked", false).is_err());
        let e = h.set_bearer_token("abc\r\ndef").unwrap_err().to_string();
        assert!(!e.contains("abc") && e.contains("bearer token"), "{e}");
        assert!(h.set_bearer_token("").is_err());
        assert!(h.set_api_key(" ", None).is_err());
        h.set("X-Tab", "a\tb", false).unwrap();
        h.set("X-Empty", "", false).unwrap();
    }

    #[test]
    fn credential_names_are_secret_whatever_their_case() {
        for name in [
            "Authorization",
            "Proxy-Authorization",
            "Cookie",
            "X-API-Key",
            "x-api_key",
            "Apikey",
            "Ocp-Apim-Subscription-Key",
            "x-functions-key",
            "X-Access-Key",
            "X-Key",
            "X-Amz-Security-Token",
            "X-Client-Secret",
            "X-Session-Id",
            "X-Hub-Signature-256",
            "X-Db-Password",
            "X-Credentials",
        ] {
            assert!(is_secret_name(name), "{name}");
            let mut h = HeaderStore::default();
            h.set(name, "s3cret-value", false).unwrap();
            assert_eq!(h.list(false)[0].1, REDACTED, "{name}");
            assert!(h.settings(false).is_empty(), "{name}");
            assert!(h.settings(true)[0].secret, "{name}");
        }
        for name in [
            "X-Request-ID",
            "X-Trace",
            "User-Agent",
            "Accept-Language",
            "X-Priority",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn order_replacement_and_redaction() {
        let mut h = HeaderStore::default();
        h.set("X-Trace", "1", false).unwrap();
        h.set_bearer_token("tok").unwrap();
        h.set("x-trace", "2", false).unwrap();
        h.set_api_key("k1", None).unwrap();
        h.set("X-Session-Id", "s", false).unwrap();
        h.set("X-Plain", "p", true).unwrap();
        assert_eq!(
            h.list(false),
            vec![
                ("x-trace".to_owned(), "2".to_owned()),
                ("Authorization".to_owned(), REDACTED.to_owned()),
                ("X-API-Key".to_owned(), REDACTED.to_owned()),
                ("X-Session-Id".to_owned(), REDACTED.to_owned()),
                ("X-Plain".to_owned(), REDACTED.to_owned()),
            ]
        );
        assert_eq!(h.list(true)[1].1, "Bearer tok");
        // Overwriting a secret header with an innocuous flag keeps it secret.
        h.set("X-Plain", "q", false).unwrap();
        assert_eq!(h.list(false)[4].1, REDACTED);
        // A key under another header joins the first; neither is dropped.
        h.set_api_key("k2", Some("X-Other-Key")).unwrap();
        let all = h.list(true);
        assert!(all.contains(&("X-API-Key".to_owned(), "k1".to_owned())));
        assert!(all.contains(&("X-Other-Key".to_owned(), "k2".to_owned())));
        // A key under Authorization is that header: it replaces the bearer token.
        h.set_api_key("raw-key", Some("Authorization")).unwrap();
        let all = h.list(true);
        assert!(all.contains(&("Authorization".to_owned(), "raw-key".to_owned())));
        assert!(!all.iter().any(|(_, v)| v.starts_with("Bearer")));
        // Moving a key is an explicit remove.
        assert!(h.remove("x-api-key"));
        assert!(!h.names().contains(&"X-API-Key".to_owned()));
        assert!(h.remove("AUTHORIZATION"));
        assert!(!h.remove("authorization"));
        assert!(!h.remove("bad name"));
        let mut map = HeaderMap::new();
        h.apply(&mut map);
        assert_eq!(map.get("x-trace").unwrap(), "2");
        assert!(map.get("x-plain").unwrap().is_sensitive());
    }
}
