//! uniffi mirrors of the core's plain types (`#[uniffi::remote]`): the field lists
//! must match the core definitions exactly, which the compiler checks, and carry the
//! defaults and doc comments the bindings show. Records used only by the bindings live
//! here too.

use crate::client::{ClientConfig, Http2Settings, HttpVersion};
use crate::dtype::DType;
use crate::error::QuillError;
use crate::inference::{EmbedRequest, GenerateRequest, GenerateResponse, StreamTiming};
use crate::problem::Problem;
use crate::tensor::{Device, TensorMeta};
use crate::token::{Token, TokenBatch};
use std::collections::HashMap;
use std::sync::Arc;

/// Element type of a tensor (protocol §7).
#[uniffi::remote(Enum)]
pub enum DType {
    Float32,
    Float16,
    Bfloat16,
    Float64,
    Int8,
    Int32,
    Int64,
    Uint8,
    Bool,
}

/// Where a tensor lives (protocol §7: 0 = cpu, 1 = cuda).
#[uniffi::remote(Enum)]
pub enum Device {
    Cpu,
    Cuda,
}

/// Shape, dtype, name and device of a tensor, without its data.
#[uniffi::remote(Record)]
pub struct TensorMeta {
    pub shape: Vec<u64>,
    pub dtype: DType,
    pub name: Option<String>,
    pub device: Device,
}

/// One generated token.
#[uniffi::remote(Record)]
pub struct Token {
    pub id: u32,
    pub position: u32,
    #[uniffi(default = None)]
    pub text: Option<String>,
    #[uniffi(default = None)]
    pub logprob: Option<f32>,
    #[uniffi(default = false)]
    pub is_special: bool,
}

/// A batch of tokens of one sequence; `metadata` is not encoded on the wire.
#[uniffi::remote(Record)]
pub struct TokenBatch {
    pub tokens: Vec<Token>,
    #[uniffi(default = None)]
    pub sequence_id: Option<u32>,
    #[uniffi(default = false)]
    pub is_final: bool,
    // uniffi 0.32's Kotlin generator refuses `default = []` on a map.
    #[uniffi(default)]
    pub metadata: HashMap<String, String>,
}

/// `quill.inference.v1.GenerateRequest`: the prompt's token ids and the sampling
/// settings (unset: the server's defaults).
#[uniffi::remote(Record)]
pub struct GenerateRequest {
    pub input_ids: Vec<u32>,
    #[uniffi(default = None)]
    pub max_new_tokens: Option<u32>,
    #[uniffi(default = None)]
    pub temperature: Option<f32>,
    #[uniffi(default = None)]
    pub top_p: Option<f32>,
    #[uniffi(default = None)]
    pub top_k: Option<u32>,
    #[uniffi(default = false)]
    pub stream_embeddings: bool,
    #[uniffi(default = [])]
    pub stop_token_ids: Vec<u32>,
    #[uniffi(default = None)]
    pub repetition_penalty: Option<f32>,
}

/// `quill.inference.v1.EmbedRequest`: layers to read (empty: the last) and pooling.
#[uniffi::remote(Record)]
pub struct EmbedRequest {
    pub input_ids: Vec<u32>,
    #[uniffi(default = [])]
    pub layers: Vec<i32>,
    #[uniffi(default = false)]
    pub pool: bool,
    #[uniffi(default = None)]
    pub pool_strategy: Option<String>,
}

/// One response of a generate or chat stream.
#[uniffi::remote(Record)]
pub struct GenerateResponse {
    pub tokens: TokenBatch,
    pub attention_mask: Vec<bool>,
    pub embedding: Option<Arc<crate::tensor::Tensor>>,
    pub total_generated: u32,
    pub is_complete: bool,
    pub finish_reason: Option<String>,
}

