//! `tensor.v1.TensorService`: Upload (a tensor-frame request body, decoded as it
//! arrives) and Download (a generated tensor, streamed out frame by frame).

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use serde_json::json;

use super::body::{
    infallible_stream_response, json_response, read_json, RequestBody, CONTENT_TYPE_TENSOR,
};
use super::hash::fnv1a64;
use super::problem::bad_request;
use super::MAX_REQUEST_BODY;
use crate::codec::tensor::{encode_meta, frame_header, TensorReader};
use crate::protocol::{tensor_frame, TENSOR_PAYLOAD_CHUNK};
use crate::{DType, TensorMeta};

/// Largest tensor Download generates (1 GiB).
pub const MAX_DOWNLOAD_BYTES: u64 = 1 << 30;
/// Period of the `ramp` pattern: element byte `i` is `i % 251`.
const RAMP_PERIOD: usize = 251;

/// `POST /tensor.v1.TensorService/Upload`: reassembles one tensor and answers its
/// shape, dtype, name, size and FNV-1a 64 of its element bytes.
pub async fn upload(headers: HeaderMap, body: Body) -> Response {
    let mut body = match RequestBody::new(&headers, body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let mut reader = TensorReader::with_limit(MAX_REQUEST_BODY, "the server's request-size limit");
    loop {
        match body.chunk().await {
            Ok(Some(chunk)) => {
                if let Err(e) = reader.push(&chunk) {
                    return bad_request(format!("malformed tensor frames: {e}"));
                }
            }
            Ok(None) => break,
            Err(e) => return e.into_response(),
        }
    }
    let t = match reader.finish() {
        Ok(t) => t,
        Err(e) => return bad_request(format!("malformed tensor frames: {e}")),
    };
    let data = t.data().clone();
    let hash = tokio::task::spawn_blocking(move || fnv1a64(&data))
        .await
        .unwrap_or_default();
    json_response(&json!({
        "shape": t.meta().shape,
        "dtype": t.dtype().name(),
        "name": t.meta().name,
        "size_bytes": t.size_bytes(),
        "fnv1a64": format!("{hash:016x}"),
    }))
}

/// `POST /tensor.v1.TensorService/Sink`: reads the request body (zstd-decoded when it
/// says so) and drops it, answering `{"received_bytes": N}`. The upload benchmark's
/// route: no per-byte work on the server, so the figure is the client's and the
/// transport's, not Upload's reassembly and hashing.
pub async fn sink(headers: HeaderMap, body: Body) -> Response {
    let mut body = match RequestBody::new(&headers, body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let mut received = 0u64;
    loop {
        match body.chunk().await {
            Ok(Some(chunk)) => received += chunk.len() as u64,
            Ok(None) => break,
            Err(e) => return e.into_response(),
        }
    }
    json_response(&json!({ "received_bytes": received }))
}

fn default_dtype() -> String {
    "uint8".to_owned()
}
fn default_pattern() -> String {
    "ramp".to_owned()
}

#[derive(Debug, Deserialize)]
struct DownloadRequest {
    shape: Vec<u64>,
    #[serde(default = "default_dtype")]
    dtype: String,
    #[serde(default = "default_pattern")]
    pattern: String,
    #[serde(default)]
    name: Option<String>,
}

/// `POST /tensor.v1.TensorService/Download`: TENSOR_META, 64 KiB TENSOR_PAYLOAD frames
/// whose element byte `i` is `i % 251`, END_STREAM — generated lazily, never held
/// whole in memory.
pub async fn download(headers: HeaderMap, body: Body) -> Response {
    let req: DownloadRequest = match read_json(&headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    if req.pattern != "ramp" {
        return bad_request(format!(
            "unknown pattern {:?}; only \"ramp\" is supported",
            req.pattern
        ));
    }
    let dtype = match DType::from_name(&req.dtype) {
        Ok(d) => d,
        Err(e) => return bad_request(e.to_string()),
    };
    let meta = match TensorMeta::new(req.shape, dtype, req.name) {
        Ok(m) => m,
        Err(e) => return bad_request(e.to_string()),
    };
    let size = match meta.size_bytes() {
        Ok(s) if s <= MAX_DOWNLOAD_BYTES => s as usize,
        Ok(s) => {
            return bad_request(format!(
                "tensor of {s} bytes is over the {MAX_DOWNLOAD_BYTES}-byte limit"
            ))
        }
        Err(e) => return bad_request(e.to_string()),
    };
    let meta_payload = match encode_meta(&meta) {
        Ok(m) => m,
        Err(e) => return bad_request(e.to_string()),
    };
    let mut head = frame_header(tensor_frame::TENSOR_META, meta_payload.len())
        .expect("meta fits a frame")
        .to_vec();
    head.extend_from_slice(&meta_payload);
    // One shared pattern buffer; every payload chunk is a zero-copy slice of it.
    let pattern: Bytes = (0..TENSOR_PAYLOAD_CHUNK + RAMP_PERIOD)
        .map(|i| (i % RAMP_PERIOD) as u8)
        .collect::<Vec<u8>>()
        .into();
    let payload_frames = (0..size.div_ceil(TENSOR_PAYLOAD_CHUNK)).flat_map(move |k| {
        let off = k * TENSOR_PAYLOAD_CHUNK;
        let len = TENSOR_PAYLOAD_CHUNK.min(size - off);
        let start = off % RAMP_PERIOD;
        let header = frame_header(tensor_frame::TENSOR_PAYLOAD, len).expect("chunk fits a frame");
        [
            Bytes::copy_from_slice(&header),
            pattern.slice(start..start + len),
        ]
    });
    let end = frame_header(tensor_frame::END_STREAM, 0).expect("empty frame");
    let parts = std::iter::once(Bytes::from(head))
        .chain(payload_frames)
        .chain(std::iter::once(Bytes::copy_from_slice(&end)));
    infallible_stream_response(CONTENT_TYPE_TENSOR, stream::iter(parts))
}
