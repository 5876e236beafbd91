//! When an unpickled tensor may share the buffer it is given instead of copying it.
//!
//! A `quill.Tensor` is immutable, so it may keep a buffer's memory only when nothing
//! can change that memory later. A read-only flag alone does not say so: numpy lets
//! the owner of a read-only array make it writable again (`arr.flags.writeable =
//! True`), and a read-only `memoryview` can sit over a `bytearray`. The rule follows
//! the buffer down to the object that owns the memory, as numpy itself does when asked
//! to make an array writable:
//!
//! - `bytes` and `quill.Tensor` never change: shared.
//! - A buffer exported writable, now: copied.
//! - A numpy array that owns its memory (no `base`): copied, since its owner can make
//!   it writable again; an array viewing another object: that object decides.
//! - A `memoryview`: the object it views decides.
//! - Any other exporter that hands out a read-only buffer (Ray's object store, a
//!   read-only `mmap`): taken at its word, and shared.

use bytes::Bytes;
use numpy::PyUntypedArray;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyMemoryView};

use super::tensor::{bytes_like, PyTensor};

/// How many owners deep the walk goes; a longer chain is copied.
const MAX_DEPTH: usize = 64;

/// A read-only buffer's memory, kept alive by a private memoryview of it. Dropping it
/// needs no GIL: the reference is released by PyO3 when the GIL is next held.
struct SharedView {
    _view: Py<PyAny>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the memory is read-only and stays valid while `_view` (a memoryview nobody
// else can reach, so nobody releases it) is alive; `Py<PyAny>` is Send + Sync.
unsafe impl Send for SharedView {}
unsafe impl Sync for SharedView {}

impl AsRef<[u8]> for SharedView {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see the Send/Sync impls; `len` bytes at `ptr` belong to the buffer.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Whether the memory behind `obj`'s buffer can never change (see the module docs).
/// Any failure along the way answers no: a copy is always correct.
fn immutable(obj: &Bound<'_, PyAny>) -> bool {
    let mut current = obj.clone();
    for _ in 0..MAX_DEPTH {
        let Ok(view) = PyMemoryView::from(&current) else {
            return false;
        };
        let readonly = view
            .getattr("readonly")
            .and_then(|r| r.is_truthy())
            .unwrap_or(false);
        if !readonly {
            return false;
        }
        // The exporter of the memory: a memoryview (or `PickleBuffer`) names the object
        // it views, an array itself.
        let Ok(owner) = view.getattr("obj") else {
            return false;
        };
        if owner.is_instance_of::<PyBytes>() || owner.cast::<PyTensor>().is_ok() {
            return true;
        }
        current = if let Ok(inner) = owner.cast::<PyMemoryView>() {
            match inner.getattr("obj") {
                Ok(o) => o,
                Err(_) => return false,
            }
        } else if owner.cast::<PyUntypedArray>().is_ok() {
            match owner.getattr("base") {
                // It owns its memory: `flags.writeable = True` is always allowed.
                Ok(base) if base.is_none() => return false,
                Ok(base) => base,
                Err(_) => return false,
            }
        } else if !owner.is(&current) {
            // A view (a read-only memoryview, a `PickleBuffer`) of another exporter:
            // that exporter's own buffer decides.
            owner
        } else {
            // An exporter with no known way to become writable again.
            return true;
        };
    }
    false
}

/// The bytes of `obj` without a copy where that is safe (`bytes`, contiguous buffers
/// whose memory cannot change, see the module docs), else a copy.
pub(crate) fn adopt_buffer(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Bytes::from_owner(PyBackedBytes::from(b.clone())));
    }
    let view = PyMemoryView::from(obj)?;
    // `cast` refuses views with a zero in their shape: an empty tensor has no bytes.
    if view.getattr("nbytes")?.extract::<usize>()? == 0 {
        return Ok(Bytes::new());
    }
    let shareable = view.getattr("c_contiguous")?.is_truthy()? && immutable(obj);
    if !shareable {
        return bytes_like(py, obj, |raw| Ok(Bytes::copy_from_slice(raw)));
    }
    let flat = view.call_method1("cast", ("B",))?;
    let (ptr, len) = {
        let buf = pyo3::buffer::PyBuffer::<u8>::get(&flat)?;
        (buf.buf_ptr() as *const u8, buf.item_count())
    };
    Ok(Bytes::from_owner(SharedView {
        _view: flat.unbind(),
        ptr,
        len,
    }))
}
