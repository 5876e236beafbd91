//! `quill.Tensor` and `quill.TensorMeta`: Python faces of the core tensor types.
//!
//! A `Tensor` is immutable and shares its bytes with the core (`bytes::Bytes`), so the
//! buffer protocol can hand out read-only, zero-copy views (`memoryview(t)`,
//! `np.asarray(t)`) that keep the tensor alive, and DLPack capsules (`src/python/dlpack.rs`)
//! both ways.

use std::ffi::{c_int, CStr};

use bytes::Bytes;
use pyo3::exceptions::{PyBufferError, PyOverflowError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyCapsule, PyTuple};

use super::adopt;
use super::dlpack;
use super::dtype::PyDType;
use super::errors::{out_of_range, IntoPyResult};
use super::exit;
use super::numpy_conv;
use super::text;
use crate::dtype::DType;
use crate::error::QuillError;
use crate::tensor::{Device, Tensor, TensorMeta};

/// Turns a sequence of Python ints into dims; a negative or oversized entry is an
/// `OutOfRangeError`, not an `OverflowError` from deep inside the conversion.
fn dims_from_py(shape: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    let py = shape.py();
    shape
        .try_iter()
        .map_err(|_| PyTypeError::new_err("shape must be a sequence of ints"))?
        .map(|d| {
            let d = d?;
            let v: i128 = match d.extract() {
                Ok(v) => v,
                Err(e) if e.is_instance_of::<PyOverflowError>(py) => i128::MAX,
                Err(_) => {
                    return Err(PyTypeError::new_err(format!(
                        "shape entries must be ints, got {d}"
                    )))
                }
            };
            u64::try_from(v).map_err(|_| {
                out_of_range(
                    py,
                    if v < 0 {
                        format!("negative dimension {v} in shape")
                    } else {
                        format!(
                            "dimension {} does not fit in 64 bits",
                            d.repr().map(|r| r.to_string()).unwrap_or_default()
                        )
                    },
                )
            })
        })
        .collect()
}

fn shape_repr(shape: &[u64]) -> String {
    format!("{shape:?}")
}

/// Shape, dtype and name of a tensor, without data.
#[pyclass(name = "TensorMeta", module = "quill", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct PyTensorMeta(pub TensorMeta);

#[pymethods]
impl PyTensorMeta {
    #[new]
    #[pyo3(signature = (shape, dtype, name=None))]
    fn new(
        shape: &Bound<'_, PyAny>,
        dtype: PyDType,
        #[pyo3(from_py_with = text::opt_name)] name: Option<String>,
    ) -> PyResult<Self> {
        TensorMeta::new(dims_from_py(shape)?, dtype.0, name)
            .map(PyTensorMeta)
            .py()
    }

    /// Rebuilds a pickled `TensorMeta` (`__reduce__`), device included.
    #[staticmethod]
    fn _from_state(
        #[pyo3(from_py_with = dims_from_py)] shape: Vec<u64>,
        dtype: PyDType,
        #[pyo3(from_py_with = text::opt_name)] name: Option<String>,
        #[pyo3(from_py_with = text::device)] device: String,
    ) -> PyResult<Self> {
        let mut meta = TensorMeta::new(shape, dtype.0, name).py()?;
        meta.device = Device::from_name(&device).py()?;
        Ok(PyTensorMeta(meta))
    }

    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let m = &self.0;
        let restore = py.get_type::<PyTensorMeta>().getattr("_from_state")?;
        let args = (
            m.shape.clone(),
            PyDType(m.dtype),
            m.name.clone(),
            m.device.name(),
        );
        (restore, args).into_pyobject(py)
    }

    /// Immutable: a copy is the same object.
    fn __copy__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __deepcopy__(slf: Py<Self>, _memo: &Bound<'_, PyAny>) -> Py<Self> {
        slf
    }

    #[getter]
    fn shape(&self) -> Vec<u64> {
        self.0.shape.clone()
    }
    #[getter]
    fn ndim(&self) -> usize {
        self.0.ndim()
    }
    #[getter]
    fn dtype(&self) -> PyDType {
        PyDType(self.0.dtype)
    }
    #[getter]
    fn name(&self) -> Option<String> {
        self.0.name.clone()
    }
    #[getter]
    fn device(&self) -> &'static str {
        self.0.device.name()
    }
    #[getter]
    fn num_elements(&self) -> PyResult<u64> {
        self.0.num_elements().py()
    }
    #[getter]
    fn size_bytes(&self) -> PyResult<u64> {
        self.0.size_bytes().py()
    }

    fn __repr__(&self) -> String {
        format!(
            "TensorMeta(shape={}, dtype=DType.{}, name={})",
            shape_repr(&self.0.shape),
            self.0.dtype.name(),
            py_str_repr(self.0.name.as_deref())
        )
    }
}

