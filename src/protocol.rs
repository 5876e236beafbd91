//! Protocol constants and limits (protocol.md §3, §5, §6, §8): the single source of
//! every number the codecs, the client and the server enforce.

/// Largest payload of one varint stream frame, and of one tensor frame (4 MiB).
pub const MAX_FRAME_PAYLOAD: usize = 4 * 1024 * 1024;
/// Longest accepted LEB128 varint, in bytes.
pub const MAX_VARINT_LEN: usize = 10;
/// Default payload size of a TENSOR_PAYLOAD frame when sending.
pub const TENSOR_PAYLOAD_CHUNK: usize = 64 * 1024;
/// Payload size of the TENSOR_PAYLOAD frames the client uploads. The HTTP/2 library
/// writes one DATA frame per socket write, and each payload frame is one DATA frame:
/// 64 KiB frames cost a 64 MiB upload 1,024 writes against HTTP/1.1's ~150; 256 KiB
/// frames (the largest DATA frame the bundled server accepts) make a quarter of them
/// (docs/performance.md has the rates). Well under the 4 MiB frame limit that existing
/// Quill servers enforce.
pub const TENSOR_UPLOAD_CHUNK: usize = 256 * 1024;
/// Length of a tensor-frame header: type, 4 reserved bytes, u32 length.
pub const TENSOR_FRAME_HEADER_LEN: usize = 9;
/// Largest number of tensor dimensions (the `ndim` byte).
pub const MAX_NDIM: usize = 255;
/// Longest token text in bytes, and largest number of tokens in a batch.
pub const MAX_TOKEN_TEXT: usize = u16::MAX as usize;
pub const MAX_BATCH_TOKENS: usize = u16::MAX as usize;
/// Request bodies at least this long are zstd-compressed when compression is on.
pub const COMPRESSION_THRESHOLD: usize = 1024;
/// zstd level used for requests.
pub const COMPRESSION_LEVEL: i32 = 3;
/// Default cap on a decoded (decompressed) response body, and on a buffered unary body.
pub const DEFAULT_MAX_DECODED_SIZE: u64 = 64 * 1024 * 1024;
/// Longest call or idle timeout a client accepts (30 days); 0 means none. A bound keeps
/// deadline arithmetic exact and turns a unit mistake (seconds × 1000 twice) into an
/// error instead of a call that never ends.
pub const MAX_TIMEOUT_MS: u64 = 30 * 24 * 3600 * 1000;

/// Varint stream frame flags (§3).
pub mod flags {
    pub const DATA: u8 = 0x01;
    pub const END_STREAM: u8 = 0x02;
    pub const CANCEL: u8 = 0x04;
    pub const CREDIT: u8 = 0x08;
}

/// Tensor frame types (§6).
pub mod tensor_frame {
    pub const PROTO_MSG: u8 = 0x01;
    pub const END_STREAM: u8 = 0x02;
    pub const CANCEL: u8 = 0x04;
    pub const CREDIT: u8 = 0x08;
    pub const TENSOR_META: u8 = 0x10;
    pub const TENSOR_PAYLOAD: u8 = 0x11;
    pub const TOKEN_BATCH: u8 = 0x20;
}

/// Content types (§1, §4).
pub const CONTENT_TYPE_PROTO: &str = "application/proto";
pub const CONTENT_TYPE_JSON: &str = "application/json";
pub const CONTENT_TYPE_PROBLEM: &str = "application/problem+json";
/// Transport profiles (§1): `Prefer: prism=<profiles>` lists the ones a client really
/// speaks, and a server may name the one it chose in `Selected-Prism`.
pub const PRISM_CLASSIC: &str = "classic";
/// HTTP/2.
pub const PRISM_TURBO: &str = "turbo";
/// HTTP/3 over QUIC.
pub const PRISM_HYPER: &str = "hyper";
/// The header a server may name its chosen profile in (optional, never required).
pub const SELECTED_PRISM_HEADER: &str = "selected-prism";

/// The header naming a request for the server's operators. Not part of the protocol:
/// a header many servers and proxies set or echo, which a failed call reports
/// ([`Problem::request_id`](crate::Problem::request_id)).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Client retry policy (§4): exponential backoff from this base, doubled per attempt…
pub const RETRY_BACKOFF_BASE_MS: u64 = 50;
/// …capped at this, with full jitter (a uniform wait between zero and the backoff).
pub const RETRY_BACKOFF_CAP_MS: u64 = 2_000;
/// A `Retry-After` longer than this is not waited for: the error is returned instead.
pub const MAX_RETRY_AFTER_MS: u64 = 60_000;
/// Largest request body a server accepts, on the wire and after zstd decoding
/// (256 MiB): the bundled server's limit, a 413 beyond it.
pub const MAX_REQUEST_BODY: u64 = 256 * 1024 * 1024;

/// Problem Details (§4): the prefix of Quill's `type` URIs (`urn:quill:error:<status>`)
/// and the two Quill extension members carrying a structured protobuf detail.
pub mod problem_fields {
    pub const TYPE_PREFIX: &str = "urn:quill:error:";
    pub const PROTO_TYPE: &str = "quill_proto_type";
    pub const PROTO_DETAIL_BASE64: &str = "quill_proto_detail_base64";
}

/// Most bytes of an error (non-2xx) response body the client reads for Problem Details.
pub const MAX_ERROR_BODY: usize = 64 * 1024;
