//! `quill.inference.v1.InferenceService` over protobuf (protocol.md §9), backed by the
//! demo generator: `Generate` (a server stream of `GenerateResponse`), `Embed` (unary)
//! and `Chat` (bidirectional: one generation per request, as the requests arrive).
//! Requests are protobuf bodies; stream messages travel in the frames of §3.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use prost::Message;

use super::body::{
    infallible_stream_response, stream_response, Abort, RequestBody, RequestMessages,
    CONTENT_TYPE_STREAM,
};
use super::fault::OpenStream;
use super::generator::Sampler;
use super::inference::{embedding_bytes, MAX_TOKENS};
use super::problem::bad_request;
use super::SharedState;
use crate::codec::stream::{encode_data, END_STREAM_FRAME};
use crate::proto::inference::v1 as pb;
use crate::proto::tensor::v1 as pbt;
use crate::proto::token_batch_to_proto;
use crate::{DType, Tensor, TensorMeta, TokenBatch};

/// Tokens per `GenerateResponse` (the last one may hold fewer).
pub const TOKENS_PER_RESPONSE: usize = 8;
/// `max_new_tokens` when the request leaves it out.
pub const DEFAULT_MAX_NEW_TOKENS: u32 = 16;
/// Width of every embedding this service returns.
pub const EMBEDDING_DIM: u64 = 64;
/// Width of the per-response embedding of `stream_embeddings`.
const STREAM_EMBEDDING_DIM: u64 = 8;
/// Request header of the benchmark mode of `Generate`: tokens per response. The whole
/// stream is then generated and encoded before the response starts, so a client is
/// measured against a server that only writes bytes.
pub const PREGENERATE_HEADER: &str = "quill-pregenerate";
/// Most tokens one pre-generated `Generate` stream may hold.
pub const MAX_PREGENERATED_TOKENS: u32 = 4_000_000;

#[allow(clippy::result_large_err)]
async fn read_message<M: Message + Default>(
    headers: &HeaderMap,
    body: Body,
) -> Result<M, Response> {
    let bytes = RequestBody::new(headers, body)?
        .collect()
        .await
        .map_err(IntoResponse::into_response)?;
    M::decode(bytes).map_err(|e| bad_request(format!("malformed protobuf request: {e}")))
}

/// The generations of one request, as encoded `GenerateResponse`s.
struct Generation {
    sampler: Sampler,
    max_new: u32,
    generated: u32,
    stop: Vec<u32>,
    embeddings: bool,
    sequence_id: u32,
    per_response: usize,
    done: bool,
}

impl Generation {
    fn new(req: &pb::GenerateRequest, sequence_id: u32) -> Result<Generation, String> {
        Generation::limited(req, sequence_id, MAX_TOKENS, TOKENS_PER_RESPONSE)
    }

    fn limited(
        req: &pb::GenerateRequest,
        sequence_id: u32,
        max_tokens: u32,
        per_response: usize,
    ) -> Result<Generation, String> {
        let max_new = req.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS);
        if max_new > max_tokens {
            return Err(format!("max_new_tokens is {max_new}; at most {max_tokens}"));
        }
        let temperature = f64::from(req.temperature.unwrap_or(1.0));
        Ok(Generation {
            sampler: Sampler::from_ids(&req.input_ids, temperature)?,
            max_new,
            generated: 0,
            stop: req.stop_token_ids.clone(),
            embeddings: req.stream_embeddings,
            sequence_id,
            per_response,
            done: false,
        })
    }

    /// The next response, `None` after the one marked complete.
    fn next_response(&mut self) -> Option<pb::GenerateResponse> {
        if self.done {
            return None;
        }
        let mut batch = TokenBatch::new(Some(self.sequence_id));
        let mut finish = None;
        while batch.tokens.len() < self.per_response && self.generated < self.max_new {
            let token = self.sampler.next_token();
            self.generated += 1;
            let stop = self.stop.contains(&token.id);
            batch.tokens.push(token);
            if stop {
                finish = Some("stop");
                break;
            }
        }
        if finish.is_none() && self.generated >= self.max_new {
            finish = Some("length");
        }
        self.done = finish.is_some();
        batch.is_final = self.done;
        let embedding = self.embeddings.then(|| {
            let last = batch.tokens.last().map_or(0, |t| t.id);
            vector(&format!("token {last}"), STREAM_EMBEDDING_DIM)
        });
        Some(pb::GenerateResponse {
            tokens: Some(token_batch_to_proto(&batch, &[]).expect("no attention mask")),
            embedding: embedding.map(|t| pbt::Tensor::from(&t)),
            total_generated: self.generated,
            is_complete: self.done,
            finish_reason: finish.map(str::to_owned),
        })
    }
}

