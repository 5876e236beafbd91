//! What every call shares: the prepared request (URL, headers, deadline), sending it,
//! turning a non-2xx answer into Problem Details, and reading a bounded body.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER,
};
use tokio::time::Instant;

use super::compression::{decoder_for, Collector, ZSTD};
use super::errors::{map_body_error, map_send_error, BodyKind, CallLabel};
use crate::codec::zstd::{BodyDecoder, Coding};
use crate::error::{QuillError, Result};
use crate::problem::Problem;
use crate::protocol::{CONTENT_TYPE_JSON, CONTENT_TYPE_PROTO, MAX_ERROR_BODY, PREFER_HEADER_VALUE};

/// The content type of a call's request (and, by `Accept`, of its response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentKind {
    Proto,
    Json,
}

impl ContentKind {
    fn mime(self) -> &'static str {
        match self {
            ContentKind::Proto => CONTENT_TYPE_PROTO,
            ContentKind::Json => CONTENT_TYPE_JSON,
        }
    }
}

/// Everything needed to send one call, detached from the client so it can move onto
/// the client's runtime.
#[derive(Clone)]
pub(crate) struct CallContext {
    pub http: reqwest::Client,
    pub url: reqwest::Url,
    pub headers: HeaderMap,
    pub label: CallLabel,
    /// Absolute end of the whole call; `None` without a timeout.
    pub deadline: Option<Instant>,
    pub idle_timeout: Option<Duration>,
    pub max_decoded_size: u64,
    pub compression: bool,
    /// The client's runtime: a stream's reader task keeps it alive.
    pub runtime: std::sync::Arc<super::runtime::ClientRuntime>,
}

/// The per-call headers: content negotiation, the transport profile, then the user's
/// headers (which may replace `User-Agent` but not the reserved ones).
pub(crate) fn call_headers(
    kind: ContentKind,
    compression: bool,
    user: &super::config::HeaderStore,
) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(CONTENT_TYPE, HeaderValue::from_static(kind.mime()));
    map.insert(ACCEPT, HeaderValue::from_static(kind.mime()));
    map.insert("prefer", HeaderValue::from_static(PREFER_HEADER_VALUE));
    if compression {
        map.insert(ACCEPT_ENCODING, HeaderValue::from_static(ZSTD));
    }
    user.apply(&mut map);
    map
}

impl CallContext {
    /// Runs `fut` under the call's deadline: the whole call, body included.
    pub async fn within_deadline<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match self.deadline {
            Some(d) => tokio::time::timeout_at(d, fut)
                .await
                .unwrap_or_else(|_| Err(self.label.timeout())),
            None => fut.await,
        }
    }

    /// A POST of `body` with the call's headers; `zstd` marks a compressed body.
    pub fn request(&self, body: reqwest::Body, zstd: bool) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(self.url.clone())
            .headers(self.headers.clone())
            .body(body);
        if zstd {
            req = req.header(CONTENT_ENCODING, ZSTD);
        }
        // No reqwest timeout: `within_deadline` (or the stream task) bounds the whole
        // call, and dropping the request future at the deadline closes the connection.
        req
    }

    /// Sends and returns a 2xx response; anything else becomes `Status` with the
    /// server's Problem Details.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req
            .send()
            .await
            .map_err(|e| map_send_error(e, &self.label))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(self.status_error(resp).await)
        }
    }

    async fn status_error(&self, mut resp: reqwest::Response) -> QuillError {
        let status = resp.status().as_u16();
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(CONTENT_TYPE);
        let retry_after = header(RETRY_AFTER);
        // The error body only informs the message: read a bounded prefix, decoded when
        // possible, and keep whatever arrived if reading fails part way.
        let mut decoder = decoder_for(resp.headers(), None)
            .or_else(|_| BodyDecoder::new(Coding::Identity, None))
            .expect("an identity decoder always builds");
        let mut body = Vec::new();
        let read = async {
            'read: while body.len() < MAX_ERROR_BODY {
                let Ok(Some(chunk)) = resp.chunk().await else {
                    break;
                };
                decoder.push(chunk);
                loop {
                    match decoder.next_output() {
                        Ok(Some(piece)) => {
                            let room = MAX_ERROR_BODY - body.len();
                            body.extend_from_slice(&piece[..piece.len().min(room)]);
                            if body.len() >= MAX_ERROR_BODY {
                                break 'read;
                            }
                        }
                        Ok(None) => break,
                        Err(_) => break 'read,
                    }
                }
            }
        };
        // The status is known: a body still dripping at the deadline ends the read,
        // and the call reports the status with what arrived (this timer is polled
        // before the call's own deadline, which fires at the same instant).
        match self.deadline {
            Some(d) => {
                let _ = tokio::time::timeout_at(d, read).await;
            }
            None => read.await,
        }
        let problem = Problem::from_response(status, content_type.as_deref(), &body)
            .with_retry_after(retry_after.as_deref());
        QuillError::Status { problem }
    }

    /// Reads a whole (unary) response body, decoded by its `Content-Encoding` and capped
    /// at `max_decoded_size`.
    pub async fn read_body(&self, mut resp: reqwest::Response, kind: BodyKind) -> Result<Bytes> {
        let limit = self.max_decoded_size;
        let mut decoder = decoder_for(resp.headers(), Some(limit))?;
        let identity = resp.headers().get(CONTENT_ENCODING).is_none();
        let length = resp.content_length();
        if identity && length.is_some_and(|n| n > limit) {
            return Err(QuillError::protocol(format!(
                "response body of {} bytes exceeds the {limit}-byte limit (max_decoded_size)",
                length.unwrap_or_default()
            )));
        }
        let hint = if identity {
            length.unwrap_or(0) as usize
        } else {
            0
        };
        let mut out = Collector::with_hint(hint);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| map_body_error(e, &self.label, kind))?
        {
            decoder.push(chunk);
            while let Some(piece) = decoder.next_output()? {
                out.push(piece);
            }
        }
        decoder.finish()?;
        Ok(out.finish())
    }
}