fn py_str_repr(s: Option<&str>) -> String {
    match s {
        None => "None".into(),
        Some(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
    }
}

/// Buffer-protocol format character of each dtype (bfloat16 is exposed as uint16 bits).
fn buffer_format(dtype: DType) -> &'static CStr {
    match dtype {
        DType::Float32 => c"f",
        DType::Float64 => c"d",
        DType::Float16 => c"e",
        DType::Bfloat16 => c"H",
        DType::Int8 => c"b",
        DType::Int32 => c"i",
        DType::Int64 => c"q",
        DType::Uint8 => c"B",
        DType::Bool => c"?",
    }
}

/// An immutable tensor: metadata plus little-endian, row-major element bytes.
#[pyclass(name = "Tensor", module = "quill", frozen)]
pub struct PyTensor {
    pub(crate) inner: Tensor,
    // Kept here because the buffer protocol hands out pointers to them.
    view_shape: Vec<ffi::Py_ssize_t>,
    view_strides: Vec<ffi::Py_ssize_t>,
}

impl PyTensor {
    pub(crate) fn wrap(inner: Tensor) -> PyTensor {
        let m = inner.meta();
        let view_shape: Vec<ffi::Py_ssize_t> =
            m.shape.iter().map(|&d| d as ffi::Py_ssize_t).collect();
        let mut view_strides = vec![0 as ffi::Py_ssize_t; view_shape.len()];
        let mut stride = m.dtype.element_size() as ffi::Py_ssize_t;
        for i in (0..view_shape.len()).rev() {
            view_strides[i] = stride;
            stride = stride.saturating_mul(view_shape[i].max(1));
        }
        PyTensor {
            inner,
            view_shape,
            view_strides,
        }
    }

    fn from_parts(
        data: Bytes,
        shape: Vec<u64>,
        dtype: DType,
        name: Option<String>,
    ) -> PyResult<Self> {
        let meta = TensorMeta::new(shape, dtype, name).py()?;
        Tensor::new(meta, data).map(PyTensor::wrap).py()
    }
}

#[pymethods]
impl PyTensor {
    /// A tensor holding a copy of a numpy array (any layout or byte order).
    #[staticmethod]
    #[pyo3(signature = (array, name=None, dtype=None))]
    fn from_numpy(
        py: Python<'_>,
        array: &Bound<'_, PyAny>,
        #[pyo3(from_py_with = text::opt_name)] name: Option<String>,
        dtype: Option<PyDType>,
    ) -> PyResult<Self> {
        let (data, shape, dtype) = numpy_conv::from_numpy(py, array, dtype.map(|d| d.0))?;
        PyTensor::from_parts(data, shape, dtype, name)
    }

    /// A tensor over the memory of any DLPack producer (numpy, torch, jax, another quill
    /// tensor): shared when it is C-contiguous host memory, copied into C order when it
    /// is strided or `copy=True`; `copy=False` refuses to copy.
    #[staticmethod]
    #[pyo3(signature = (x, /, *, name=None, copy=None))]
    fn from_dlpack(
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        #[pyo3(from_py_with = text::opt_name)] name: Option<String>,
        copy: Option<bool>,
    ) -> PyResult<Self> {
        let (data, shape, dtype) = dlpack::import(py, x, copy)?;
        PyTensor::from_parts(data, shape, dtype, name)
    }

