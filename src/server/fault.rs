//! `test.v1.FaultService`: routes that fail or misbehave on purpose, so client test
//! suites can check error mapping, truncation detection, limits and cancellation.

use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use serde_json::json;

use super::body::{
    infallible_stream_response, json_response, read_json, stream_response, Abort,
    CONTENT_TYPE_STREAM,
};
use super::generator::model;
use super::problem::{bad_request, problem, ProblemResponse};
use super::{bump, SharedState};
use crate::codec::stream::{encode_data, encode_frame, put_varint, CANCEL_FRAME, END_STREAM_FRAME};
use crate::protocol::{flags, problem_fields, CONTENT_TYPE_PROTO, MAX_FRAME_PAYLOAD};
use crate::{Token, TokenBatch};

/// Longest sleep of `Slow` and longest interval of `StreamSlow`.
const MAX_SLEEP_MS: u64 = 300_000;
/// Most messages of `StreamCut` and `StreamSlow`.
const MAX_MESSAGES: u64 = 1_000_000;
/// Most tokens `Batches` pre-generates.
const MAX_BATCH_TOKENS_TOTAL: u64 = 4_000_000;
/// Largest body of `Big`, and decoded size of `Bomb`.
const MAX_BIG_BYTES: u64 = 16 << 30;

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

fn data_frame(payload: &[u8]) -> Bytes {
    Bytes::from(encode_data(payload).expect("small test payload"))
}

// ---------------------------------------------------------------- errors

#[derive(Debug, Deserialize)]
struct ErrorRequest {
    #[serde(default)]
    status: Option<u16>,
    title: Option<String>,
    detail: Option<String>,
    retry_after: Option<u64>,
    proto_type: Option<String>,
    proto_detail_base64: Option<String>,
    instance: Option<String>,
}

