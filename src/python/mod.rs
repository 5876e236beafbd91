//! The Python face (`quill._quill`): thin PyO3 wrappers over the core objects.
//!
//! No protocol logic lives here: each class converts arguments, calls the core and maps
//! [`crate::QuillError`] to the exception tree of `python/quill/exceptions.py`.

use pyo3::prelude::*;

mod adopt;
mod args;
mod client;
mod dlpack;
mod dtype;
mod errors;
mod exit;
mod inference;
mod logging;
mod numpy_conv;
mod stream;
mod tensor;
mod text;
mod token;
mod wait;

pub(crate) use errors::to_py_err;

/// Copies larger than this release the GIL; below it the release costs more than it saves.
pub(crate) const DETACH_THRESHOLD: usize = 64 * 1024;

// Declared honestly: the classes are Sync and the core is thread-safe, but the module
// has not been run on a free-threaded interpreter (none installs on this machine kind:
// PyPI ships no CPython builds and Debian 12 has no python3.13t), so it keeps the GIL.
#[pymodule(gil_used = true)]
fn _quill(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", crate::version())?;
    m.add_class::<dtype::PyDType>()?;
    m.add_class::<tensor::PyTensorMeta>()?;
    m.add_class::<tensor::PyTensor>()?;
    m.add_class::<token::PyToken>()?;
    m.add_class::<token::PyTokenBatch>()?;
    m.add_class::<token::PyTokenBatchIter>()?;
    m.add_class::<client::PyQuillClient>()?;
    m.add_class::<stream::PyStream>()?;
    m.add_class::<stream::PyRequestSink>()?;
    m.add_class::<inference::PyGenerateRequest>()?;
    m.add_class::<inference::PyGenerateResponse>()?;
    m.add_class::<inference::PyGenerateStream>()?;
    m.add_class::<inference::PyStreamTiming>()?;
    m.add_function(wrap_pyfunction!(exit::_mark_shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(exit::_after_fork_in_child, m)?)?;
    m.add_function(wrap_pyfunction!(logging::_log_records, m)?)?;
    m.add_function(wrap_pyfunction!(logging::_log_records_done, m)?)?;
    m.add_function(wrap_pyfunction!(logging::_stop_log_records, m)?)?;
    logging::install();
    Ok(())
}