    /// DLPack export: with `max_version >= (1, 0)` a versioned, read-only capsule over
    /// the tensor's own bytes; a legacy capsule (or `copy=True`) holds a writable copy.
    #[pyo3(signature = (*, stream=None, max_version=None, dl_device=None, copy=None))]
    fn __dlpack__<'py>(
        &self,
        py: Python<'py>,
        stream: Option<&Bound<'py, PyAny>>,
        max_version: Option<&Bound<'py, PyAny>>,
        dl_device: Option<&Bound<'py, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        dlpack::export(py, &self.inner, stream, max_version, dl_device, copy)
    }

    /// `(kDLCPU, 0)`: the bytes are in host memory whatever the `device` label says.
    fn __dlpack_device__(&self) -> (i32, i32) {
        dlpack::DEVICE
    }

    /// A zero-filled tensor.
    #[staticmethod]
    #[pyo3(signature = (shape, dtype, name=None))]
    fn zeros(
        shape: &Bound<'_, PyAny>,
        dtype: PyDType,
        #[pyo3(from_py_with = text::opt_name)] name: Option<String>,
    ) -> PyResult<Self> {
        let meta = TensorMeta::new(dims_from_py(shape)?, dtype.0, name).py()?;
        Tensor::zeros(meta).map(PyTensor::wrap).py()
    }

    /// A tensor from raw little-endian element bytes (any bytes-like object).
    #[staticmethod]
    #[pyo3(signature = (data, shape, dtype, name=None))]
    fn from_bytes(
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        shape: &Bound<'_, PyAny>,
        dtype: PyDType,
        #[pyo3(from_py_with = text::opt_name)] name: Option<String>,
    ) -> PyResult<Self> {
        let meta = TensorMeta::new(dims_from_py(shape)?, dtype.0, name).py()?;
        let bytes = bytes_like(py, data, |raw| {
            meta.check_data_len(raw.len())?;
            Ok(raw.to_vec())
        })?;
        Tensor::new(meta, Bytes::from(bytes))
            .map(PyTensor::wrap)
            .py()
    }

    /// Decodes a tensor from tensor frames (protocol §6).
    #[staticmethod]
    fn decode(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Self> {
        let t = bytes_like(py, data, crate::codec::tensor::decode_tensor)?;
        Ok(PyTensor::wrap(t))
    }

    /// Encodes as tensor frames: TENSOR_META, 64 KiB TENSOR_PAYLOADs, END_STREAM.
    fn encode<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let parts = crate::codec::tensor::encode_tensor_parts(
            &self.inner,
            crate::protocol::TENSOR_PAYLOAD_CHUNK,
        )
        .expect("a constructed Tensor has valid metadata");
        let total = parts.iter().map(Bytes::len).sum();
        fill_bytes(py, total, |out| {
            let mut off = 0;
            for p in &parts {
                out[off..off + p.len()].copy_from_slice(p);
                off += p.len();
            }
        })
    }

    /// A fresh, writable numpy copy. bfloat16 becomes `ml_dtypes.bfloat16` when
    /// installed (uint16 bits otherwise, or when `bfloat16_as_uint16=True`).
    #[pyo3(signature = (*, bfloat16_as_uint16=false))]
    fn to_numpy<'py>(
        &self,
        py: Python<'py>,
        bfloat16_as_uint16: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let m = self.inner.meta();
        numpy_conv::to_numpy(py, self.inner.data(), &m.shape, m.dtype, bfloat16_as_uint16)
    }

    /// The element bytes as `bytes` (a copy, like `numpy.ndarray.tobytes`; use
    /// `memoryview(tensor)` for zero-copy access).
    fn tobytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.inner.data();
        fill_bytes(py, data.len(), |out| out.copy_from_slice(data))
    }

    #[getter]
    fn shape(&self) -> Vec<u64> {
        self.inner.meta().shape.clone()
    }
    #[getter]
    fn ndim(&self) -> usize {
        self.inner.meta().ndim()
    }
    #[getter]
    fn num_elements(&self) -> u64 {
        self.inner.num_elements()
    }
    #[getter]
    fn dtype(&self) -> PyDType {
        PyDType(self.inner.meta().dtype)
    }
    #[getter]
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
    #[getter]
    fn name(&self) -> Option<String> {
        self.inner.meta().name.clone()
    }
    #[getter]
    fn device(&self) -> &'static str {
        self.inner.meta().device.name()
    }
    #[getter]
    fn meta(&self) -> PyTensorMeta {
        PyTensorMeta(self.inner.meta().clone())
    }

    /// The same data under another name (no copy).
    fn with_name(
        &self,
        #[pyo3(from_py_with = text::opt_name)] name: Option<String>,
    ) -> PyResult<Self> {
        self.inner.with_name(name).map(PyTensor::wrap).py()
    }

    /// Pickling. With protocol 5 the element bytes travel out of band as a
    /// `pickle.PickleBuffer` over this tensor's own buffer (with a `buffer_callback`
    /// they are never copied into the stream); older protocols carry them as `bytes`.
    fn __reduce_ex__<'py>(slf: &Bound<'py, Self>, protocol: i64) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let this = slf.get();
        let data = if protocol >= 5 {
            py.import("pickle")?
                .getattr("PickleBuffer")?
                .call1((slf,))?
        } else {
            this.tobytes(py)?.into_any()
        };
        let m = this.inner.meta();
        let restore = py.get_type::<PyTensor>().getattr("_from_buffer")?;
        let args = (
            data,
            m.shape.clone(),
            PyDType(m.dtype),
            m.name.clone(),
            m.device.name(),
        );
        (restore, args).into_pyobject(py)
    }

    /// Rebuilds a pickled tensor. Buffers whose memory can never change (`bytes`, an
    /// out-of-band `PickleBuffer` of a tensor, Ray's object store) are adopted without
    /// a copy, the tensor keeping their owner alive; anything its owner could still
    /// write is copied (`src/python/adopt.rs` has the rule).
    #[staticmethod]
    fn _from_buffer(
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        #[pyo3(from_py_with = dims_from_py)] shape: Vec<u64>,
        dtype: PyDType,
        #[pyo3(from_py_with = text::opt_name)] name: Option<String>,
        #[pyo3(from_py_with = text::device)] device: String,
    ) -> PyResult<Self> {
        let mut meta = TensorMeta::new(shape, dtype.0, name).py()?;
        meta.device = Device::from_name(&device).py()?;
        let bytes = adopt::adopt_buffer(py, data)?;
        Tensor::new(meta, bytes).map(PyTensor::wrap).py()
    }

    /// Immutable: a copy is the same object (its bytes are shared anyway).
    fn __copy__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __deepcopy__(slf: Py<Self>, _memo: &Bound<'_, PyAny>) -> Py<Self> {
        slf
    }

    fn __len__(&self) -> PyResult<usize> {
        match self.inner.meta().shape.first() {
            Some(&d) => Ok(d as usize),
            None => Err(PyTypeError::new_err("len() of a 0-d tensor")),
        }
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyTensor>()
            .is_ok_and(|o| o.get().inner == self.inner)
    }

    fn __repr__(&self) -> String {
        let m = self.inner.meta();
        format!(
            "Tensor(shape={}, dtype=DType.{}, name={})",
            shape_repr(&m.shape),
            m.dtype.name(),
            py_str_repr(m.name.as_deref())
        )
    }

    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("null view"));
        }
        if flags & ffi::PyBUF_WRITABLE == ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err(
                "quill.Tensor is read-only; use to_numpy() for a writable copy",
            ));
        }
        let this = slf.get();
        let data = this.inner.data();
        let dtype = this.inner.meta().dtype;
        // SAFETY: `view` is a valid Py_buffer supplied by the interpreter; the pointers
        // stored in it point into `this`, which `obj` keeps alive until release.
        unsafe {
            (*view).buf = data.as_ptr() as *mut std::ffi::c_void;
            (*view).len = data.len() as ffi::Py_ssize_t;
            (*view).readonly = 1;
            (*view).itemsize = dtype.element_size() as ffi::Py_ssize_t;
            (*view).format = if flags & ffi::PyBUF_FORMAT == ffi::PyBUF_FORMAT {
                buffer_format(dtype).as_ptr() as *mut _
            } else {
                std::ptr::null_mut()
            };
            if flags & ffi::PyBUF_ND == ffi::PyBUF_ND {
                (*view).ndim = this.view_shape.len() as c_int;
                (*view).shape = this.view_shape.as_ptr() as *mut _;
            } else {
                (*view).ndim = 1;
                (*view).shape = std::ptr::null_mut();
            }
            (*view).strides = if flags & ffi::PyBUF_STRIDES == ffi::PyBUF_STRIDES {
                this.view_strides.as_ptr() as *mut _
            } else {
                std::ptr::null_mut()
            };
            (*view).suboffsets = std::ptr::null_mut();
            (*view).internal = std::ptr::null_mut();
            (*view).obj = slf.into_any().into_ptr();
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}
}

