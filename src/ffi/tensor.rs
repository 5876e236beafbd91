//! `Tensor` (an object: its bytes stay in Rust) and `TensorMeta` for Kotlin and Swift.

use std::sync::Arc;

use bytes::Bytes;

use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::{Tensor, TensorMeta};

/// A tensor: metadata plus little-endian, row-major element bytes in a shared buffer.
#[uniffi::remote(Object)]
pub struct Tensor;

#[uniffi::export]
impl Tensor {
    /// A tensor from element bytes (copied once into the shared buffer).
    #[uniffi::constructor(name = "from_bytes")]
    fn ffi_from_bytes(
        data: &[u8],
        shape: Vec<u64>,
        dtype: DType,
        name: Option<String>,
    ) -> Result<Arc<Tensor>> {
        let meta = TensorMeta::new(shape, dtype, name)?;
        // Check before copying so a wrong length never costs a large allocation.
        meta.check_data_len(data.len())?;
        Tensor::new(meta, Bytes::copy_from_slice(data)).map(Arc::new)
    }

    /// A zero-filled tensor.
    #[uniffi::constructor(name = "zeros")]
    fn ffi_zeros(shape: Vec<u64>, dtype: DType, name: Option<String>) -> Result<Arc<Tensor>> {
        Tensor::zeros(TensorMeta::new(shape, dtype, name)?).map(Arc::new)
    }

    /// Decode a tensor from tensor frames (protocol §6).
    #[uniffi::constructor(name = "decode")]
    fn ffi_decode(frames: &[u8]) -> Result<Arc<Tensor>> {
        Tensor::decode(frames).map(Arc::new)
    }

    /// Encode as TENSOR_META, TENSOR_PAYLOAD… (64 KiB each), END_STREAM.
    #[uniffi::method(name = "encode")]
    fn ffi_encode(&self) -> Vec<u8> {
        self.encode()
    }

    /// The metadata record.
    #[uniffi::method(name = "meta")]
    fn ffi_meta(&self) -> TensorMeta {
        self.meta().clone()
    }

    #[uniffi::method(name = "shape")]
    fn ffi_shape(&self) -> Vec<u64> {
        self.shape().to_vec()
    }

    #[uniffi::method(name = "dtype")]
    fn ffi_dtype(&self) -> DType {
        self.dtype()
    }

    #[uniffi::method(name = "name")]
    fn ffi_name(&self) -> Option<String> {
        self.name().map(str::to_owned)
    }

    #[uniffi::method(name = "num_elements")]
    fn ffi_num_elements(&self) -> u64 {
        self.num_elements()
    }

    #[uniffi::method(name = "size_bytes")]
    fn ffi_size_bytes(&self) -> u64 {
        self.size_bytes()
    }

    /// A copy of the element bytes.
    #[uniffi::method(name = "to_bytes")]
    fn ffi_to_bytes(&self) -> Vec<u8> {
        self.data().to_vec()
    }

    /// The address of the element bytes (`size_bytes()` long), which never move and are
    /// never written while this object lives. For the Swift extras' zero-copy
    /// `withUnsafeBytes` (uniffi hands byte buffers out only as copies); not meant to
    /// be called directly.
    #[uniffi::method(name = "data_address")]
    fn ffi_data_address(&self) -> u64 {
        self.data().as_ptr() as usize as u64
    }

    /// Whether both tensors have the same metadata and bytes.
    #[uniffi::method(name = "equals")]
    fn ffi_equals(&self, other: &Tensor) -> bool {
        self == other
    }
}

#[uniffi::export]
impl TensorMeta {
    /// Product of the dims (1 for a scalar), overflow checked.
    #[uniffi::method(name = "num_elements")]
    fn ffi_num_elements(&self) -> Result<u64> {
        self.num_elements()
    }

    /// Byte size of the data this metadata describes.
    #[uniffi::method(name = "size_bytes")]
    fn ffi_size_bytes(&self) -> Result<u64> {
        self.size_bytes()
    }
}