/// Timing of a generate or chat stream (milliseconds from the start of the call).
#[uniffi::remote(Record)]
pub struct StreamTiming {
    pub tokens: u64,
    pub responses: u64,
    pub time_to_first_token_ms: Option<f64>,
    pub inter_token_p50_ms: Option<f64>,
    pub inter_token_p99_ms: Option<f64>,
    pub elapsed_ms: Option<f64>,
    pub tokens_per_second: Option<f64>,
}

/// Decoded RFC 7807 Problem Details of a failed call (protocol §4).
#[uniffi::remote(Record)]
pub struct Problem {
    pub status: u16,
    pub problem_type: Option<String>,
    pub title: Option<String>,
    pub detail: Option<String>,
    pub instance: Option<String>,
    pub proto_type: Option<String>,
    pub proto_detail: Option<Vec<u8>>,
    pub retry_after_ms: Option<u64>,
    pub body: String,
    pub request_id: Option<String>,
}

/// The error of every fallible call: a Kotlin sealed exception class, a Swift `Error`.
#[uniffi::remote(Error)]
pub enum QuillError {
    InvalidArgument { reason: String },
    UnsupportedDType { reason: String },
    Decode { reason: String },
    Connection { reason: String },
    Timeout { reason: String },
    Status { problem: Problem },
    Stream { reason: String },
    Protocol { reason: String },
    Cancelled { reason: String },
}

/// Settings of a client, fixed at construction; see the Rust `ClientConfig` docs.
#[uniffi::remote(Record)]
pub struct ClientConfig {
    pub base_url: String,
    #[uniffi(default = 30000)]
    pub timeout_ms: u64,
    #[uniffi(default = false)]
    pub enable_compression: bool,
    #[uniffi(default = 67108864)]
    pub max_decoded_size: u64,
    #[uniffi(default = None)]
    pub idle_timeout_ms: Option<u64>,
    #[uniffi(default = 0)]
    pub max_retries: u32,
    #[uniffi(default = None)]
    pub ca_cert_pem: Option<Vec<u8>>,
    /// TLS server name (SNI and certificate name) when it is not the URL's host.
    #[uniffi(default = None)]
    pub tls_server_name: Option<String>,
    #[uniffi(default = None)]
    pub user_agent: Option<String>,
    #[uniffi(default = 100)]
    pub max_connections: u32,
    /// `AUTO`/`.auto` unless you need one version: uniffi gives enum fields no default.
    pub http_version: HttpVersion,
    #[uniffi(default)]
    pub http2: Http2Settings,
}

/// Which HTTP a client speaks (`AUTO`: h2 or http/1.1 by ALPN over TLS, HTTP/1.1 over
/// cleartext; `HTTP2` over cleartext is h2c with prior knowledge; `HTTP3` is QUIC, for
/// `https://` URLs only).
#[uniffi::remote(Enum)]
pub enum HttpVersion {
    Auto,
    Http1,
    Http2,
    Http3,
}

/// HTTP/2 connection tuning; see the Rust `Http2Settings` docs.
#[uniffi::remote(Record)]
pub struct Http2Settings {
    #[uniffi(default = Some(30000))]
    pub keep_alive_interval_ms: Option<u64>,
    #[uniffi(default = 20000)]
    pub keep_alive_timeout_ms: u64,
    #[uniffi(default = None)]
    pub initial_stream_window: Option<u32>,
    #[uniffi(default = None)]
    pub initial_connection_window: Option<u32>,
    #[uniffi(default = false)]
    pub adaptive_window: bool,
}

/// One configured header as shown by `headers()` (secret values redacted).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HeaderEntry {
    pub name: String,
    pub value: String,
}

/// One row of the dtype table (protocol §7), read in one call: the properties of the
/// Kotlin and Swift extras come from here.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DTypeInfo {
    /// Canonical lower-case name (`"float32"`, `"bool"`).
    pub name: String,
    /// Number used on the wire.
    pub wire_value: u8,
    /// Size of one element in bytes.
    pub element_size: u32,
    pub is_float: bool,
    pub is_integer: bool,
    /// Floats and signed integers.
    pub is_signed: bool,
}
