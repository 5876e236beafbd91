//! `inference.v1.LLMService`: Generate (JSON unary), GenerateStream (server streaming
//! of TokenBatch frames) and Embed (a tensor-frame body), all backed by the demo
//! generator — not a language model.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::stream;
use serde::Deserialize;
use serde_json::json;

use super::body::{
    infallible_stream_response, json_response, read_json, CONTENT_TYPE_STREAM, CONTENT_TYPE_TENSOR,
};
use super::generator::Sampler;
use super::hash::fnv1a64;
use super::problem::bad_request;
use crate::codec::stream::{encode_data, END_STREAM_FRAME};
use crate::codec::tensor::encode_tensor_parts;
use crate::protocol::TENSOR_PAYLOAD_CHUNK;
use crate::{DType, Tensor, TensorMeta, TokenBatch};

/// Most tokens one Generate call may ask for.
pub const MAX_TOKENS: u32 = 4096;
/// Largest `batch_size` of GenerateStream.
pub const MAX_BATCH_SIZE: u32 = 4096;
/// Largest per-token `delay_ms`.
pub const MAX_DELAY_MS: u64 = 60_000;
/// Largest embedding dimension.
pub const MAX_DIM: u64 = 1 << 24;

fn default_max_tokens() -> u32 {
    16
}
fn default_temperature() -> f64 {
    1.0
}
fn default_batch_size() -> u32 {
    4
}
fn default_sequence_id() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
struct GenerateRequest {
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    embedding: Option<Vec<f64>>,
    #[serde(default = "default_max_tokens")]
    max_tokens: u32,
    #[serde(default = "default_temperature")]
    temperature: f64,
    #[serde(default)]
    seed: Option<u64>,
    // GenerateStream only.
    #[serde(default)]
    delay_ms: u64,
    #[serde(default = "default_batch_size")]
    batch_size: u32,
    #[serde(default = "default_sequence_id")]
    sequence_id: u32,
}

impl GenerateRequest {
    #[allow(clippy::result_large_err)]
    fn sampler(&self) -> Result<Sampler, Response> {
        if self.max_tokens > MAX_TOKENS {
            return Err(bad_request(format!(
                "max_tokens is {}; at most {MAX_TOKENS}",
                self.max_tokens
            )));
        }
        Sampler::new(
            self.prompt.as_deref().unwrap_or(""),
            self.embedding.as_deref().unwrap_or(&[]),
            self.temperature,
            self.seed,
        )
        .map_err(bad_request)
    }
}

/// `POST /inference.v1.LLMService/Generate`.
pub async fn generate(headers: HeaderMap, body: Body) -> Response {
    let req: GenerateRequest = match read_json(&headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let mut sampler = match req.sampler() {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let tokens: Vec<crate::Token> = (0..req.max_tokens).map(|_| sampler.next_token()).collect();
    let text: String = tokens.iter().filter_map(|t| t.text.as_deref()).collect();
    json_response(&json!({
        "tokens": tokens,
        "text": text,
        "finish_reason": "length",
    }))
}

struct StreamState {
    sampler: Sampler,
    remaining: u32,
    batch_size: u32,
    delay: Duration,
    sequence_id: u32,
    done: bool,
}

/// `POST /inference.v1.LLMService/GenerateStream`: DATA frames of TokenBatches, the
/// last one `is_final`, then END_STREAM. Each batch is written as soon as its tokens
/// are generated (after `delay_ms` per token).
pub async fn generate_stream(headers: HeaderMap, body: Body) -> Response {
    let req: GenerateRequest = match read_json(&headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let sampler = match req.sampler() {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    if req.batch_size == 0 || req.batch_size > MAX_BATCH_SIZE {
        return bad_request(format!(
            "batch_size is {}; it must be in 1..={MAX_BATCH_SIZE}",
            req.batch_size
        ));
    }
    if req.delay_ms > MAX_DELAY_MS {
        return bad_request(format!(
            "delay_ms is {}; at most {MAX_DELAY_MS}",
            req.delay_ms
        ));
    }
    let state = StreamState {
        sampler,
        remaining: req.max_tokens,
        batch_size: req.batch_size,
        delay: Duration::from_millis(req.delay_ms),
        sequence_id: req.sequence_id,
        done: false,
    };
    let frames = stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let n = st.remaining.min(st.batch_size);
        let mut batch = TokenBatch::new(Some(st.sequence_id));
        for _ in 0..n {
            if !st.delay.is_zero() {
                tokio::time::sleep(st.delay).await;
            }
            batch.tokens.push(st.sampler.next_token());
        }
        st.remaining -= n;
        batch.is_final = st.remaining == 0;
        // Token texts are single corpus words: encoding cannot fail.
        let payload = batch.encode().expect("demo batches are encodable");
        let mut chunk = encode_data(&payload).expect("demo batches fit in a frame");
        if batch.is_final {
            chunk.extend_from_slice(&END_STREAM_FRAME);
            st.done = true;
        }
        Some((Bytes::from(chunk), st))
    });
    infallible_stream_response(CONTENT_TYPE_STREAM, frames)
}

fn default_dim() -> u64 {
    768
}

#[derive(Debug, Deserialize)]
struct EmbedRequest {
    #[serde(default)]
    text: String,
    #[serde(default = "default_dim")]
    dim: u64,
}

/// A deterministic unit-length float32 vector of `dim` elements for `text`.
pub fn embedding_bytes(text: &str, dim: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(fnv1a64(text.as_bytes()));
    let values: Vec<f32> = (0..dim).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let norm = values
        .iter()
        .map(|v| (*v as f64) * (*v as f64))
        .sum::<f64>()
        .sqrt();
    let scale = if norm > 0.0 { (1.0 / norm) as f32 } else { 0.0 };
    let mut out = Vec::with_capacity(dim * 4);
    for v in values {
        out.extend_from_slice(&(v * scale).to_le_bytes());
    }
    out
}

/// The tensor frames of a `[1, dim]` float32 tensor named `embedding`.
#[allow(clippy::result_large_err)] // QuillError is the core's error type
fn embedding_frames(dim: u64, data: Vec<u8>) -> crate::Result<Vec<Bytes>> {
    let meta = TensorMeta::new(vec![1, dim], DType::Float32, Some("embedding".into()))?;
    let tensor = Tensor::new(meta, data.into())?;
    encode_tensor_parts(&tensor, TENSOR_PAYLOAD_CHUNK)
}

/// `POST /inference.v1.LLMService/Embed`: tensor frames of a float32 `[1, dim]`
/// tensor named `embedding`.
pub async fn embed(headers: HeaderMap, body: Body) -> Response {
    let req: EmbedRequest = match read_json(&headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if req.dim == 0 || req.dim > MAX_DIM {
        return bad_request(format!("dim is {}; it must be in 1..={MAX_DIM}", req.dim));
    }
    let dim = req.dim as usize;
    let text = req.text;
    let data = match tokio::task::spawn_blocking(move || embedding_bytes(&text, dim)).await {
        Ok(d) => d,
        Err(e) => {
            return super::problem::problem(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("embedding failed: {e}"),
            )
        }
    };
    match embedding_frames(req.dim, data) {
        Ok(parts) => infallible_stream_response(CONTENT_TYPE_TENSOR, stream::iter(parts)),
        Err(e) => {
            super::problem::problem(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}
