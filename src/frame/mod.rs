//! The two framings of the protocol.
//!
//! - [`stream`]: varint-length stream frames carrying the messages of streaming calls
//!   (protocol.md §3).
//! - [`tensor`]: 9-byte-header tensor frames carrying tensors and token batches as a
//!   body of their own (protocol.md §6).

pub mod stream;
pub mod tensor;
