//! The one mapping from core errors to Python exceptions.
//!
//! The exception classes live in `python/quill/exceptions.py` so that they can subclass
//! both `quill.QuillError` and the builtin a user already catches (`ValueError`,
//! `ConnectionError`, …); this file only chooses the class and fills its fields.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyModule};

use crate::error::QuillError;

static EXCEPTIONS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn class_name(e: &QuillError) -> &'static str {
    match e {
        QuillError::InvalidArgument { .. } => "InvalidArgumentError",
        QuillError::UnsupportedDType { .. } => "UnsupportedDTypeError",
        QuillError::Decode { .. } => "DecodeError",
        QuillError::Connection { .. } => "QuillConnectionError",
        QuillError::Timeout { .. } => "QuillTimeoutError",
        QuillError::Status { .. } => "RpcError",
        QuillError::Stream { .. } => "StreamError",
        QuillError::Protocol { .. } => "ProtocolError",
        QuillError::Cancelled { .. } => "CallCancelledError",
    }
}

fn build(py: Python<'_>, e: &QuillError) -> PyResult<PyErr> {
    let module = EXCEPTIONS
        .get_or_try_init(py, || {
            PyModule::import(py, "quill.exceptions").map(Bound::unbind)
        })?
        .bind(py);
    let cls = module.getattr(class_name(e))?;
    let exc = cls.call1((e.to_string(),))?;
    if let QuillError::Status { problem: p } = e {
        exc.setattr("status", p.status)?;
        exc.setattr("type", p.problem_type.as_deref())?;
        exc.setattr("title", p.title.as_deref())?;
        exc.setattr("detail", p.detail.as_deref())?;
        exc.setattr("instance", p.instance.as_deref())?;
        exc.setattr("proto_type", p.proto_type.as_deref())?;
        exc.setattr(
            "proto_detail",
            p.proto_detail.as_deref().map(|b| PyBytes::new(py, b)),
        )?;
        exc.setattr("retry_after", p.retry_after_ms.map(|ms| ms as f64 / 1000.0))?;
        exc.setattr("body", p.body.as_str())?;
        exc.setattr("request_id", p.request_id.as_deref())?;
        let problem = PyDict::new(py);
        // Re-parse the body so unknown Problem Details fields reach the user as well.
        if let Ok(json) = py.import("json") {
            if let Ok(obj) = json.call_method1("loads", (p.body.as_str(),)) {
                if let Ok(d) = obj.cast_into::<PyDict>() {
                    problem.update(d.as_mapping())?;
                }
            }
        }
        exc.setattr("problem", problem)?;
    }
    Ok(PyErr::from_value(exc))
}

/// Converts a core error into the matching `quill.exceptions` instance.
pub(crate) fn to_py_err(e: QuillError) -> PyErr {
    Python::attach(|py| {
        // Building runs the exception classes' Python code.
        let _inside = super::exit::enter(py);
        build(py, &e).unwrap_or_else(|import_err| {
            // Only when the pure-Python package is broken: still raise, never panic.
            let err = PyRuntimeError::new_err(e.to_string());
            err.set_cause(py, Some(import_err));
            err
        })
    })
}

/// `quill.OutOfRangeError(message)`: an integer outside the range it must fall in. The
/// core has no such variant: it takes typed integers, so only the faces meet them.
pub(crate) fn out_of_range(py: Python<'_>, message: String) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let module = EXCEPTIONS.get_or_try_init(py, || {
            PyModule::import(py, "quill.exceptions").map(Bound::unbind)
        })?;
        let exc = module
            .bind(py)
            .getattr("OutOfRangeError")?
            .call1((&message,))?;
        Ok(PyErr::from_value(exc))
    };
    let _inside = super::exit::enter(py);
    build().unwrap_or_else(|import_err| {
        let err = pyo3::exceptions::PyOverflowError::new_err(message.clone());
        err.set_cause(py, Some(import_err));
        err
    })
}

/// `?`-friendly conversion for core results.
pub(crate) trait IntoPyResult<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, QuillError> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py_err)
    }
}
