//! Writes the Rust code of the `.proto` files under `proto/` into `src/proto/gen`, or
//! into the folder given as the first argument (the drift check of `scripts/protos`).
//! protox compiles the files in-process, so no system `protoc` is needed.

use std::error::Error;
use std::path::PathBuf;

/// The files compiled, relative to `proto/`.
const PROTOS: [&str; 2] = [
    "quill/tensor/v1/tensor.proto",
    "quill/inference/v1/inference.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("src/proto/gen"));
    let descriptors = protox::compile(PROTOS, [root.join("proto")])?;
    std::fs::create_dir_all(&out)?;
    prost_build::Config::new()
        .out_dir(&out)
        // `bytes` fields as `bytes::Bytes`: decoding from a `Bytes` body then slices it
        // instead of copying tensor data.
        .bytes(["."])
        .compile_fds(descriptors)?;
    println!("generated {} into {}", PROTOS.join(", "), out.display());
    Ok(())
}
