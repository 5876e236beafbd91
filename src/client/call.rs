//! What every call shares: the prepared request (URL, headers, deadline), sending it,
//! turning a non-2xx answer into Problem Details, and reading a bounded body.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER,
};
use tokio::time::Instant;

use super::closer::{closed_error, Closed};
use super::compression::{decoder_for, Collector, ZSTD};
use super::errors::{BodyKind, CallLabel};
use super::events::{self, EventKind, Level};
use super::reply_memory::{Memory, Provider};
use super::transport::{Response, Transport};
use crate::codec::zstd::{BodyDecoder, Coding};
use crate::error::{QuillError, Result};
use crate::problem::Problem;
use crate::protocol::{CONTENT_TYPE_JSON, CONTENT_TYPE_PROTO, MAX_ERROR_BODY, REQUEST_ID_HEADER};

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
    pub http: Transport,
    pub url: reqwest::Url,
    pub headers: HeaderMap,
    pub label: CallLabel,
    /// Absolute end of the whole call; `None` without a timeout.
    pub deadline: Option<Instant>,
    pub idle_timeout: Option<Duration>,
    pub max_decoded_size: u64,
    pub compression: bool,
    /// Connection slots of an HTTP/1.1 client (`max_connections`); `None` = no limit.
    pub slots: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    /// What responses have shown the server understands.
    pub server: std::sync::Arc<super::negotiation::ServerCodings>,
    /// The client's runtime: a stream's reader task keeps it alive.
    pub runtime: std::sync::Arc<super::runtime::ClientRuntime>,
    /// Fires when the client is closed: the call ends at once.
    pub closed: Closed,
    /// Whether the call may be repeated safely (retries, HTTP/3 0-RTT early data).
    pub idempotent: bool,
    /// When the call began, for the elapsed times of its events.
    pub started: Instant,
    /// Where a unary body of known length goes, when the face provides memory.
    pub reply_memory: Option<Provider>,
}

/// The per-call headers: content negotiation, the transport profile, then the client's
/// headers and last this call's own (either may replace `User-Agent` but not the
/// reserved ones).
pub(crate) fn call_headers(
    kind: ContentKind,
    prefer: &HeaderValue,
    compression: bool,
    client: &super::config::HeaderStore,
    call: &super::config::HeaderStore,
) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(CONTENT_TYPE, HeaderValue::from_static(kind.mime()));
    map.insert(ACCEPT, HeaderValue::from_static(kind.mime()));
    map.insert("prefer", prefer.clone());
    if compression {
        map.insert(ACCEPT_ENCODING, HeaderValue::from_static(ZSTD));
    }
    client.apply(&mut map);
    call.apply(&mut map);
    map
}

