//! DLPack (`dlpack.h` 1.x): the C structs and the capsules that carry them, so a
//! `quill.Tensor` is shared with numpy, torch, jax, … without a copy either way.
//!
//! Export (`Tensor.__dlpack__`): the capsule owns a boxed managed tensor that holds a clone
//! of the tensor's `Bytes`, never a Python object, because a consumer may call the deleter
//! from any thread without the GIL. The bytes are shared and immutable, so a versioned capsule
//! says READ_ONLY; a legacy capsule has no way to say so and carries a private copy.
//!
//! Import (`Tensor.from_dlpack`): contiguous host memory is adopted as the owner of a
//! `Bytes`, whose drop calls the producer's deleter (with the GIL, which producers such as
//! numpy need); strided memory is copied into C order and the deleter called at once.
//! Every field of a foreign tensor is checked before it is used: a malformed one is an
//! exception, never a panic or an out-of-range read that quill could have caught.

use std::ffi::{c_void, CStr};
use std::panic::AssertUnwindSafe;
use std::ptr::NonNull;

use bytes::Bytes;
use pyo3::exceptions::{PyBufferError, PyTypeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyCapsuleMethods, PyDict};

use super::errors::{to_py_err, IntoPyResult};
use super::{exit, DETACH_THRESHOLD};
use crate::dtype::DType;
use crate::error::QuillError;
use crate::protocol::MAX_NDIM;
use crate::tensor::{Tensor, TensorMeta};

/// `kDLCPU`: the only place quill's bytes live, whatever a tensor's `device` label says.
const KDL_CPU: i32 = 1;
/// What `__dlpack_device__` answers for every quill tensor.
pub(crate) const DEVICE: (i32, i32) = (KDL_CPU, 0);
/// Pinned host memory of CUDA and ROCm (`kDLCUDAHost`, `kDLROCMHost`): plain host memory
/// to the CPU, so it is read like `kDLCPU`.
const HOST_READABLE: [i32; 3] = [KDL_CPU, 3, 11];

/// `DLPACK_FLAG_BITMASK_READ_ONLY`: the consumer must not write.
const FLAG_READ_ONLY: u64 = 1 << 0;
/// `DLPACK_FLAG_BITMASK_IS_COPIED`: the memory is a copy that belongs to the capsule.
const FLAG_IS_COPIED: u64 = 1 << 1;

/// The version quill writes: every field it fills means the same from 1.0 on.
const EXPORT_VERSION: DLPackVersion = DLPackVersion { major: 1, minor: 0 };

#[repr(C)]
#[derive(Clone, Copy)]
struct DLPackVersion {
    major: u32,
    minor: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *mut i64,
    strides: *mut i64,
    byte_offset: u64,
}

#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

#[repr(C)]
struct DLManagedTensorVersioned {
    version: DLPackVersion,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    flags: u64,
    dl_tensor: DLTensor,
}

/// What the legacy and the versioned managed tensor have in common, so one export and
/// one import serve both.
trait Managed: Sized + 'static {
    /// The capsule's name while nobody has taken the tensor.
    const NAME: &'static CStr;
    /// The name a consumer gives the capsule when it takes the tensor (and its deleter).
    const USED_NAME: &'static CStr;

    fn new(dl_tensor: DLTensor, flags: u64) -> Self;
    fn dl_tensor(&self) -> DLTensor;
    fn dl_tensor_mut(&mut self) -> &mut DLTensor;
    fn set_manager_ctx(&mut self, ctx: *mut c_void);
    fn deleter(&self) -> Option<unsafe extern "C" fn(*mut Self)>;
    /// The struct's DLPack version; legacy tensors have none.
    fn version(&self) -> Option<DLPackVersion>;
}

impl Managed for DLManagedTensor {
    const NAME: &'static CStr = c"dltensor";
    const USED_NAME: &'static CStr = c"used_dltensor";

    fn new(dl_tensor: DLTensor, _flags: u64) -> Self {
        DLManagedTensor {
            dl_tensor,
            manager_ctx: std::ptr::null_mut(),
            deleter: Some(delete_export::<Self>),
        }
    }
    fn dl_tensor(&self) -> DLTensor {
        self.dl_tensor
    }
    fn dl_tensor_mut(&mut self) -> &mut DLTensor {
        &mut self.dl_tensor
    }
    fn set_manager_ctx(&mut self, ctx: *mut c_void) {
        self.manager_ctx = ctx;
    }
    fn deleter(&self) -> Option<unsafe extern "C" fn(*mut Self)> {
        self.deleter
    }
    fn version(&self) -> Option<DLPackVersion> {
        None
    }
}

