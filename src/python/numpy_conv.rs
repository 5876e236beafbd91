//! NumPy ⇄ tensor bytes: the one place that knows numpy dtypes, byte order and layout.
//!
//! Copies: `from_numpy` makes exactly one copy of a C-contiguous little-endian array
//! (with the GIL released, into a buffer from numpy's allocator when large); other
//! layouts and byte orders are first normalised by numpy in one pass, and that fresh
//! array's buffer is then adopted without a second copy.
//! `to_numpy` makes exactly one copy into a fresh, writable array.

use bytes::Bytes;
use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyAny;

use super::{exit, DETACH_THRESHOLD};
use crate::dtype::DType;
use crate::error::QuillError;

static NUMPY: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
static ML_DTYPES_BF16: PyOnceLock<Option<Py<PyAny>>> = PyOnceLock::new();

pub(crate) fn numpy(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    Ok(NUMPY
        .get_or_try_init(py, || py.import("numpy").map(Bound::unbind))?
        .bind(py))
}

/// `ml_dtypes.bfloat16` when the package is installed.
fn ml_dtypes_bfloat16(py: Python<'_>) -> Option<&Bound<'_, PyAny>> {
    ML_DTYPES_BF16
        .get_or_init(py, || {
            py.import("ml_dtypes")
                .and_then(|m| m.getattr("bfloat16"))
                .map(Bound::unbind)
                .ok()
        })
        .as_ref()
        .map(|o| o.bind(py))
}

/// The Quill dtype of a numpy array, or a clear error for everything else.
fn dtype_of(arr: &Bound<'_, PyUntypedArray>) -> PyResult<DType> {
    let descr = arr.dtype();
    let kind = descr.kind();
    let size = descr.itemsize();
    let d = match (kind, size) {
        (b'f', 4) => DType::Float32,
        (b'f', 8) => DType::Float64,
        (b'f', 2) => DType::Float16,
        (b'i', 1) => DType::Int8,
        (b'i', 4) => DType::Int32,
        (b'i', 8) => DType::Int64,
        (b'u', 1) => DType::Uint8,
        (b'b', 1) => DType::Bool,
        (b'V', 2) if descr.to_string() == "bfloat16" => DType::Bfloat16,
        _ => {
            let hint = match kind {
                b'O' => " (object arrays hold Python references, not numbers)",
                b'U' | b'S' => " (string arrays are not tensors; encode them first)",
                b'c' => " (complex numbers are not supported; split real and imaginary parts)",
                b'u' if size == 2 => " (for bfloat16 bits pass dtype=DType.bfloat16())",
                _ => "",
            };
            return Err(super::to_py_err(QuillError::UnsupportedDType {
                reason: format!(
                    "unsupported numpy dtype {descr}{hint}; supported: float32, float64, float16, \
                     bfloat16 (ml_dtypes), int8, int32, int64, uint8, bool"
                ),
            }));
        }
    };
    Ok(d)
}

/// Keeps a numpy array alive as the owner of a [`Bytes`] buffer (no copy).
struct ArrayOwner {
    _array: Py<PyAny>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the array is a fresh copy that only this owner references, so its buffer is
// never written again; the pointer stays valid while `_array` holds a reference, and
// `Py` defers its decref until the GIL is held.
unsafe impl Send for ArrayOwner {}
unsafe impl Sync for ArrayOwner {}

impl AsRef<[u8]> for ArrayOwner {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: see the Send/Sync impls above.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

fn data_ptr(arr: &Bound<'_, PyUntypedArray>) -> *mut u8 {
    // SAFETY: `arr` is a live ndarray; reading its data pointer field is always valid.
    unsafe { (*arr.as_array_ptr()).fields.data as *mut u8 }
}

fn nbytes(arr: &Bound<'_, PyUntypedArray>) -> usize {
    arr.len() * arr.dtype().itemsize()
}

/// Copies `len` bytes from `src` into a fresh buffer, releasing the GIL for large copies.
fn copy_out(py: Python<'_>, src: *const u8, len: usize) -> Bytes {
    let src = src as usize;
    let copy = move || {
        let mut v = Vec::<u8>::with_capacity(len);
        // SAFETY: the caller keeps the source alive and `len` bytes readable; the
        // destination has capacity `len` and is fully written before set_len.
        unsafe {
            std::ptr::copy_nonoverlapping(src as *const u8, v.as_mut_ptr(), len);
            v.set_len(len);
        }
        Bytes::from(v)
    };
    if len >= DETACH_THRESHOLD {
        exit::detach(py, copy)
    } else {
        copy()
    }
}

/// Element bytes, shape and dtype of any numpy array (or array-like) of a supported type.
pub(crate) fn from_numpy(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    dtype_override: Option<DType>,
) -> PyResult<(Bytes, Vec<u64>, DType)> {
    // numpy may run Python code here (array-likes, first imports).
    let _inside = exit::enter(py);
    let np = numpy(py)?;
    let arr: Bound<'_, PyAny> = if obj.is_instance_of::<PyUntypedArray>() {
        obj.clone()
    } else {
        np.call_method1("asarray", (obj,))?
    };
    let mut arr = arr
        .cast_into::<PyUntypedArray>()
        .map_err(|_| PyTypeError::new_err("from_numpy expects a numpy array"))?;
    let descr = arr.dtype();
    let uint16_bits = descr.kind() == b'u' && descr.itemsize() == 2;
    let dtype = match dtype_override {
        // bfloat16 has no numpy type of its own: its bits may arrive as uint16.
        Some(DType::Bfloat16) if uint16_bits => DType::Bfloat16,
        Some(want) => {
            let natural = dtype_of(&arr)?;
            if natural != want {
                return Err(super::to_py_err(QuillError::UnsupportedDType {
                    reason: format!(
                        "cannot read a numpy {descr} array as {want}; only uint16 bits may be \
                         reinterpreted (as bfloat16)"
                    ),
                }));
            }
            want
        }
        None => dtype_of(&arr)?,
    };
    let shape: Vec<u64> = arr.shape().iter().map(|&d| d as u64).collect();
    let little = arr.dtype().is_native_byteorder().unwrap_or(true)
        == cfg!(target_endian = "little")
        || arr.dtype().itemsize() == 1;
    if arr.is_c_contiguous() && little {
        let len = nbytes(&arr);
        if len < DETACH_THRESHOLD {
            return Ok((copy_out(py, data_ptr(&arr), len), shape, dtype));
        }
        // Large buffers come from numpy's allocator, which asks the kernel for huge
        // pages: a plain Vec of 64 MiB pays ~16 000 page faults and made this copy 4×
        // slower than numpy's own `arr.copy()`. The fresh array is adopted, not copied.
        let fresh = np
            .call_method1("empty", (len, "uint8"))?
            .cast_into::<PyUntypedArray>()
            .map_err(|_| PyTypeError::new_err("numpy.empty did not return an array"))?;
        let (src, dst) = (data_ptr(&arr) as usize, data_ptr(&fresh) as usize);
        // SAFETY: both buffers hold `len` bytes, `fresh` is private to us and `arr` stays
        // referenced by the caller for the duration of the copy.
        exit::detach(py, || unsafe {
            std::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, len)
        });
        return Ok((adopt(fresh), shape, dtype));
    }
    // One numpy pass fixes both layout and byte order; its result is ours alone, so
    // adopt its buffer instead of copying it again.
    let le = arr.dtype().call_method1("newbyteorder", ("<",))?;
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("dtype", le)?;
    arr = np
        .call_method("ascontiguousarray", (&arr,), Some(&kwargs))?
        .cast_into::<PyUntypedArray>()
        .map_err(|_| PyTypeError::new_err("numpy.ascontiguousarray did not return an array"))?;
    Ok((adopt(arr), shape, dtype))
}

/// A [`Bytes`] over the buffer of a fresh array that nothing else references.
fn adopt(arr: Bound<'_, PyUntypedArray>) -> Bytes {
    Bytes::from_owner(ArrayOwner {
        ptr: data_ptr(&arr),
        len: nbytes(&arr),
        _array: arr.into_any().unbind(),
    })
}

/// numpy dtype name used to hold `dtype` (bfloat16 travels as uint16 bits).
fn numpy_name(dtype: DType) -> &'static str {
    match dtype {
        DType::Bfloat16 => "uint16",
        other => other.name(),
    }
}

/// A fresh, writable numpy array holding a copy of `data`.
pub(crate) fn to_numpy<'py>(
    py: Python<'py>,
    data: &Bytes,
    shape: &[u64],
    dtype: DType,
    bfloat16_as_uint16: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let _inside = exit::enter(py);
    let np = numpy(py)?;
    let arr = np
        .call_method1("empty", (shape.to_vec(), numpy_name(dtype)))?
        .cast_into::<PyUntypedArray>()
        .map_err(|_| PyTypeError::new_err("numpy.empty did not return an array"))?;
    let len = data.len();
    debug_assert_eq!(len, nbytes(&arr));
    let dst = data_ptr(&arr) as usize;
    let src = data.as_ptr() as usize;
    let copy = move || {
        // SAFETY: `arr` is a fresh array of exactly `len` bytes that no one else can see
        // yet, and `data` outlives this call.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, len) }
    };
    if len >= DETACH_THRESHOLD {
        exit::detach(py, copy);
    } else {
        copy();
    }
    let arr = arr.into_any();
    if dtype == DType::Bfloat16 && !bfloat16_as_uint16 {
        if let Some(bf16) = ml_dtypes_bfloat16(py) {
            return arr.call_method1("view", (bf16,));
        }
    }
    Ok(arr)
}
