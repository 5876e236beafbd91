//! The protobuf messages of protocol.md §9 (`quill.tensor.v1`, `quill.inference.v1`),
//! generated from `proto/` into `gen/` by `scripts/protos` (prost, with protox as the
//! compiler: no system `protoc`; `scripts/protos --check` is the drift check), and their
//! conversions to and from the core types (`convert`).
//!
//! ```
//! use prost::Message;
//! use quill::proto::inference::v1::GenerateRequest;
//! let req = GenerateRequest { input_ids: vec![1, 2], max_new_tokens: Some(8), ..Default::default() };
//! assert_eq!(req.encode_to_vec(), [0x0a, 0x02, 0x01, 0x02, 0x10, 0x08]);
//! ```

mod convert;

pub use convert::{token_batch_from_proto, token_batch_to_proto};

/// `quill.tensor.v1`.
pub mod tensor {
    /// Version 1 of the package.
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        include!("gen/quill.tensor.v1.rs");
    }
}

/// `quill.inference.v1`.
pub mod inference {
    /// Version 1 of the package.
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        include!("gen/quill.inference.v1.rs");
    }
}