impl Managed for DLManagedTensorVersioned {
    const NAME: &'static CStr = c"dltensor_versioned";
    const USED_NAME: &'static CStr = c"used_dltensor_versioned";

    fn new(dl_tensor: DLTensor, flags: u64) -> Self {
        DLManagedTensorVersioned {
            version: EXPORT_VERSION,
            manager_ctx: std::ptr::null_mut(),
            deleter: Some(delete_export::<Self>),
            flags,
            dl_tensor,
        }
    }
    fn dl_tensor(&self) -> DLTensor {
        self.dl_tensor
    }
    fn dl_tensor_mut(&mut self) -> &mut DLTensor {
        &mut self.dl_tensor
    }
    fn set_manager_ctx(&mut self, ctx: *mut c_void) {
        self.manager_ctx = ctx;
    }
    fn deleter(&self) -> Option<unsafe extern "C" fn(*mut Self)> {
        self.deleter
    }
    fn version(&self) -> Option<DLPackVersion> {
        Some(self.version)
    }
}

// ---------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------

/// The memory an exported tensor points at.
enum Memory {
    /// The tensor's own bytes: shared, so the consumer is told not to write.
    Shared(Bytes),
    /// A copy that belongs to the consumer alone, which may write to it.
    Owned(Box<[u8]>),
}

/// Everything a capsule keeps alive. The managed tensor comes first (`repr(C)`), so the
/// pointer the consumer hands back to the deleter is the pointer to the whole box.
#[repr(C)]
struct Export<M> {
    managed: M,
    shape: Box<[i64]>,
    strides: Box<[i64]>,
    memory: Memory,
}

/// The deleter quill puts in its managed tensors. It only drops Rust values, and a `Bytes`
/// owner that does need Python (memory adopted from another producer) takes the GIL
/// itself, so consumers may call it on any thread, with or without the GIL.
unsafe extern "C" fn delete_export<M: Managed>(managed: *mut M) {
    if managed.is_null() {
        return;
    }
    // A panic must not unwind into the caller's C frames; dropping these never panics.
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: quill's deleter is only ever stored in a managed tensor that is the
        // first field of an `Export<M>` leaked from a Box by `export`, and DLPack calls it
        // once.
        drop(unsafe { Box::from_raw(managed.cast::<Export<M>>()) });
    }));
}

/// The capsule's destructor: frees the tensor unless a consumer took it (and renamed the
/// capsule), in which case the consumer calls the deleter when it is done.
unsafe extern "C" fn destroy_capsule<M: Managed>(capsule: *mut ffi::PyObject) {
    // SAFETY: CPython calls this with the GIL held on a live capsule; IsValid checks the
    // name and never raises, and GetPointer with that name then cannot fail.
    unsafe {
        if ffi::PyCapsule_IsValid(capsule, M::NAME.as_ptr()) == 0 {
            return;
        }
        let managed = ffi::PyCapsule_GetPointer(capsule, M::NAME.as_ptr()).cast::<M>();
        if let Some(deleter) = (*managed).deleter() {
            deleter(managed);
        }
    }
}

/// The arguments of `__dlpack__`, checked.
struct ExportRequest {
    versioned: bool,
    copy: bool,
}

