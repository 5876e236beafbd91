//! The native library of the Kotlin and Swift bindings. The whole foreign surface is
//! the core's `src/ffi/` (feature `ffi`); linking the core in is all this crate does:
//! a cdylib exports the uniffi functions and metadata of every crate it links.

pub use quill;
