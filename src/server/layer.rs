//! The one middleware of every route: counts requests (and those whose client went away
//! before the answer), logs them with `--log`, names
//! each with an `x-request-id` (the client's own, else `quill-<n>`), names the transport
//! profile of the request (`Selected-Prism: classic`, `turbo` or `hyper`), says it
//! decodes zstd request bodies (`Accept-Encoding: zstd`), points TCP clients at HTTP/3
//! when it is served (`Alt-Svc`), and zstd-compresses successful responses when the
//! client sent `Accept-Encoding: zstd`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Version};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::{FutureExt, StreamExt};

use super::body::Abort;
use super::problem::problem;
use super::SharedState;
use crate::codec::zstd::{accepts_zstd, compress, StreamEncoder};
use crate::protocol::{
    COMPRESSION_THRESHOLD, PRISM_CLASSIC, PRISM_HYPER, PRISM_TURBO, REQUEST_ID_HEADER,
    SELECTED_PRISM_HEADER,
};

/// Most bytes gathered into one compressed, flushed piece of a streamed response.
const COALESCE_LIMIT: usize = 256 * 1024;

/// Counts a request as in flight until its handler answers; dropped before that (the
/// client closed the connection or reset the stream) it counts as abandoned.
struct InFlight {
    state: SharedState,
    answered: bool,
}

impl InFlight {
    fn new(state: &SharedState) -> InFlight {
        state.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            state: state.clone(),
            answered: false,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let stats = &self.state.stats;
        stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.answered {
            stats.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub async fn common(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let n = state.stats.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let mut in_flight = InFlight::new(&state);
    // The client's id when it is a valid header value (it was one on the way in).
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .cloned()
        .or_else(|| HeaderValue::from_str(&format!("quill-{n}")).ok());
    let accept_zstd = req
        .headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .any(|v| v.to_str().is_ok_and(accepts_zstd));
    let version = req.version();
    let prism = match version {
        Version::HTTP_2 => PRISM_TURBO,
        Version::HTTP_3 => PRISM_HYPER,
        _ => PRISM_CLASSIC,
    };
    // Only the method and path are logged: never headers (they carry secrets).
    let log = state.config.log.then(|| {
        (
            req.method().clone(),
            req.uri().path().to_owned(),
            Instant::now(),
        )
    });
    let mut resp = next.run(req).await;
    in_flight.answered = true;
    if let Some(id) = request_id {
        resp.headers_mut().insert(REQUEST_ID_HEADER, id);
    }
    // Every answer says this server decodes zstd request bodies: clients compress
    // only after seeing it (protocol rule in docs/protocol.md).
    resp.headers_mut()
        .insert(header::ACCEPT_ENCODING, HeaderValue::from_static("zstd"));
    resp.headers_mut()
        .insert(SELECTED_PRISM_HEADER, HeaderValue::from_static(prism));
    if let (Some(alt_svc), false) = (&state.alt_svc, version == Version::HTTP_3) {
        resp.headers_mut().insert(header::ALT_SVC, alt_svc.clone());
    }
    if accept_zstd {
        resp = compress_response(resp).await;
    }
    if let Some((method, path, start)) = log {
        eprintln!(
            "{method} {path} -> {} in {:.1} ms{}",
            resp.status().as_u16(),
            start.elapsed().as_secs_f64() * 1000.0,
            if resp.body().size_hint().exact().is_none() {
                " (streaming)"
            } else {
                ""
            }
        );
    }
    resp
}

/// Compresses a 2xx response that has no `Content-Encoding` yet: a body of known size
/// at once when it is at least 1024 bytes, a streamed body chunk by chunk (each chunk
/// compressed and flushed, so streaming stays incremental).
async fn compress_response(resp: Response) -> Response {
    if !resp.status().is_success() || resp.headers().contains_key(header::CONTENT_ENCODING) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let vary = HeaderValue::from_static("accept-encoding");
    if let Some(len) = body.size_hint().exact() {
        if len < COMPRESSION_THRESHOLD as u64 {
            return Response::from_parts(parts, body);
        }
        let bytes = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(b) => b,
            Err(e) => {
                return problem(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    format!("response body failed: {e}"),
                )
            }
        };
        return match compress(&bytes) {
            Ok(z) => {
                parts.headers.remove(header::CONTENT_LENGTH);
                parts
                    .headers
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
                parts.headers.append(header::VARY, vary);
                Response::from_parts(parts, Body::from(z))
            }
            Err(_) => Response::from_parts(parts, Body::from(bytes)),
        };
    }
    let Ok(encoder) = StreamEncoder::new() else {
        return Response::from_parts(parts, body);
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    parts.headers.append(header::VARY, vary);
    let stream = futures_util::stream::unfold(
        (body.into_data_stream(), encoder, Phase::Running),
        |(mut inner, mut enc, phase)| async move {
            match phase {
                Phase::Done => return None,
                Phase::AbortNext => {
                    return Some((Err(Abort("stream aborted")), (inner, enc, Phase::Done)))
                }
                Phase::Running => {}
            }
            let mut pending: Vec<u8> = Vec::new();
            let mut end = false;
            let mut failed = false;
            // Wait for one chunk, then take whatever else is ready at once (up to
            // 256 KiB), so small frames share one flush without delaying any of them.
            match inner.next().await {
                Some(Ok(chunk)) => pending.extend_from_slice(&chunk),
                Some(Err(_)) => failed = true,
                None => end = true,
            }
            while !end && !failed && pending.len() < COALESCE_LIMIT {
                match inner.next().now_or_never() {
                    Some(Some(Ok(chunk))) => pending.extend_from_slice(&chunk),
                    Some(Some(Err(_))) => failed = true,
                    Some(None) => end = true,
                    None => break,
                }
            }
            let mut out = Vec::new();
            if !pending.is_empty() {
                match enc.compress_flush(&pending) {
                    Ok(z) => out.extend_from_slice(&z),
                    Err(_) => failed = true,
                }
            }
            if failed {
                // The inner stream aborted: send what is compressed, then abort too,
                // without closing the zstd frame.
                if out.is_empty() {
                    return Some((Err(Abort("stream aborted")), (inner, enc, Phase::Done)));
                }
                return Some((Ok(Bytes::from(out)), (inner, enc, Phase::AbortNext)));
            }
            if end {
                match enc.finish() {
                    Ok(z) => out.extend_from_slice(&z),
                    Err(_) => {
                        return Some((
                            Err(Abort("zstd compression failed")),
                            (inner, enc, Phase::Done),
                        ))
                    }
                }
            }
            let next = if end { Phase::Done } else { Phase::Running };
            Some((Ok(Bytes::from(out)), (inner, enc, next)))
        },
    );
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Where a compressed response stream stands.
enum Phase {
    Running,
    /// The inner stream failed after some output: abort after sending it.
    AbortNext,
    Done,
}