fn parse_request(
    stream: Option<&Bound<'_, PyAny>>,
    max_version: Option<&Bound<'_, PyAny>>,
    dl_device: Option<&Bound<'_, PyAny>>,
    copy: Option<bool>,
) -> PyResult<ExportRequest> {
    if let Some(s) = stream {
        // -1 is "do not synchronize", which is all the CPU ever does.
        if !s.extract::<i64>().is_ok_and(|v| v == -1) {
            return Err(PyBufferError::new_err(format!(
                "stream must be None for a tensor in host memory (kDLCPU), got {}",
                repr(s)
            )));
        }
    }
    let versioned = match max_version {
        None => false,
        Some(v) => {
            let (major, _minor): (i64, i64) = v.extract().map_err(|_| {
                PyTypeError::new_err(format!(
                    "max_version must be None or a (major, minor) tuple of ints, got {}",
                    repr(v)
                ))
            })?;
            major >= 1
        }
    };
    if let Some(d) = dl_device {
        let (kind, id): (i64, i64) = d.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "dl_device must be None or a (device_type, device_id) tuple, got {}",
                repr(d)
            ))
        })?;
        if (kind, id) != (i64::from(KDL_CPU), 0) {
            return Err(PyBufferError::new_err(format!(
                "cannot export to DLPack device ({kind}, {id}): quill tensors live in host \
                 memory, device (1, 0) (kDLCPU)"
            )));
        }
    }
    let copy = match copy {
        Some(c) => {
            if !c && !versioned {
                return Err(PyBufferError::new_err(
                    "copy=False needs a versioned capsule (max_version >= (1, 0)): a legacy \
                     capsule cannot mark the shared, immutable bytes read-only",
                ));
            }
            c
        }
        None => !versioned,
    };
    Ok(ExportRequest { versioned, copy })
}

/// `Tensor.__dlpack__`: a capsule over the tensor's bytes (versioned, read-only, no copy)
/// or over a fresh copy (`copy=True`, or a legacy capsule).
///
/// ```python
/// t = quill.Tensor.from_numpy(np.arange(6, dtype=np.float32).reshape(2, 3))
/// view = np.from_dlpack(t)          # no copy; view.flags.writeable is False
/// mine = np.from_dlpack(t, copy=True)  # a writable copy
/// ```
pub(crate) fn export<'py>(
    py: Python<'py>,
    tensor: &Tensor,
    stream: Option<&Bound<'py, PyAny>>,
    max_version: Option<&Bound<'py, PyAny>>,
    dl_device: Option<&Bound<'py, PyAny>>,
    copy: Option<bool>,
) -> PyResult<Bound<'py, PyCapsule>> {
    let request = parse_request(stream, max_version, dl_device, copy)?;
    let memory = if request.copy {
        let data = tensor.data();
        let copied = if data.len() >= DETACH_THRESHOLD {
            exit::detach(py, || Box::<[u8]>::from(&data[..]))
        } else {
            Box::<[u8]>::from(&data[..])
        };
        Memory::Owned(copied)
    } else {
        Memory::Shared(tensor.data().clone())
    };
    if request.versioned {
        let flags = if request.copy {
            FLAG_IS_COPIED
        } else {
            FLAG_READ_ONLY
        };
        into_capsule::<DLManagedTensorVersioned>(py, tensor, memory, flags)
    } else {
        into_capsule::<DLManagedTensor>(py, tensor, memory, 0)
    }
}

fn into_capsule<'py, M: Managed>(
    py: Python<'py>,
    tensor: &Tensor,
    memory: Memory,
    flags: u64,
) -> PyResult<Bound<'py, PyCapsule>> {
    let dims = tensor.shape();
    let shape = dims
        .iter()
        .map(|&d| i64::try_from(d))
        .collect::<Result<Box<[i64]>, _>>()
        .map_err(|_| PyBufferError::new_err("a dimension does not fit in DLPack's int64"))?;
    // C order, in elements; validated shapes cannot overflow, saturation is only a guard.
    let mut strides = vec![0i64; dims.len()].into_boxed_slice();
    let mut step = 1i64;
    for i in (0..dims.len()).rev() {
        strides[i] = step;
        step = step.saturating_mul(shape[i].max(1));
    }
    let (code, bits, lanes) = tensor.dtype().dlpack();
    let dl_tensor = DLTensor {
        data: std::ptr::null_mut(),
        device: DLDevice {
            device_type: KDL_CPU,
            device_id: 0,
        },
        // At most MAX_NDIM (255) dims.
        ndim: dims.len() as i32,
        dtype: DLDataType { code, bits, lanes },
        shape: std::ptr::null_mut(),
        strides: std::ptr::null_mut(),
        byte_offset: 0,
    };
    // Leaked before any pointer into it is taken, so no later move can invalidate one.
    let export: &mut Export<M> = Box::leak(Box::new(Export {
        managed: M::new(dl_tensor, flags),
        shape,
        strides,
        memory,
    }));
    let data = match &mut export.memory {
        Memory::Shared(b) => b.as_ptr().cast_mut().cast::<c_void>(),
        Memory::Owned(b) => b.as_mut_ptr().cast::<c_void>(),
    };
    let (shape_ptr, strides_ptr) = if dims.is_empty() {
        (std::ptr::null_mut(), std::ptr::null_mut())
    } else {
        (export.shape.as_mut_ptr(), export.strides.as_mut_ptr())
    };
    let t = export.managed.dl_tensor_mut();
    t.data = data;
    t.shape = shape_ptr;
    t.strides = strides_ptr;
    let raw = NonNull::from(export);
    // SAFETY: `raw` is the leaked Export<M>; nothing else refers to it yet.
    unsafe { (*raw.as_ptr()).managed.set_manager_ctx(raw.as_ptr().cast()) };
    // SAFETY: the pointer is a live Export<M> that the capsule owns from here on, and
    // `destroy_capsule::<M>` frees it (through its deleter) unless a consumer took it.
    let capsule = unsafe {
        PyCapsule::new_with_pointer_and_destructor(
            py,
            raw.cast(),
            M::NAME,
            Some(destroy_capsule::<M>),
        )
    };
    capsule.inspect_err(|_| {
        // SAFETY: no capsule was made, so nothing else refers to the export.
        drop(unsafe { Box::from_raw(raw.as_ptr()) });
    })
}

