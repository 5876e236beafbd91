//! The two ways a call reaches the server behind one request and one response type:
//! reqwest over TCP (HTTP/1.1 and HTTP/2) and QUIC (HTTP/3, `quic.rs`). Everything above
//! this module (deadlines, Problem Details, bodies, streams, tensors) is written once
//! against [`Response`].

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use super::errors::{map_body_error, map_send_error, BodyKind, CallLabel};
use super::quic::{QuicPool, QuicResponse};
use crate::error::Result;

/// How a client sends its calls; cheap to clone (both kinds are shared handles).
#[derive(Clone)]
pub(crate) enum Transport {
    /// A reqwest pool: HTTP/1.1 keep-alive connections or HTTP/2 (ALPN or h2c).
    Tcp(reqwest::Client),
    /// One QUIC connection at a time, made on first use.
    Quic(Arc<QuicPool>),
}

impl Transport {
    /// POSTs `body` to `url` with exactly `headers` (plus the client's `User-Agent`)
    /// and returns the response once its headers are in.
    pub async fn post(
        &self,
        url: &reqwest::Url,
        headers: HeaderMap,
        body: reqwest::Body,
        label: &CallLabel,
    ) -> Result<Response> {
        match self {
            Transport::Tcp(http) => http
                .post(url.clone())
                .headers(headers)
                .body(body)
                .send()
                .await
                .map(Response::Tcp)
                .map_err(|e| map_send_error(e, label)),
            // Boxed: the QUIC future (connect, handshake, stream open) is several KiB,
            // and every call in flight would otherwise carry that size over TCP too
            // (10,000 concurrent HTTP/1.1 calls grew by 2.5× the memory).
            Transport::Quic(pool) => Box::pin(pool.post(url, headers, body, label))
                .await
                .map(Response::Quic),
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
