//! Quill: one Rust engine for ML-inference clients.
//!
//! The core holds every fact once — the dtype table ([`DType`]), tensors ([`Tensor`]),
//! tokens ([`Token`], [`TokenBatch`]), the wire codecs ([`frame`]), Problem Details
//! ([`Problem`]) and the one error type ([`QuillError`]). Kotlin and Swift bindings are
//! generated from the uniffi exports on these types; the Python face (feature `python`)
//! wraps the same objects.
//!
//! ```
//! use quill::{DType, Tensor, Token, TokenBatch};
//! let t = Tensor::from_bytes(&[0u8; 24], vec![2, 3], DType::Float32, Some("x".into())).unwrap();
//! assert_eq!(Tensor::decode_frames(&t.encode()).unwrap().shape(), vec![2, 3]);
//! let b = TokenBatch { tokens: vec![Token::with_text(1, "hi", 0, None)], ..Default::default() };
//! assert_eq!(TokenBatch::decode(&b.encode().unwrap()).unwrap().text(), "hi");
//! ```

// uniffi hands errors across the FFI by value, so the Problem Details payload of
// `QuillError::Status` stays inline instead of boxed.
#![allow(clippy::result_large_err)]

pub mod client;
pub mod dtype;
pub mod error;
pub mod frame;
pub mod problem;
pub mod protocol;
#[cfg(feature = "server")]
pub mod server;
pub mod tensor;
pub mod token;

#[cfg(feature = "python")]
mod python;

pub use client::{ClientConfig, MessageStream, QuillClient};
pub use dtype::DType;
pub use error::{QuillError, Result};
pub use problem::Problem;
pub use tensor::{Device, Tensor, TensorMeta};
pub use token::{Token, TokenBatch};

/// The library version (from Cargo.toml, the single source of the version number:
/// Python's `quill.__version__` and the Kotlin/Swift packages read it too).
///
/// ```
/// assert_eq!(quill::version(), env!("CARGO_PKG_VERSION"));
/// ```
#[uniffi::export]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

uniffi::setup_scaffolding!();
