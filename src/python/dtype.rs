//! `quill.DType`: the Python face of [`crate::DType`].

use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;

use super::errors::IntoPyResult;
use crate::dtype::DType;

/// Element type of a tensor: `quill.DType.float32()`, …, `quill.DType.bool_()`.
#[pyclass(name = "DType", module = "quill", frozen, eq, hash, from_py_object)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PyDType(pub DType);

#[pymethods]
impl PyDType {
    #[staticmethod]
    fn float32() -> Self {
        PyDType(DType::Float32)
    }
    #[staticmethod]
    fn float64() -> Self {
        PyDType(DType::Float64)
    }
    #[staticmethod]
    fn float16() -> Self {
        PyDType(DType::Float16)
    }
    #[staticmethod]
    fn bfloat16() -> Self {
        PyDType(DType::Bfloat16)
    }
    #[staticmethod]
    fn int8() -> Self {
        PyDType(DType::Int8)
    }
    #[staticmethod]
    fn int32() -> Self {
        PyDType(DType::Int32)
    }
    #[staticmethod]
    fn int64() -> Self {
        PyDType(DType::Int64)
    }
    #[staticmethod]
    fn uint8() -> Self {
        PyDType(DType::Uint8)
    }
    #[staticmethod]
    fn bool_() -> Self {
        PyDType(DType::Bool)
    }

    /// The dtype of a name such as `"float32"` or `"bool"`.
    #[staticmethod]
    fn from_name(#[pyo3(from_py_with = super::text::name)] name: String) -> PyResult<Self> {
        DType::from_name(&name).map(PyDType).py()
    }

    /// The dtype of a wire number (protocol §7).
    #[staticmethod]
    fn from_wire_value(value: &Bound<'_, PyAny>) -> PyResult<Self> {
        // Any int: one too big for 128 bits is just another unknown number.
        let small = match value.extract::<i128>() {
            Ok(v) => u8::try_from(v).ok(),
            Err(e) if e.is_instance_of::<PyOverflowError>(value.py()) => None,
            Err(e) => return Err(e),
        };
        let v = small.ok_or_else(|| crate::QuillError::UnsupportedDType {
            reason: format!(
                "unknown dtype number {} (expected 1..=9)",
                super::args::short_repr(value)
            ),
        });
        v.and_then(DType::from_wire).map(PyDType).py()
    }

    #[getter]
    fn element_size(&self) -> usize {
        self.0.element_size()
    }

    #[getter]
    fn name(&self) -> &'static str {
        self.0.name()
    }

    #[getter]
    fn wire_value(&self) -> u8 {
        self.0.wire()
    }

    fn is_float(&self) -> bool {
        self.0.is_float()
    }

    fn is_integer(&self) -> bool {
        self.0.is_integer()
    }

    fn is_signed(&self) -> bool {
        self.0.is_signed()
    }

    fn __repr__(&self) -> String {
        format!("DType.{}", self.0.name())
    }

    fn __str__(&self) -> String {
        self.__repr__()
    }

    /// Pickles as its name (`DType.from_name("float32")`).
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, (&'static str,))> {
        let from_name = py.get_type::<PyDType>().getattr("from_name")?;
        Ok((from_name, (self.0.name(),)))
    }

    /// Immutable: a copy is the same object.
    fn __copy__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __deepcopy__(slf: Py<Self>, _memo: &Bound<'_, PyAny>) -> Py<Self> {
        slf
    }
}
