//! `TensorMeta` and `Tensor`: shape, dtype and a shared, immutable byte buffer.
//!
//! Element bytes are little-endian and row-major. The buffer is a [`bytes::Bytes`], so
//! cloning a tensor, slicing it into frames or handing it to another thread never
//! copies its data.

use bytes::Bytes;

use crate::dtype::DType;
use crate::error::{QuillError, Result};
use crate::protocol::MAX_NDIM;

/// Where a tensor lives (protocol.md §7: 0 = cpu, 1 = cuda).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
}

impl Device {
    pub fn wire(self) -> u8 {
        match self {
            Device::Cpu => 0,
            Device::Cuda => 1,
        }
    }

    pub fn from_wire(value: u8) -> Result<Device> {
        match value {
            0 => Ok(Device::Cpu),
            1 => Ok(Device::Cuda),
            v => Err(QuillError::decode(format!(
                "unknown device number {v} (expected 0 = cpu or 1 = cuda)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }

    /// The device of a name (`"cpu"`, `"cuda"`).
    pub fn from_name(name: &str) -> Result<Device> {
        [Device::Cpu, Device::Cuda]
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| QuillError::invalid(format!("unknown device {name:?} (cpu or cuda)")))
    }
}

/// Shape, dtype, name and device of a tensor, without its data.
///
/// ```
/// use quill::{DType, TensorMeta};
/// let meta = TensorMeta::new(vec![1, 768], DType::Float32, Some("embedding".into())).unwrap();
/// assert_eq!(meta.num_elements().unwrap(), 768);
/// assert_eq!(meta.size_bytes().unwrap(), 3072);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    pub shape: Vec<u64>,
    pub dtype: DType,
    pub name: Option<String>,
    pub device: Device,
}

impl TensorMeta {
    /// Metadata on the CPU device; fails when `shape` has more than 255 dims or its byte
    /// size, zero dims aside, exceeds `isize::MAX` (what numpy can represent).
    pub fn new(shape: Vec<u64>, dtype: DType, name: Option<String>) -> Result<TensorMeta> {
        let meta = TensorMeta {
            shape,
            dtype,
            name,
            device: Device::Cpu,
        };
        meta.validate()?;
        Ok(meta)
    }

    /// Metadata from signed dims, as Python and Kotlin users write them; negative dims
    /// are refused rather than wrapped.
    pub fn from_signed(dims: &[i64], dtype: DType, name: Option<String>) -> Result<TensorMeta> {
        let shape = dims
            .iter()
            .map(|&d| {
                u64::try_from(d).map_err(|_| {
                    QuillError::invalid(format!("negative dimension {d} in shape {dims:?}"))
                })
            })
            .collect::<Result<Vec<u64>>>()?;
        TensorMeta::new(shape, dtype, name)
    }

    /// Checks the invariants every constructor and decoder relies on.
    pub fn validate(&self) -> Result<()> {
        if self.shape.len() > MAX_NDIM {
            return Err(QuillError::invalid(format!(
                "tensor has {} dimensions; at most {MAX_NDIM} are supported",
                self.shape.len()
            )));
        }
        if let Some(name) = &self.name {
            if name.len() > u16::MAX as usize {
                return Err(QuillError::invalid(format!(
                    "tensor name is {} bytes; at most 65535 are supported",
                    name.len()
                )));
            }
        }
        self.size_bytes()?;
        // What numpy (and any buffer indexed by `isize`) can represent: the byte size
        // of the non-zero dims must fit in `isize`, even when another dim is zero and
        // the tensor holds no element at all.
        let limit = isize::MAX as u64;
        let nonzero_bytes = self
            .shape
            .iter()
            .filter(|&&d| d != 0)
            .try_fold(self.dtype.element_size() as u64, |acc, &d| {
                acc.checked_mul(d).filter(|&b| b <= limit)
            });
        if nonzero_bytes.is_none() {
            return Err(QuillError::invalid(format!(
                "shape {:?} of {} spans more than 2^63 - 1 bytes (zero dims aside); \
                 no array can be indexed that far",
                self.shape, self.dtype
            )));
        }
        Ok(())
    }

    /// Product of the dims (1 for a scalar), with overflow checked.
    pub fn num_elements(&self) -> Result<u64> {
        self.shape.iter().try_fold(1u64, |acc, &d| {
            acc.checked_mul(d).ok_or_else(|| {
                QuillError::invalid(format!(
                    "shape {:?} has more elements than fit in 64 bits",
                    self.shape
                ))
            })
        })
    }

    /// Byte size of the data: elements × element size, with overflow checked.
    pub fn size_bytes(&self) -> Result<u64> {
        self.num_elements()?
            .checked_mul(self.dtype.element_size() as u64)
            .ok_or_else(|| {
                QuillError::invalid(format!(
                    "shape {:?} of {} is larger than 2^64 bytes",
                    self.shape, self.dtype
                ))
            })
    }

    /// Validates the metadata and that `len` bytes is exactly its data size.
    pub fn check_data_len(&self, len: usize) -> Result<()> {
        self.validate()?;
        let expected = self.size_bytes()?;
        if len as u64 != expected {
            return Err(QuillError::invalid(format!(
                "data is {len} bytes but shape {:?} of {} needs {expected} bytes",
                self.shape, self.dtype
            )));
        }
        Ok(())
    }

    pub fn ndim(&self) -> usize {
        self.shape.len()
    }
}

/// A tensor: metadata plus little-endian, row-major element bytes in a shared buffer.
///
/// ```
/// use quill::{DType, Tensor, TensorMeta};
/// let meta = TensorMeta::new(vec![2, 3], DType::Float32, None).unwrap();
/// let t = Tensor::new(meta, vec![0u8; 24].into()).unwrap();
/// let copy = t.clone(); // shares the buffer, copies no data
/// assert_eq!(copy.data().as_ptr(), t.data().as_ptr());
/// assert!(Tensor::new(t.meta().clone(), vec![0u8; 23].into()).is_err());
/// ```
#[derive(Clone, PartialEq)]
pub struct Tensor {
    meta: TensorMeta,
    data: Bytes,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("meta", &self.meta)
            .field("len", &self.data.len())
            .finish()
    }
}

impl Tensor {
    /// A tensor over `data`; the byte length must equal shape × element size, and a
    /// `Bool` tensor holds only the bytes 0 and 1 (numpy, torch and the JVM disagree on
    /// what another byte means, so it is refused rather than passed on or rewritten).
    pub fn new(meta: TensorMeta, data: Bytes) -> Result<Tensor> {
        meta.check_data_len(data.len())?;
        if meta.dtype == DType::Bool {
            if let Some(i) = data.iter().position(|&b| b > 1) {
                return Err(QuillError::invalid(format!(
                    "bool tensor byte {i} is {}; a bool element must be 0 or 1",
                    data[i]
                )));
            }
        }
        Ok(Tensor { meta, data })
    }

    /// A tensor of zero bytes.
    pub fn zeros(meta: TensorMeta) -> Result<Tensor> {
        meta.validate()?;
        let len = meta.size_bytes()? as usize;
        Ok(Tensor {
            meta,
            data: Bytes::from(vec![0u8; len]),
        })
    }

    pub fn meta(&self) -> &TensorMeta {
        &self.meta
    }

    /// The element bytes (shared, not copied).
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The same data under another name.
    pub fn with_name(&self, name: Option<String>) -> Result<Tensor> {
        let mut meta = self.meta.clone();
        meta.name = name;
        Tensor::new(meta, self.data.clone())
    }
}

impl Tensor {
    /// A tensor over a copy of `data` (little-endian, row-major element bytes).
    pub fn from_bytes(
        data: &[u8],
        shape: Vec<u64>,
        dtype: DType,
        name: Option<String>,
    ) -> Result<Tensor> {
        let meta = TensorMeta::new(shape, dtype, name)?;
        // Check before copying so a wrong length never costs a large allocation.
        meta.check_data_len(data.len())?;
        Tensor::new(meta, Bytes::copy_from_slice(data))
    }

    /// Decodes a tensor from tensor frames (protocol §6), every size checked.
    pub fn decode(frames: &[u8]) -> Result<Tensor> {
        crate::codec::tensor::decode_tensor(frames)
    }

    /// Encodes as TENSOR_META, TENSOR_PAYLOAD… (64 KiB each), END_STREAM.
    pub fn encode(&self) -> Vec<u8> {
        crate::codec::tensor::encode_tensor(self)
    }

    pub fn shape(&self) -> &[u64] {
        &self.meta.shape
    }

    pub fn dtype(&self) -> DType {
        self.meta.dtype
    }

    pub fn name(&self) -> Option<&str> {
        self.meta.name.as_deref()
    }

    pub fn num_elements(&self) -> u64 {
        // Validated at construction, so this cannot overflow.
        self.data.len() as u64 / self.meta.dtype.element_size() as u64
    }

    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflowing_shapes_are_errors() {
        let m = TensorMeta {
            shape: vec![u64::MAX, 2],
            dtype: DType::Uint8,
            name: None,
            device: Device::Cpu,
        };
        assert!(matches!(
            m.num_elements(),
            Err(QuillError::InvalidArgument { .. })
        ));
        let m = TensorMeta {
            shape: vec![1 << 62],
            dtype: DType::Float64,
            name: None,
            device: Device::Cpu,
        };
        assert!(m.num_elements().is_ok());
        assert!(matches!(
            m.size_bytes(),
            Err(QuillError::InvalidArgument { .. })
        ));
        assert!(matches!(
            TensorMeta::new(vec![1; 256], DType::Uint8, None),
            Err(QuillError::InvalidArgument { .. })
        ));
        assert!(TensorMeta::new(vec![1; 255], DType::Uint8, None).is_ok());
        assert!(matches!(
            TensorMeta::from_signed(&[2, -1], DType::Uint8, None),
            Err(QuillError::InvalidArgument { .. })
        ));
    }

    #[test]
    fn scalar_and_empty() {
        let m = TensorMeta::new(vec![], DType::Float32, None).unwrap();
        assert_eq!(m.num_elements().unwrap(), 1);
        let m = TensorMeta::new(vec![0, 5], DType::Float32, None).unwrap();
        assert_eq!(m.size_bytes().unwrap(), 0);
    }

    #[test]
    fn shapes_numpy_cannot_index_are_refused() {
        let max = isize::MAX as u64;
        for shape in [vec![0, 1 << 63], vec![0, max, 2], vec![max, 2]] {
            let e = TensorMeta::new(shape.clone(), DType::Uint8, None).unwrap_err();
            assert!(e.to_string().contains("2^63 - 1 bytes"), "{shape:?}: {e}");
        }
        assert!(TensorMeta::new(vec![0, max / 4], DType::Float32, None).is_ok());
        assert!(matches!(
            TensorMeta::new(vec![0, max / 4 + 1], DType::Float32, None),
            Err(QuillError::InvalidArgument { .. })
        ));
        assert!(TensorMeta::new(vec![0, max], DType::Uint8, None).is_ok());
    }

    #[test]
    fn bool_bytes_are_zero_or_one() {
        assert!(Tensor::from_bytes(&[0, 1, 1], vec![3], DType::Bool, None).is_ok());
        let e = Tensor::from_bytes(&[0, 1, 2], vec![3], DType::Bool, None).unwrap_err();
        assert!(
            matches!(&e, QuillError::InvalidArgument { reason } if reason.contains("byte 2 is 2"))
        );
        // The same bytes as uint8 are fine.
        assert!(Tensor::from_bytes(&[0, 1, 2], vec![3], DType::Uint8, None).is_ok());
    }

    #[test]
    fn length_must_match() {
        let err = Tensor::from_bytes(&[0; 23], vec![2, 3], DType::Float32, None).unwrap_err();
        assert!(err.to_string().contains("23 bytes"), "{err}");
        assert!(Tensor::from_bytes(&[0; 24], vec![2, 3], DType::Float32, None).is_ok());
    }
}