impl CallContext {
    /// Runs `fut` under the call's deadline (the whole call, body included) and until
    /// the client is closed.
    pub async fn within_deadline<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let bounded = async {
            match self.deadline {
                Some(d) => tokio::time::timeout_at(d, fut)
                    .await
                    .unwrap_or_else(|_| Err(self.label.timeout())),
                None => fut.await,
            }
        };
        tokio::select! {
            biased;
            result = bounded => self.closed.or_closed(&self.label.path, result),
            () = self.closed.fired() => Err(closed_error(&self.label.path)),
        }
    }

    /// Waits for a connection slot (with `max_connections`); hold it until the answer
    /// is read. Call it under the deadline: the wait counts.
    pub async fn connection_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        // The semaphore is never closed, so acquiring only ever waits.
        self.slots.clone()?.acquire_owned().await.ok()
    }

    /// Whether request bodies may be compressed: compression is on and this server has
    /// shown it decodes zstd (see `negotiation.rs`).
    pub fn compress_requests(&self) -> bool {
        self.compression && self.server.decodes_zstd()
    }

    /// POSTs `body` with the call's headers (`zstd` marks a compressed body) and
    /// returns a 2xx response; anything else becomes `Status` with the server's
    /// Problem Details.
    pub async fn send(&self, body: reqwest::Body, zstd: bool) -> Result<Response> {
        let mut headers = self.headers.clone();
        if zstd {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(ZSTD));
        }
        // No transport timeout: `within_deadline` (or the stream task) bounds the whole
        // call, and dropping the request future at the deadline closes the connection.
        let resp = match self
            .http
            .post(
                &self.url,
                headers,
                body,
                &self.label,
                self.deadline,
                self.idempotent,
            )
            .await
        {
            Ok(resp) => {
                self.server.learn(resp.headers());
                if matches!(resp, Response::Tcp(_)) {
                    self.runtime.learn_alt_svc(resp.headers());
                }
                resp
            }
            Err(err) => {
                self.failed(&err);
                return Err(err);
            }
        };
        if resp.status().is_success() {
            self.answered(&resp);
            Ok(resp)
        } else {
            let err = self.status_error(resp).await;
            self.failed(&err);
            Err(err)
        }
    }

    /// Events of a 2xx answer: the connection it came on, the call's status and time.
    fn answered(&self, resp: &Response) {
        if events::enabled(Level::Debug) {
            let local = resp.local_addr();
            if local.is_some_and(|addr| self.runtime.seen_before(addr)) {
                events::emit(Level::Debug, EventKind::ConnectionReused, |e| {
                    e.target = self.label.path.clone();
                    e.message = format!("{}: reusing a pooled connection", self.label.path);
                });
            }
            let status = resp.status().as_u16();
            events::emit(Level::Debug, EventKind::CallFinished, |e| {
                e.target = self.label.path.clone();
                e.status = Some(status);
                e.elapsed = self.started.elapsed();
                e.message = format!(
                    "POST {} -> {status} in {}",
                    self.label.path,
                    events::millis(e.elapsed)
                );
            });
        }
    }

    /// The event of a failed attempt (timeouts report themselves, as warnings).
    fn failed(&self, err: &QuillError) {
        if matches!(err, QuillError::Timeout { .. }) {
            return;
        }
        events::emit(Level::Info, EventKind::CallFailed, |e| {
            e.target = self.label.path.clone();
            e.status = match err {
                QuillError::Status { problem } => Some(problem.status),
                _ => None,
            };
            e.elapsed = self.started.elapsed();
            e.message = format!(
                "POST {} failed after {}: {err}",
                self.label.path,
                events::millis(e.elapsed)
            );
        });
    }

    async fn status_error(&self, mut resp: Response) -> QuillError {
        let status = resp.status().as_u16();
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(CONTENT_TYPE);
        let retry_after = header(RETRY_AFTER);
        let request_id = [resp.headers(), &self.headers]
            .iter()
            .find_map(|h| h.get(REQUEST_ID_HEADER)?.to_str().ok().map(str::to_owned));
        // The error body only informs the message: read a bounded prefix, decoded when
        // possible, and keep whatever arrived if reading fails part way.
        let mut decoder = decoder_for(resp.headers(), None)
            .or_else(|_| BodyDecoder::new(Coding::Identity, None))
            .expect("an identity decoder always builds");
        let mut body = Vec::new();
        let read = async {
            'read: while body.len() < MAX_ERROR_BODY {
                let Ok(Some(chunk)) = resp.chunk(&self.label, BodyKind::Unary).await else {
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
        let mut problem = Problem::from_response(status, content_type.as_deref(), &body)
            .with_retry_after(retry_after.as_deref());
        problem.request_id = request_id;
        QuillError::Status { problem }
    }

    /// Reads a whole (unary) response body, decoded by its `Content-Encoding` and capped
    /// at `max_decoded_size`.
    pub async fn read_body(&self, mut resp: Response, kind: BodyKind) -> Result<Bytes> {
        let limit = self.max_decoded_size;
        let mut decoder = decoder_for(resp.headers(), Some(limit))?;
        let identity = resp.headers().get(CONTENT_ENCODING).is_none();
        let length = resp.content_length();
        if identity && length.is_some_and(|n| n > limit) {
            let err = QuillError::protocol(format!(
                "response body of {} bytes exceeds the {limit}-byte limit (max_decoded_size)",
                length.unwrap_or_default()
            ));
            self.limit_hit(&err);
            return Err(err);
        }
        if let (true, Some(len), Some(provide)) = (identity, length, &self.reply_memory) {
            let memory = usize::try_from(len).ok().and_then(|len| provide(len));
            if let Some(memory) = memory {
                return self.read_into(resp, memory, kind).await;
            }
        }
        let hint = if identity {
            length.unwrap_or(0) as usize
        } else {
            0
        };
        let mut out = Collector::with_hint(hint);
        while let Some(chunk) = resp.chunk(&self.label, kind).await? {
            decoder.push(chunk);
            loop {
                match decoder.next_output() {
                    Ok(Some(piece)) => out.push(piece),
                    Ok(None) => break,
                    Err(err) => {
                        if decoder.over_limit() {
                            self.limit_hit(&err);
                        }
                        return Err(err);
                    }
                }
            }
        }
        decoder.finish()?;
        Ok(out.finish())
    }

    /// Reads an unencoded body of `memory.len()` bytes (its `Content-Length`) into
    /// `memory`.
    async fn read_into(
        &self,
        mut resp: Response,
        mut memory: Memory,
        kind: BodyKind,
    ) -> Result<Bytes> {
        let len = memory.len();
        let mut filled = 0;
        while let Some(chunk) = resp.chunk(&self.label, kind).await? {
            // The HTTP layer enforces Content-Length; checked again since the copy
            // below must never run past the memory.
            let end = filled + chunk.len();
            if end > len {
                return Err(QuillError::protocol(format!(
                    "response body of {} is longer than its Content-Length ({len})",
                    self.label.path
                )));
            }
            memory.as_mut_slice()[filled..end].copy_from_slice(&chunk);
            filled = end;
        }
        if filled != len {
            return Err(QuillError::Connection {
                reason: format!(
                    "response body of {} ended after {filled} of {len} bytes",
                    self.label.path
                ),
            });
        }
        Ok(memory.into_bytes())
    }

    /// The event of a response refused for its decoded size.
    pub fn limit_hit(&self, err: &QuillError) {
        events::emit(Level::Warning, EventKind::DecodeLimit, |e| {
            e.target = self.label.path.clone();
            e.elapsed = self.started.elapsed();
            e.message = err.to_string();
        });
    }
}