/// Runs `f` over the bytes of a bytes-like object (bytes, bytearray, memoryview, numpy
/// buffer, …, strided ones in C order), releasing the GIL for large inputs when the
/// object is immutable bytes.
pub(crate) fn bytes_like<T: Send>(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    f: impl FnOnce(&[u8]) -> Result<T, QuillError> + Send,
) -> PyResult<T> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        let raw = b.as_bytes();
        return if raw.len() >= super::DETACH_THRESHOLD {
            exit::detach(py, || f(raw)).py()
        } else {
            f(raw).py()
        };
    }
    // Other buffers may be mutated by other threads, so keep the GIL while reading them.
    let mv = py
        .import("builtins")?
        .getattr("memoryview")?
        .call1((obj,))
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "expected a bytes-like object, got {}",
                obj.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
    // `cast` refuses views with a zero in their shape (`[0, 3]`): there are no bytes.
    if mv.getattr("nbytes")?.extract::<usize>()? == 0 {
        return f(&[]).py();
    }
    if !mv.getattr("c_contiguous")?.is_truthy()? {
        // A strided view (`memoryview(b)[::2]`, a transposed array): its bytes in C
        // order, as `bytes(view)` gives them; one copy.
        let flat = mv.call_method0("tobytes")?;
        let flat = flat.cast::<PyBytes>()?;
        return f(flat.as_bytes()).py();
    }
    let flat = mv.call_method1("cast", ("B",))?;
    let buf = pyo3::buffer::PyBuffer::<u8>::get(&flat)?;
    // SAFETY: the buffer is C-contiguous, holds item_count() bytes and stays alive
    // (and, with the GIL held, unchanged by Python code) for the duration of `f`.
    let raw = unsafe { std::slice::from_raw_parts(buf.buf_ptr() as *const u8, buf.item_count()) };
    let out = f(raw).py();
    drop(buf);
    out
}

/// A new `bytes` of `len` bytes filled by `f`, without zeroing it first.
pub(crate) fn fill_bytes<'py>(
    py: Python<'py>,
    len: usize,
    f: impl FnOnce(&mut [u8]) + Send,
) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, len, |out| {
        if len >= super::DETACH_THRESHOLD {
            let ptr = out.as_mut_ptr() as usize;
            exit::detach(py, move || {
                // SAFETY: `out` is the fresh bytes object's buffer of `len` bytes; nothing
                // else can reach it until new_with returns.
                let out = unsafe { std::slice::from_raw_parts_mut(ptr as *mut u8, len) };
                f(out)
            });
        } else {
            f(out);
        }
        Ok(())
    })
}