/// A deterministic unit vector `[1, dim]` float32 for `key`.
fn vector(key: &str, dim: u64) -> Tensor {
    let meta = TensorMeta::new(vec![1, dim], DType::Float32, Some("embedding".into()))
        .expect("a valid shape");
    Tensor::new(meta, embedding_bytes(key, dim as usize).into()).expect("matching bytes")
}

/// `frames`, completing `guard` once they all went out.
fn counted(
    frames: impl Stream<Item = Bytes> + Send + 'static,
    guard: OpenStream,
) -> impl Stream<Item = Bytes> + Send + 'static {
    stream::unfold(
        (Box::pin(frames), guard),
        |(mut frames, guard)| async move {
            match frames.next().await {
                Some(b) => Some((b, (frames, guard))),
                None => {
                    guard.complete();
                    None
                }
            }
        },
    )
}

/// The tokens per response asked for by [`PREGENERATE_HEADER`], if present.
fn pregenerate_batch(headers: &HeaderMap) -> Result<Option<usize>, String> {
    let Some(value) = headers.get(PREGENERATE_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=crate::protocol::MAX_BATCH_TOKENS).contains(n))
        .map(Some)
        .ok_or_else(|| {
            format!(
                "{PREGENERATE_HEADER} must be a number of tokens in 1..={}",
                crate::protocol::MAX_BATCH_TOKENS
            )
        })
}

/// The whole stream of `generation` with END_STREAM, encoded into chunks of ~64 KiB.
fn pregenerated(generation: &mut Generation) -> Vec<Bytes> {
    const CHUNK: usize = 64 * 1024;
    let mut chunks = Vec::new();
    let mut cur = Vec::with_capacity(CHUNK + 1024);
    while let Some(resp) = generation.next_response() {
        cur.extend_from_slice(&frame(&resp));
        if cur.len() >= CHUNK {
            chunks.push(Bytes::from(std::mem::take(&mut cur)));
        }
    }
    cur.extend_from_slice(&END_STREAM_FRAME);
    chunks.push(Bytes::from(cur));
    chunks
}

fn frame(resp: &pb::GenerateResponse) -> Bytes {
    Bytes::from(encode_data(&resp.encode_to_vec()).expect("a response fits a frame"))
}