// ---------------------------------------------------------------------------------------
// Import
// ---------------------------------------------------------------------------------------

/// A producer's managed tensor that quill took from its capsule: dropping it calls the
/// producer's deleter exactly once.
struct Taken {
    managed: *mut c_void,
    release: unsafe fn(*mut c_void),
}

// SAFETY: DLPack lets a consumer release a tensor from any thread; `Drop` takes the GIL
// for the deleter, so producers whose deleters touch Python objects are served too.
unsafe impl Send for Taken {}

/// Calls the deleter of the managed tensor `managed` points at, if it has one.
///
/// # Safety
/// `managed` is a live `M` whose deleter has not been called.
unsafe fn release<M: Managed>(managed: *mut c_void) {
    let managed = managed.cast::<M>();
    // SAFETY: see the function's contract.
    unsafe {
        if let Some(deleter) = (*managed).deleter() {
            deleter(managed);
        }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        let (managed, release) = (self.managed, self.release);
        // At exit (the hook ran, or Python is gone) the memory is left to the process's
        // end: a deleter that takes the GIL would hang or abort there.
        let _ = exit::attach_from_any_thread(|_py| {
            // SAFETY: `Taken` is made once per renamed capsule and dropped once.
            unsafe { release(managed) }
        });
    }
}

/// A taken tensor's contiguous memory, read in place.
struct Adopted {
    _taken: Taken,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the producer keeps `len` bytes at `ptr` valid until its deleter runs, which only
// dropping `_taken` does; quill never writes to them.
unsafe impl Send for Adopted {}

impl AsRef<[u8]> for Adopted {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see the Send impl; `ptr` is non-null whenever `len` > 0 (checked on
        // import), and empty tensors are never adopted.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A foreign tensor's layout, checked, before quill owns anything.
struct Plan {
    dtype: DType,
    shape: Vec<u64>,
    /// `data + byte_offset`.
    src: usize,
    len: usize,
    /// Byte strides when the memory is not C-contiguous.
    strided: Option<Vec<isize>>,
}

fn buffer_err(msg: impl Into<String>) -> PyErr {
    PyBufferError::new_err(msg.into())
}

fn invalid(msg: String) -> PyErr {
    to_py_err(QuillError::invalid(msg))
}

fn check_host_device(kind: i64, id: i64) -> PyResult<()> {
    if HOST_READABLE.iter().any(|&k| i64::from(k) == kind) {
        return Ok(());
    }
    Err(buffer_err(format!(
        "the DLPack tensor lives on device ({kind}, {id}), not in host memory; copy it to \
         the CPU first (torch: t.cpu(), cupy: t.get())"
    )))
}

/// Reads and checks the fields of `t`.
///
/// # Safety
/// `shape` and (when non-null) `strides` point at `ndim` int64 each, as DLPack promises;
/// quill checks `ndim` before reading them.
unsafe fn plan(t: &DLTensor) -> PyResult<Plan> {
    check_host_device(
        i64::from(t.device.device_type),
        i64::from(t.device.device_id),
    )?;
    let dtype = DType::from_dlpack(t.dtype.code, t.dtype.bits, t.dtype.lanes).py()?;
    let ndim = usize::try_from(t.ndim)
        .ok()
        .filter(|&n| n <= MAX_NDIM)
        .ok_or_else(|| {
            invalid(format!(
                "the DLPack tensor has ndim {}; 0 to {MAX_NDIM} dimensions are supported",
                t.ndim
            ))
        })?;
    if ndim > 0 && t.shape.is_null() {
        return Err(buffer_err("the DLPack tensor has a null shape pointer"));
    }
    // A slice over a misaligned pointer is undefined behaviour, not just a slow read.
    if ndim > 0 && !(t.shape.is_aligned() && t.strides.is_aligned()) {
        return Err(buffer_err(
            "the DLPack tensor's shape or strides pointer is not aligned for int64",
        ));
    }
    let dims: &[i64] = if ndim == 0 {
        &[]
    } else {
        // SAFETY: non-null, `ndim` entries (the function's contract).
        unsafe { std::slice::from_raw_parts(t.shape, ndim) }
    };
    let shape = dims
        .iter()
        .map(|&d| u64::try_from(d))
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|_| invalid(format!("negative dimension in DLPack shape {dims:?}")))?;
    // Dims, element count and byte size all within what an array can index (or an error).
    let meta = TensorMeta::new(shape, dtype, None).py()?;
    // Fits: validated metadata spans at most isize::MAX bytes.
    let len = meta.size_bytes().py()? as usize;
    let base = t.data as usize;
    if len > 0 && base == 0 {
        return Err(buffer_err(
            "the DLPack tensor has a null data pointer but holds elements",
        ));
    }
    let src = usize::try_from(t.byte_offset)
        .ok()
        .and_then(|off| base.checked_add(off))
        .ok_or_else(|| {
            buffer_err(format!(
                "DLPack byte_offset {} is out of range",
                t.byte_offset
            ))
        })?;
    let mut plan = Plan {
        dtype,
        shape: meta.shape,
        src,
        len,
        strided: None,
    };
    if len == 0 || ndim == 0 || t.strides.is_null() {
        // No strides: compact and row-major (DLPack before 1.2).
        return in_address_space(plan);
    }
    // SAFETY: non-null, `ndim` entries (the function's contract).
    let strides = unsafe { std::slice::from_raw_parts(t.strides, ndim) };
    let mut expect = 1i64;
    let mut contiguous = true;
    for (&d, &s) in plan.shape.iter().zip(strides).rev() {
        // A dim of one is never stepped over, so its stride says nothing.
        if d != 1 && s != expect {
            contiguous = false;
        }
        // The element count fits in isize (checked above), so this does not overflow.
        expect *= d as i64;
    }
    if contiguous {
        return in_address_space(plan);
    }
    // Every address a strided read touches, in i128 and checked, so nothing can wrap.
    let item = dtype.element_size() as i128;
    let out_of_range = || {
        buffer_err(format!(
            "DLPack strides {strides:?} reach outside the address space"
        ))
    };
    let (mut lo, mut hi) = (0i128, 0i128);
    for (&d, &s) in plan.shape.iter().zip(strides) {
        let reach = (d as i128 - 1)
            .checked_mul(i128::from(s))
            .and_then(|r| r.checked_mul(item))
            .ok_or_else(out_of_range)?;
        let bound = if reach < 0 { &mut lo } else { &mut hi };
        *bound = bound.checked_add(reach).ok_or_else(out_of_range)?;
    }
    let first = src as i128 + lo;
    let end = src as i128 + hi + item;
    if lo < isize::MIN as i128 || hi > isize::MAX as i128 || first < 0 || end > usize::MAX as i128 {
        return Err(out_of_range());
    }
    plan.strided = Some(
        strides
            .iter()
            .zip(&plan.shape)
            // A dim of one is never stepped over; any other |stride × item| is at most
            // |lo| or |hi|, both within isize.
            .map(|(&s, &d)| {
                if d == 1 {
                    0
                } else {
                    (i128::from(s) * item) as isize
                }
            })
            .collect(),
    );
    Ok(plan)
}

fn in_address_space(plan: Plan) -> PyResult<Plan> {
    if plan.src.checked_add(plan.len).is_none() {
        return Err(buffer_err(
            "the DLPack tensor's data reaches outside the address space",
        ));
    }
    Ok(plan)
}

/// Copies a strided tensor into C order. `strides` are in bytes and every address they
/// reach from `src` was checked by [`plan`].
///
/// # Safety
/// The memory the strides reach is readable for the duration of the call.
unsafe fn gather(src: usize, shape: &[usize], strides: &[isize], item: usize, out: &mut [u8]) {
    let n = shape.len();
    if n == 0 {
        // SAFETY: one element at `src` (the function's contract).
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, out.as_mut_ptr(), item) };
        return;
    }
    let (inner, inner_stride) = (shape[n - 1], strides[n - 1]);
    let outer = &shape[..n - 1];
    let rows: usize = outer.iter().product();
    let run = inner * item;
    let mut index = vec![0usize; n - 1];
    let mut base = 0isize;
    let mut o = 0usize;
    for _ in 0..rows {
        let row = (src as isize).wrapping_add(base);
        if inner_stride == item as isize {
            // SAFETY: the row's `run` bytes are within the checked range; `out` holds
            // every element once, in order.
            unsafe { std::ptr::copy_nonoverlapping(row as *const u8, out[o..].as_mut_ptr(), run) };
            o += run;
        } else {
            let mut at = row;
            for _ in 0..inner {
                // SAFETY: as above, one element at a time.
                unsafe {
                    std::ptr::copy_nonoverlapping(at as *const u8, out[o..].as_mut_ptr(), item)
                };
                o += item;
                at = at.wrapping_add(inner_stride);
            }
        }
        // Next row, odometer style; `base` never leaves the checked range.
        for d in (0..n - 1).rev() {
            if index[d] + 1 < outer[d] {
                index[d] += 1;
                base += strides[d];
                break;
            }
            base -= strides[d] * (outer[d] as isize - 1);
            index[d] = 0;
        }
    }
}

