//! The ways a call reaches the server, behind one request and one response type:
//! reqwest over TCP (HTTP/1.1 and HTTP/2), QUIC (HTTP/3, `quic.rs`), and `auto` over TLS,
//! which starts on TCP and moves to HTTP/3 once the server advertises it (`Alt-Svc`,
//! `alt_svc.rs`). Everything above this module (deadlines, Problem Details, bodies,
//! streams, tensors) is written once against [`Response`].
//!
//! `auto` never loses a call in the move: an HTTP/3 connection is made before the
//! request is handed over, within a short budget, and when that fails (UDP blocked, no
//! handshake) the same call goes out over TCP and HTTP/3 is not tried again for
//! [`BROKEN_FOR`], as browsers do.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;
use tokio::time::Instant;

use super::errors::{map_body_error, map_send_error, BodyKind, CallLabel};
use super::events::{self, EventKind, Level};
use super::quic::{QuicPool, QuicResponse};
use crate::error::Result;
use crate::protocol::PRISM_HYPER;

/// Longest wait for an advertised HTTP/3 connection before the call goes over TCP; a
/// call with less than twice this left waits half of what it has.
pub(crate) const FALLBACK_BUDGET: Duration = Duration::from_secs(1);
/// How long HTTP/3 is left alone after it could not be reached.
pub(crate) const BROKEN_FOR: Duration = Duration::from_secs(300);

/// How a client sends its calls; cheap to clone (every kind is a shared handle).
#[derive(Clone)]
pub(crate) enum Transport {
    /// A reqwest pool: HTTP/1.1 keep-alive connections or HTTP/2 (ALPN or h2c).
    Tcp(reqwest::Client),
    /// One QUIC connection at a time, made on first use.
    Quic(Arc<QuicPool>),
    /// `auto` over TLS: TCP until the server advertises HTTP/3.
    Auto(Arc<AutoTransport>),
}

/// TCP and, once advertised and reachable, HTTP/3.
pub(crate) struct AutoTransport {
    pub tcp: reqwest::Client,
    pub quic: QuicPool,
    /// Until when HTTP/3 is not tried (it could not be reached).
    broken_until: Mutex<Option<Instant>>,
}

impl AutoTransport {
    pub fn new(tcp: reqwest::Client, quic: QuicPool) -> AutoTransport {
        AutoTransport {
            tcp,
            quic,
            broken_until: Mutex::new(None),
        }
    }

    /// Whether the next call tries HTTP/3.
    pub fn wants_quic(&self) -> bool {
        if self.quic.alt_svc.h3_port().is_none() {
            return false;
        }
        let broken = self.broken_until.lock().unwrap_or_else(|p| p.into_inner());
        broken.is_none_or(|until| Instant::now() >= until)
    }

    async fn post(
        &self,
        url: &reqwest::Url,
        mut headers: HeaderMap,
        body: reqwest::Body,
        label: &CallLabel,
        deadline: Option<Instant>,
        idempotent: bool,
    ) -> Result<Response> {
        if self.wants_quic() {
            let budget = deadline.map_or(FALLBACK_BUDGET, |d| {
                FALLBACK_BUDGET.min(d.saturating_duration_since(Instant::now()) / 2)
            });
            // The whole handshake, 0-RTT or not, within the budget: a call handed to
            // HTTP/3 before it is known to work could be lost with it.
            let connected = async {
                let conn = self.quic.connection(label).await?;
                conn.handshake(label).await?;
                Ok::<_, crate::QuillError>(conn)
            };
            match tokio::time::timeout(budget, connected).await {
                Ok(Ok(conn)) => {
                    // Only the profile spoken on this connection (protocol.md §1).
                    let hyper = format!("prism={PRISM_HYPER}");
                    headers.insert("prefer", HeaderValue::from_str(&hyper).expect("token"));
                    return self
                        .quic
                        .post_on(conn, url, headers, body, label, idempotent)
                        .await
                        .map(Response::Quic);
                }
                Ok(Err(err)) => self.mark_broken(label, &err.to_string()),
                Err(_) => self.mark_broken(label, &format!("no handshake within {budget:?}")),
            }
        }
        tcp_post(&self.tcp, url, headers, body, label)
            .await
            .map(Response::Tcp)
    }