/// `Error`: answers the asked status with full Problem Details (plus an unknown field
/// `"extra": "kept"`) and `Retry-After` when asked.
pub async fn error(headers: HeaderMap, body: Body) -> Response {
    let req: ErrorRequest = match read_json(&headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let status = req.status.unwrap_or(500);
    let Some(code) = StatusCode::from_u16(status)
        .ok()
        .filter(|_| (400..=599).contains(&status))
    else {
        return bad_request(format!("status must be in 400..=599, got {status}"));
    };
    let mut p = ProblemResponse::new(code, req.title.as_deref(), req.detail.unwrap_or_default())
        .field("extra", "kept");
    if let Some(t) = req.proto_type {
        p = p.field(problem_fields::PROTO_TYPE, t);
    }
    if let Some(d) = req.proto_detail_base64 {
        p = p.field(problem_fields::PROTO_DETAIL_BASE64, d);
    }
    if let Some(i) = req.instance {
        p = p.field("instance", i);
    }
    if let Some(s) = req.retry_after {
        p = p.retry_after(s);
    }
    p.into_response()
}

/// `PlainText`: 502 with a plain-text body, as a proxy would answer.
pub async fn plain_text() -> Response {
    (
        StatusCode::BAD_GATEWAY,
        [(header::CONTENT_TYPE, "text/plain")],
        "bad gateway from proxy",
    )
        .into_response()
}

/// `Html`: 503 with an HTML page.
pub async fn html() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><head><title>503 Service Temporarily Unavailable</title></head>\n\
         <body><center><h1>503 Service Temporarily Unavailable</h1></center>\n\
         <hr><center>nginx</center></body></html>\n",
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct SlowRequest {
    #[serde(default)]
    ms: u64,
}

/// `Slow`: sleeps `ms` then answers `{"slept_ms": ms}`.
pub async fn slow(headers: HeaderMap, body: Body) -> Response {
    let req: SlowRequest = match read_json(&headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if req.ms > MAX_SLEEP_MS {
        return bad_request(format!("ms is {}; at most {MAX_SLEEP_MS}", req.ms));
    }
    tokio::time::sleep(Duration::from_millis(req.ms)).await;
    json_response(&json!({"slept_ms": req.ms}))
}

/// Counts a `Stall` request while its handler lives.
struct Stalled(SharedState);

impl Drop for Stalled {
    fn drop(&mut self) {
        self.0.stats.stalled.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `Stall`: never reads the request body, so a large upload fills the transport's
/// flow-control window (the TCP buffers on HTTP/1.1, the stream window on HTTP/2) and
/// stops; answers `{"stalled_ms": ms}` after `Quill-Stall-Ms` ms (default and cap
/// 300 000). The handler is dropped when the client gives up (connection closed or
/// stream reset), which `Stats.stalled` shows.
pub async fn stall(State(state): State<SharedState>, headers: HeaderMap, body: Body) -> Response {
    bump(&state.stats.stalled);
    let _alive = Stalled(state);
    let ms = headers
        .get("quill-stall-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(MAX_SLEEP_MS)
        .min(MAX_SLEEP_MS);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    drop(body);
    json_response(&json!({"stalled_ms": ms}))
}

/// Compares without an early exit, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Auth`: with `--token T`, demands `Authorization: Bearer T` (401 otherwise, never
/// echoing what was sent); answers `{"ok": true}`.
pub async fn auth(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.config.token {
        let ok = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| {
                let (scheme, cred) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| cred.trim())
            })
            .any(|cred| constant_time_eq(cred.as_bytes(), token.as_bytes()));
        if !ok {
            let detail = if headers.contains_key(header::AUTHORIZATION) {
                "the bearer token is not valid"
            } else {
                "this method needs an Authorization: Bearer token"
            };
            let mut resp =
                ProblemResponse::new(StatusCode::UNAUTHORIZED, Some("Unauthenticated"), detail)
                    .into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    }
    json_response(&json!({"ok": true}))
}

// ---------------------------------------------------------------- broken streams

#[derive(Debug, Deserialize)]
struct MessagesRequest {
    #[serde(default = "three")]
    messages: u64,
    #[serde(default = "hundred")]
    interval_ms: u64,
}

fn three() -> u64 {
    3
}
fn hundred() -> u64 {
    100
}

#[allow(clippy::result_large_err)]
async fn messages_request(headers: &HeaderMap, body: Body) -> Result<MessagesRequest, Response> {
    let req: MessagesRequest = read_json(headers, body).await?;
    if req.messages > MAX_MESSAGES {
        return Err(bad_request(format!(
            "messages is {}; at most {MAX_MESSAGES}",
            req.messages
        )));
    }
    if req.interval_ms > MAX_SLEEP_MS {
        return Err(bad_request(format!(
            "interval_ms is {}; at most {MAX_SLEEP_MS}",
            req.interval_ms
        )));
    }
    Ok(req)
}

/// `StreamCut`: `messages` DATA frames (`message 0`, `message 1`, …), then the body is
/// aborted without END_STREAM.
pub async fn stream_cut(headers: HeaderMap, body: Body) -> Response {
    let req = match messages_request(&headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let n = req.messages;
    let frames = stream::unfold(0u64, move |i| async move {
        match i.cmp(&n) {
            std::cmp::Ordering::Less => {
                Some((Ok(data_frame(format!("message {i}").as_bytes())), i + 1))
            }
            std::cmp::Ordering::Equal => {
                // Let the frames reach the socket before the connection is cut.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((Err(Abort("StreamCut: cut before END_STREAM")), i + 1))
            }
            std::cmp::Ordering::Greater => None,
        }
    });
    stream_response(CONTENT_TYPE_STREAM, frames)
}

/// `StreamBreak`: the response body fails at once, before its first byte. hyper then
/// sends no response at all over HTTP/1.1 (the connection closes, as the original
/// Quill server's does when a stream fails early) and resets the stream over HTTP/2;
/// over HTTP/3 the headers go out and the stream is reset.
pub async fn stream_break() -> Response {
    let failing = stream::once(async { Err::<Bytes, _>(Abort("StreamBreak: failed at once")) });
    stream_response(CONTENT_TYPE_STREAM, failing)
}

/// `StreamOversized`: a DATA frame header declaring 8 MiB (over the 4 MiB limit),
/// then its 8 MiB of zero bytes and END_STREAM: a client without the limit would
/// accept it.
pub async fn stream_oversized() -> Response {
    let declared = 2 * MAX_FRAME_PAYLOAD;
    let mut head = Vec::new();
    put_varint(&mut head, declared as u64);
    head.push(flags::DATA);
    let parts = std::iter::once(Bytes::from(head))
        .chain((0..declared / ZEROS.len()).map(|_| Bytes::from_static(&ZEROS)))
        .chain(std::iter::once(Bytes::from_static(&END_STREAM_FRAME)));
    infallible_stream_response(CONTENT_TYPE_STREAM, stream::iter(parts))
}

/// `StreamCancel`: one DATA frame (`before cancel`), then a CANCEL frame `00 04`.
pub async fn stream_cancel() -> Response {
    let parts = [
        data_frame(b"before cancel"),
        Bytes::from_static(&CANCEL_FRAME),
    ];
    infallible_stream_response(CONTENT_TYPE_STREAM, stream::iter(parts))
}

/// `StreamCombined`: DATA `one`, a CREDIT frame granting 16, a frame with flags 0x81
/// (DATA plus an unknown bit) carrying `two`, and DATA|END_STREAM (0x03) carrying
/// `three` as the last frame. A correct client yields `one`, `two`, `three`.
pub async fn stream_combined() -> Response {
    let mut credit = Vec::new();
    put_varint(&mut credit, 16);
    let frame = |f: u8, p: &[u8]| Bytes::from(encode_frame(f, p).expect("small frame"));
    let parts = [
        frame(flags::DATA, b"one"),
        frame(flags::CREDIT, &credit),
        frame(flags::DATA | 0x80, b"two"),
        frame(flags::DATA | flags::END_STREAM, b"three"),
    ];
    infallible_stream_response(CONTENT_TYPE_STREAM, stream::iter(parts))
}

/// Counts a StreamSlow stream as open while it exists; dropped before its end (the
/// client went away) it counts as cancelled.
pub(super) struct OpenStream {
    state: SharedState,
    completed: bool,
}

impl OpenStream {
    pub(super) fn new(state: SharedState) -> Self {
        bump(&state.stats.open_streams);
        OpenStream {
            state,
            completed: false,
        }
    }

    /// The stream ran to its end: not counted as cancelled.
    pub(super) fn complete(mut self) {
        self.completed = true;
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.state
            .stats
            .open_streams
            .fetch_sub(1, Ordering::Relaxed);
        if !self.completed {
            bump(&self.state.stats.cancelled_streams);
        }
    }
}

/// `StreamSlow`: one DATA frame (`tick 0`, `tick 1`, …) every `interval_ms`, then
/// END_STREAM. Open and abandoned streams are counted for `Stats`.
pub async fn stream_slow(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let req = match messages_request(&headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let n = req.messages;
    let interval = Duration::from_millis(req.interval_ms);
    let guard = OpenStream::new(state);
    let frames = stream::unfold((0u64, guard), move |(i, mut guard)| async move {
        if i > n {
            return None;
        }
        if i == n {
            guard.completed = true;
            return Some((Bytes::from_static(&END_STREAM_FRAME), (i + 1, guard)));
        }
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        Some((data_frame(format!("tick {i}").as_bytes()), (i + 1, guard)))
    });
    infallible_stream_response(CONTENT_TYPE_STREAM, frames)
}

/// `/test.v1.EmptyAnswers/{*path}`: any POST under this prefix is answered 200 with an
/// empty `application/proto` body and its request is not read, as the original Quill
/// server's HTTP/3 path answers every POST (protocol.md, interop notes). A client whose
/// `base_url` ends in `/test.v1.EmptyAnswers` meets that server on every route.
pub async fn empty_answer() -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE_PROTO)], Bytes::new()).into_response()
}

/// `GoAway`: `{"ok": true}`, then the connection it came on shuts down gracefully
/// (HTTP/2 and HTTP/3 GOAWAY: streams already open finish, new ones need a new
/// connection).
pub async fn goaway(axum::Extension(goaway): axum::Extension<super::listen::GoAway>) -> Response {
    goaway.send();
    json_response(&json!({"ok": true}))
}

/// `Stats`: `{"open_streams", "cancelled_streams", "stalled", "in_flight", "abandoned",
/// "requests"}` (requests counts every request the server received, this one included;
/// in_flight leaves this one out).
pub async fn stats(State(state): State<SharedState>) -> Response {
    let s = &state.stats;
    json_response(&json!({
        "open_streams": s.open_streams.load(Ordering::Relaxed),
        "cancelled_streams": s.cancelled_streams.load(Ordering::Relaxed),
        "stalled": s.stalled.load(Ordering::Relaxed),
        "in_flight": s.in_flight.load(Ordering::Relaxed).saturating_sub(1),
        "abandoned": s.abandoned.load(Ordering::Relaxed),
        "requests": s.requests.load(Ordering::Relaxed),
    }))
}

// ---------------------------------------------------------------- throughput and size

#[derive(Debug, Deserialize)]
struct BatchesRequest {
    #[serde(default = "hundred")]
    batches: u64,
    #[serde(default = "sixteen")]
    batch_size: u64,
}

fn sixteen() -> u64 {
    16
}

/// The frames of `Batches`, pre-encoded and packed into chunks of about 64 KiB.
fn encode_batches(batches: u64, batch_size: u64) -> Vec<Bytes> {
    const CHUNK: usize = 64 * 1024;
    let m = model();
    let vocab = m.vocab_size() as u64;
    let mut chunks = Vec::new();
    let mut cur = Vec::with_capacity(CHUNK + 1024);
    let mut position = 0u64;
    for b in 0..batches {
        let mut batch = TokenBatch::new(Some(1));
        batch.is_final = b + 1 == batches;
        batch.tokens.reserve(batch_size as usize);
        for _ in 0..batch_size {
            let id = (position % vocab) as u32;
            let word = m.word(id).unwrap_or("?");
            batch.tokens.push(Token::with_text(
                id,
                format!(" {word}"),
                position as u32,
                Some(-1.0),
            ));
            position += 1;
        }
        let payload = batch.encode().expect("demo batches are encodable");
        cur.extend_from_slice(&encode_data(&payload).expect("batch fits a frame"));
        if cur.len() >= CHUNK {
            chunks.push(Bytes::from(std::mem::replace(
                &mut cur,
                Vec::with_capacity(CHUNK + 1024),
            )));
        }
    }
    cur.extend_from_slice(&END_STREAM_FRAME);
    chunks.push(Bytes::from(cur));
    chunks
}

/// `Batches`: `batches` TokenBatches of `batch_size` tokens, pre-encoded before the
/// response starts and then streamed as fast as possible (last one `is_final`).
pub async fn batches(headers: HeaderMap, body: Body) -> Response {
    let req: BatchesRequest = match read_json(&headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if req.batch_size > crate::protocol::MAX_BATCH_TOKENS as u64
        || req.batches.saturating_mul(req.batch_size) > MAX_BATCH_TOKENS_TOTAL
    {
        return bad_request(format!(
            "batch_size must be at most {} and batches × batch_size at most {MAX_BATCH_TOKENS_TOTAL}",
            crate::protocol::MAX_BATCH_TOKENS
        ));
    }
    let chunks = match tokio::task::spawn_blocking(move || {
        encode_batches(req.batches, req.batch_size)
    })
    .await
    {
        Ok(c) => c,
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    infallible_stream_response(CONTENT_TYPE_STREAM, stream::iter(chunks))
}

#[derive(Debug, Deserialize)]
struct BytesRequest {
    #[serde(default)]
    bytes: u64,
}

#[allow(clippy::result_large_err)]
async fn bytes_request(headers: &HeaderMap, body: Body) -> Result<u64, Response> {
    let req: BytesRequest = read_json(headers, body).await?;
    if req.bytes > MAX_BIG_BYTES {
        return Err(bad_request(format!(
            "bytes is {}; at most {MAX_BIG_BYTES}",
            req.bytes
        )));
    }
    Ok(req.bytes)
}

/// `Big`: a 200 body of `bytes` zero bytes with a `Content-Length` (streamed, never
/// held in memory).
pub async fn big(headers: HeaderMap, body: Body) -> Response {
    let n = match bytes_request(&headers, body).await {
        Ok(n) => n,
        Err(resp) => return resp,
    };
    let chunk = ZEROS.len() as u64;
    let parts = (0..n.div_ceil(chunk)).map(move |k| {
        let len = chunk.min(n - k * chunk) as usize;
        Bytes::from_static(&ZEROS[..len])
    });
    let mut resp = infallible_stream_response("application/octet-stream", stream::iter(parts));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    resp
}

#[derive(Deserialize)]
struct FloodRequest {
    #[serde(default)]
    bytes: u64,
    #[serde(default = "default_flood_message")]
    message_size: u32,
}

fn default_flood_message() -> u32 {
    64 * 1024
}

/// `Flood`: a stream of DATA messages of `message_size` zero bytes (the last one
/// shorter) carrying `bytes` in all, then END_STREAM. One frame is encoded once and
/// sent again and again: no per-byte work, for backpressure tests and throughput
/// benchmarks.
pub async fn flood(headers: HeaderMap, body: Body) -> Response {
    let req: FloodRequest = match read_json(&headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if req.bytes > MAX_BIG_BYTES {
        return bad_request(format!("bytes is {}; at most {MAX_BIG_BYTES}", req.bytes));
    }
    let size = u64::from(req.message_size);
    if size == 0 || size > MAX_FRAME_PAYLOAD as u64 {
        return bad_request(format!(
            "message_size is {size}; it must be 1..={}",
            MAX_FRAME_PAYLOAD
        ));
    }
    let n = req.bytes;
    let full = Bytes::from(encode_data(&vec![0; size as usize]).expect("checked size"));
    let frames = (0..n.div_ceil(size)).map(move |k| {
        let len = size.min(n - k * size);
        if len == size {
            full.clone()
        } else {
            Bytes::from(encode_data(&vec![0; len as usize]).expect("checked size"))
        }
    });
    let frames = frames.chain(std::iter::once(Bytes::from_static(&END_STREAM_FRAME)));
    infallible_stream_response(CONTENT_TYPE_PROTO, stream::iter(frames))
}

fn zstd_zeros(n: u64) -> std::io::Result<Vec<u8>> {
    let mut enc =
        zstd::stream::write::Encoder::new(Vec::new(), crate::protocol::COMPRESSION_LEVEL)?;
    let mut left = n;
    while left > 0 {
        let len = left.min(ZEROS.len() as u64) as usize;
        enc.write_all(&ZEROS[..len])?;
        left -= len as u64;
    }
    enc.finish()
}

/// `Bomb`: `Content-Encoding: zstd` whatever the request accepts; the body decodes to
/// `bytes` zero bytes (the zstd frame carries no content size).
pub async fn bomb(headers: HeaderMap, body: Body) -> Response {
    let n = match bytes_request(&headers, body).await {
        Ok(n) => n,
        Err(resp) => return resp,
    };
    match tokio::task::spawn_blocking(move || zstd_zeros(n)).await {
        Ok(Ok(z)) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::CONTENT_ENCODING, "zstd"),
            ],
            z,
        )
            .into_response(),
        Ok(Err(e)) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