/// The element bytes of a taken tensor: its own memory when contiguous (unless
/// `force_copy`), else a C-order copy (the deleter then runs at once).
fn adopt_or_copy(py: Python<'_>, taken: Taken, plan: &Plan, force_copy: bool) -> Bytes {
    if plan.len == 0 {
        return Bytes::new();
    }
    if plan.strided.is_none() && !force_copy {
        return Bytes::from_owner(Adopted {
            _taken: taken,
            ptr: plan.src as *const u8,
            len: plan.len,
        });
    }
    let item = plan.dtype.element_size();
    // Checked by `plan`: each dim fits in isize.
    let shape: Vec<usize> = plan.shape.iter().map(|&d| d as usize).collect();
    let (src, len) = (plan.src, plan.len);
    let strided = plan.strided.as_deref();
    let copy = move || {
        let mut out = vec![0u8; len];
        match strided {
            // SAFETY: `taken` keeps the producer's memory alive until after the copy.
            Some(strides) => unsafe { gather(src, &shape, strides, item, &mut out) },
            // SAFETY: `len` contiguous bytes at `src`, alive as above.
            None => unsafe {
                std::ptr::copy_nonoverlapping(src as *const u8, out.as_mut_ptr(), len)
            },
        }
        out
    };
    let out = if len >= DETACH_THRESHOLD {
        exit::detach(py, copy)
    } else {
        copy()
    };
    drop(taken);
    Bytes::from(out)
}