/// `POST /quill.inference.v1.InferenceService/Generate`: `GenerateResponse`s of up to
/// 8 tokens, the last `is_complete` with `finish_reason` `"length"` or `"stop"` (a
/// generated id in `stop_token_ids`, which is included), then END_STREAM.
///
/// With the header `quill-pregenerate: N` (the benchmark mode), responses hold up to N
/// tokens (at most 65 535), `max_new_tokens` may reach 4 000 000, and the whole stream
/// is encoded before the response starts.
pub async fn generate(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let pregenerate = match pregenerate_batch(&headers) {
        Ok(n) => n,
        Err(e) => return bad_request(e),
    };
    let req: pb::GenerateRequest = match read_message(&headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let generation = match pregenerate {
        Some(n) => Generation::limited(&req, 1, MAX_PREGENERATED_TOKENS, n),
        None => Generation::new(&req, 1),
    };
    let mut generation = match generation {
        Ok(g) => g,
        Err(e) => return bad_request(e),
    };
    // Counted as an open stream for `Stats`, and as cancelled unless it runs to the end.
    let guard = OpenStream::new(state);
    if pregenerate.is_some() {
        let chunks = pregenerated(&mut generation);
        let frames = counted(stream::iter(chunks), guard);
        return infallible_stream_response(CONTENT_TYPE_STREAM, frames);
    }
    let frames = stream::unfold(generation, |mut g| async move {
        g.next_response().map(|r| (frame(&r), g))
    })
    .chain(stream::once(async {
        Bytes::from_static(&END_STREAM_FRAME)
    }));
    let frames = counted(frames, guard);
    infallible_stream_response(CONTENT_TYPE_STREAM, frames)
}

/// `POST /quill.inference.v1.InferenceService/Embed`: per layer asked for (default
/// `[-1]`), a float32 tensor of width 64: `[n, 64]` for n input ids, or `[1, 64]`
/// pooled (`pool_strategy` `"mean"` (default), `"first"` or `"max"`); `metadata` holds
/// their metas.
pub async fn embed(headers: HeaderMap, body: Body) -> Response {
    let req: pb::EmbedRequest = match read_message(&headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if req.input_ids.is_empty() {
        return bad_request("input_ids is empty");
    }
    if req.input_ids.len() > MAX_TOKENS as usize {
        return bad_request(format!(
            "{} input ids; at most {MAX_TOKENS}",
            req.input_ids.len()
        ));
    }
    let strategy = req.pool_strategy.as_deref().unwrap_or("mean");
    if !matches!(strategy, "mean" | "first" | "max") {
        return bad_request(format!(
            "unknown pool_strategy {strategy:?}; \"mean\", \"first\" or \"max\""
        ));
    }
    let layers = if req.layers.is_empty() {
        vec![-1]
    } else {
        req.layers.clone()
    };
    let mut embeddings = Vec::new();
    for layer in layers {
        let rows: Vec<Vec<f32>> = req
            .input_ids
            .iter()
            .map(|id| floats(&vector(&format!("layer {layer} id {id}"), EMBEDDING_DIM)))
            .collect();
        let rows = if req.pool {
            vec![pool(&rows, strategy)]
        } else {
            rows
        };
        let data: Vec<u8> = rows
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let meta = TensorMeta::new(
            vec![rows.len() as u64, EMBEDDING_DIM],
            DType::Float32,
            Some(format!("layer {layer}")),
        )
        .expect("a valid shape");
        embeddings.push(Tensor::new(meta, data.into()).expect("matching bytes"));
    }
    let resp = pb::EmbedResponse {
        metadata: embeddings
            .iter()
            .map(|t| pbt::TensorMeta::from(t.meta()))
            .collect(),
        embeddings: embeddings.iter().map(pbt::Tensor::from).collect(),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::protocol::CONTENT_TYPE_PROTO,
        )],
        resp.encode_to_vec(),
    )
        .into_response()
}

fn floats(t: &Tensor) -> Vec<f32> {
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn pool(rows: &[Vec<f32>], strategy: &str) -> Vec<f32> {
    let width = rows[0].len();
    (0..width)
        .map(|i| match strategy {
            "first" => rows[0][i],
            "max" => rows.iter().map(|r| r[i]).fold(f32::NEG_INFINITY, f32::max),
            _ => rows.iter().map(|r| r[i]).sum::<f32>() / rows.len() as f32,
        })
        .collect()
}

struct ChatState {
    requests: RequestMessages,
    current: Option<Generation>,
    count: u32,
    ended: bool,
}

/// `POST /quill.inference.v1.InferenceService/Chat`: each `GenerateRequest` of the
/// request stream starts a generation (its `sequence_id` is the request's 1-based
/// index) streamed as `GenerateResponse`s as soon as the request has arrived; END_STREAM
/// after the request's END_STREAM and the last generation. A malformed request message
/// or a truncated request stream aborts the response without END_STREAM.
pub async fn chat(headers: HeaderMap, body: Body) -> Response {
    let body = match RequestBody::new(&headers, body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let state = ChatState {
        requests: RequestMessages::new(body),
        current: None,
        count: 0,
        ended: false,
    };
    stream_response(CONTENT_TYPE_STREAM, chat_frames(state))
}

fn chat_frames(state: ChatState) -> impl Stream<Item = Result<Bytes, Abort>> + Send {
    stream::unfold(state, |mut st| async move {
        loop {
            if let Some(g) = st.current.as_mut() {
                if let Some(resp) = g.next_response() {
                    return Some((Ok(frame(&resp)), st));
                }
                st.current = None;
            }
            if st.ended {
                return None;
            }
            let next = match st.requests.next().await {
                Ok(Some(m)) => {
                    st.count += 1;
                    pb::GenerateRequest::decode(m)
                        .map_err(|_| Abort("malformed GenerateRequest in the chat stream"))
                        .and_then(|req| {
                            Generation::new(&req, st.count)
                                .map_err(|_| Abort("invalid GenerateRequest"))
                        })
                }
                Ok(None) => {
                    st.ended = true;
                    return Some((Ok(Bytes::from_static(&END_STREAM_FRAME)), st));
                }
                Err(abort) => Err(abort),
            };
            match next {
                Ok(g) => st.current = Some(g),
                Err(abort) => {
                    st.ended = true;
                    return Some((Err(abort), st));
                }
            }
        }
    })
}
