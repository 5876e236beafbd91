//! The wire codecs, shared by the client and the bundled server.
//!
//! - [`stream`]: varint-length stream frames carrying the messages of streaming calls
//!   (protocol.md §3).
//! - [`tensor`]: 9-byte-header tensor frames carrying tensors and token batches as a
//!   body of their own (protocol.md §6), and [`tensor::TensorReader`], the one place
//!   that decides when a body of tensor frames holds exactly one complete tensor.
//! - [`zstd`]: `Content-Encoding` / `Accept-Encoding` parsing, the incremental,
//!   size-capped body decoder and the encoders (protocol.md §5).
//!
//! Every decoder here is incremental (bytes pushed in any chunking) and reports bad
//! input as a [`QuillError`](crate::QuillError), never a panic; `fuzz/` drives each one.

mod buffer;
mod prefault;
mod spare;
#[cfg(feature = "jvm")]
pub(crate) use buffer::receive_buffer;
pub(crate) use buffer::ReceiveBuffer;
pub mod stream;
pub mod tensor;
pub mod zstd;