    fn mark_broken(&self, label: &CallLabel, why: &str) {
        *self.broken_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + BROKEN_FOR);
        events::emit(Level::Info, EventKind::CallFailed, |e| {
            e.target = label.path.clone();
            e.message = format!(
                "{}: HTTP/3 advertised but unreachable ({why}); sent over TCP, HTTP/3 not \
                 tried again for {} s",
                label.path,
                BROKEN_FOR.as_secs()
            );
        });
    }
}

async fn tcp_post(
    http: &reqwest::Client,
    url: &reqwest::Url,
    headers: HeaderMap,
    body: reqwest::Body,
    label: &CallLabel,
) -> Result<reqwest::Response> {
    http.post(url.clone())
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| map_send_error(e, label))
}

impl Transport {
    /// POSTs `body` to `url` with exactly `headers` (plus the client's `User-Agent`)
    /// and returns the response once its headers are in. `deadline` bounds the wait
    /// for an advertised HTTP/3 connection before `auto` uses TCP instead; only an
    /// `idempotent` call may go out as HTTP/3 0-RTT early data.
    pub async fn post(
        &self,
        url: &reqwest::Url,
        headers: HeaderMap,
        body: reqwest::Body,
        label: &CallLabel,
        deadline: Option<Instant>,
        idempotent: bool,
    ) -> Result<Response> {
        match self {
            Transport::Tcp(http) => tcp_post(http, url, headers, body, label)
                .await
                .map(Response::Tcp),
            // Boxed: the QUIC futures (connect, handshake, stream open) are several KiB,
            // and every call in flight would otherwise carry that size over TCP too
            // (10,000 concurrent HTTP/1.1 calls grew by 2.5× the memory).
            Transport::Quic(pool) => Box::pin(pool.post(url, headers, body, label, idempotent))
                .await
                .map(Response::Quic),
            Transport::Auto(auto) => {
                Box::pin(auto.post(url, headers, body, label, deadline, idempotent)).await
            }
        }
    }

    /// Whether calls must run on the client's workers, where the QUIC endpoint is
    /// driven, rather than on a blocking caller's lane.
    pub fn needs_workers(&self) -> bool {
        match self {
            Transport::Tcp(_) => false,
            Transport::Quic(_) => true,
            Transport::Auto(auto) => auto.wants_quic(),
        }
    }

    /// The QUIC pool, when this transport has one.
    pub fn quic(&self) -> Option<&QuicPool> {
        match self {
            Transport::Tcp(_) => None,
            Transport::Quic(pool) => Some(pool),
            Transport::Auto(auto) => Some(&auto.quic),
        }
    }
}

/// A response whose headers arrived; its body is read with [`chunk`](Self::chunk).
pub(crate) enum Response {
    Tcp(reqwest::Response),
    Quic(QuicResponse),
}

impl Response {
    pub fn status(&self) -> StatusCode {
        match self {
            Response::Tcp(r) => r.status(),
            Response::Quic(r) => r.head.status,
        }
    }

    pub fn headers(&self) -> &HeaderMap {
        match self {
            Response::Tcp(r) => r.headers(),
            Response::Quic(r) => &r.head.headers,
        }
    }

    /// The body's length when the server declared it.
    pub fn content_length(&self) -> Option<u64> {
        match self {
            Response::Tcp(r) => r.content_length(),
            Response::Quic(r) => r
                .head
                .headers
                .get(reqwest::header::CONTENT_LENGTH)?
                .to_str()
                .ok()?
                .parse()
                .ok(),
        }
    }

    /// The local address of the TCP connection it came on (for connection events).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Response::Tcp(r) => r
                .extensions()
                .get::<hyper_util::client::legacy::connect::HttpInfo>()
                .map(|info| info.local_addr()),
            Response::Quic(_) => None,
        }
    }

    /// The next piece of the body, `None` at its end; a broken body is reported as
    /// `kind` says (a dropped connection is never a normal stream end).
    pub async fn chunk(&mut self, label: &CallLabel, kind: BodyKind) -> Result<Option<Bytes>> {
        match self {
            Response::Tcp(r) => r.chunk().await.map_err(|e| map_body_error(e, label, kind)),
            Response::Quic(r) => r.chunk(label, kind).await,
        }
    }
}