/// Takes the managed tensor out of a capsule named `M::NAME`.
fn take<M: Managed>(
    py: Python<'_>,
    capsule: &Bound<'_, PyCapsule>,
    copy: Option<bool>,
) -> PyResult<(Bytes, Vec<u64>, DType)> {
    // SAFETY: the caller checked the capsule's name, so the pointer is non-null.
    let managed = unsafe { ffi::PyCapsule_GetPointer(capsule.as_ptr(), M::NAME.as_ptr()) };
    if managed.is_null() {
        return Err(PyErr::fetch(py));
    }
    let managed = managed.cast::<M>();
    // SAFETY: a capsule of this name holds an `M`, per the DLPack protocol.
    if let Some(v) = unsafe { (*managed).version() } {
        // Another major version may lay the rest of the struct out differently.
        if v.major != 1 {
            return Err(buffer_err(format!(
                "DLPack version {}.{} is not supported (1.x is)",
                v.major, v.minor
            )));
        }
    }
    // SAFETY: as above; `plan` reads `ndim` shape and stride entries, as the protocol
    // promises them.
    let plan = unsafe { plan(&(*managed).dl_tensor()) }?;
    if plan.strided.is_some() && copy == Some(false) {
        return Err(buffer_err(
            "the DLPack tensor is not C-contiguous, so it cannot be shared without a copy \
             (copy=False)",
        ));
    }
    // From here on quill owns the tensor: the renamed capsule no longer frees it.
    // SAFETY: a live capsule and a static name.
    if unsafe { ffi::PyCapsule_SetName(capsule.as_ptr(), M::USED_NAME.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    let taken = Taken {
        managed: managed.cast(),
        release: release::<M>,
    };
    let data = adopt_or_copy(py, taken, &plan, copy == Some(true));
    Ok((data, plan.shape, plan.dtype))
}

/// `Tensor.from_dlpack`: the element bytes, shape and dtype of any object with
/// `__dlpack__`, shared when the memory is C-contiguous host memory (`copy=None`), copied
/// when it is strided or `copy=True`.
///
/// ```python
/// arr = np.arange(6, dtype=np.int32).reshape(2, 3)
/// t = quill.Tensor.from_dlpack(arr)              # shares arr's memory
/// t2 = quill.Tensor.from_dlpack(arr.T)           # strided: one copy, in C order
/// ```
pub(crate) fn import(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    copy: Option<bool>,
) -> PyResult<(Bytes, Vec<u64>, DType)> {
    // The producer's methods are Python code.
    let _inside = exit::enter(py);
    let Ok(dlpack) = obj.getattr(intern!(py, "__dlpack__")) else {
        return Err(PyTypeError::new_err(format!(
            "from_dlpack expects an object with __dlpack__ (a numpy array, a torch tensor, \
             a quill.Tensor, …), got {}",
            type_name(obj)
        )));
    };
    if let Ok(device) = obj.getattr(intern!(py, "__dlpack_device__")) {
        let device = device.call0()?;
        let (kind, id): (i64, i64) = device.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "__dlpack_device__ returned {}, not a (device_type, device_id) tuple",
                repr(&device)
            ))
        })?;
        check_host_device(kind, id)?;
    }
    let kwargs = PyDict::new(py);
    kwargs.set_item(intern!(py, "max_version"), (1, 0))?;
    let capsule = match dlpack.call((), Some(&kwargs)) {
        Ok(c) => c,
        // A producer from before DLPack 1.0 knows no max_version keyword.
        Err(e) if e.is_instance_of::<PyTypeError>(py) => dlpack.call0()?,
        Err(e) => return Err(e),
    };
    let capsule = capsule.cast_into::<PyCapsule>().map_err(|e| {
        PyTypeError::new_err(format!(
            "__dlpack__ returned {}, not a DLPack capsule",
            type_name(&e.into_inner())
        ))
    })?;
    let raw = capsule.as_ptr();
    // SAFETY: a live capsule; IsValid only compares names and never raises.
    let (versioned, legacy) = unsafe {
        (
            ffi::PyCapsule_IsValid(raw, DLManagedTensorVersioned::NAME.as_ptr()) != 0,
            ffi::PyCapsule_IsValid(raw, DLManagedTensor::NAME.as_ptr()) != 0,
        )
    };
    if versioned {
        take::<DLManagedTensorVersioned>(py, &capsule, copy)
    } else if legacy {
        take::<DLManagedTensor>(py, &capsule, copy)
    } else {
        let name = match capsule.name() {
            // SAFETY: the capsule is alive while the name is read.
            Ok(Some(n)) => format!("named {:?}", unsafe { n.as_cstr() }.to_string_lossy()),
            _ => "without a name".to_string(),
        };
        Err(buffer_err(format!(
            "__dlpack__ returned a capsule {name}; expected \"dltensor_versioned\" or \
             \"dltensor\" (a \"used_\" capsule was already consumed)"
        )))
    }
}

fn repr(obj: &Bound<'_, PyAny>) -> String {
    obj.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unrepresentable>".into())
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}
