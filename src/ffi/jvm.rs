//! The JVM fast path (feature `jvm`): hand-written JNI functions for the calls a
//! Kotlin loop makes most, beside the uniffi surface. Through uniffi's JNA bindings
//! every call allocates a JNA `Structure` for its call status (about 9 µs on this
//! project's JDK 17) and clones the object handle with a second such call, so a trivial
//! method costs tens of µs; these functions take primitives, arrays and the object's
//! own handle, borrowed, and cost tens of ns. The Kotlin side is `FastFfi.kt` in the
//! Kotlin extras, which keeps the object alive (the generated call counter) while a
//! borrowed handle is in use and turns errors back into the generated `QuillException`.
//!
//! Handles are uniffi's: the pointer of an `Arc<T>` (uniffi_core's `Handle::from_arc`).
//! A borrowed one is read without taking a reference; `tensorRetain` /
//! `tensorRelease` take and drop one for a zero-copy view.
//!
//! Errors are thrown as `dev.quill.FastFfi$Failure(byte[])` carrying the error in
//! uniffi's own serialization, so the one mapping of `QuillError` to `QuillException`
//! (the generated `FfiConverterTypeQuillError`) serves both paths. A panic is caught
//! and thrown as a `RuntimeException`: it never unwinds into the JVM.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;
use jni::objects::{
    JByteArray, JByteBuffer, JClass, JLongArray, JObject, JPrimitiveArray, JString, ReleaseMode,
};
use jni::sys::{jint, jlong, jobject, jsize};
use jni::JNIEnv;

use crate::client::{Call, QuillClient, Reply};
use crate::codec::receive_buffer;
use crate::dtype::DType;
use crate::error::{QuillError, Result};
use crate::tensor::{Tensor, TensorMeta};

const FAILURE: &str = "dev/quill/FastFfi$Failure";

/// What a JNI function returns when it has thrown (the JVM ignores it).
trait Thrown {
    fn thrown() -> Self;
}
impl Thrown for jlong {
    fn thrown() -> Self {
        0
    }
}
impl Thrown for jint {
    fn thrown() -> Self {
        0
    }
}
impl Thrown for () {
    fn thrown() -> Self {}
}
impl Thrown for jobject {
    fn thrown() -> Self {
        std::ptr::null_mut()
    }
}

/// Runs `body`, throwing its error (or a panic) into the JVM.
fn guard<'local, T: Thrown>(
    env: &mut JNIEnv<'local>,
    body: impl FnOnce(&mut JNIEnv<'local>) -> Result<T>,
) -> T {
    match catch_unwind(AssertUnwindSafe(|| body(env))) {
        Ok(Ok(value)) => value,
        Ok(Err(error)) => {
            throw_quill_error(env, error);
            T::thrown()
        }
        Err(_) => {
            // An exception may already be pending from a JNI call that failed.
            if !env.exception_check().unwrap_or(true) {
                let _ = env.throw_new(
                    "java/lang/RuntimeException",
                    "internal error in quill (Rust panic)",
                );
            }
            T::thrown()
        }
    }
}

fn throw_quill_error(env: &mut JNIEnv<'_>, error: QuillError) {
    if env.exception_check().unwrap_or(true) {
        return; // a JNI call already threw (e.g. OutOfMemoryError): keep that one
    }
    let mut encoded = Vec::new();
    <QuillError as uniffi::Lower<crate::UniFfiTag>>::write(error, &mut encoded);
    let thrown = env.byte_array_from_slice(&encoded).and_then(|bytes| {
        let failure = env.new_object(FAILURE, "([B)V", &[(&bytes).into()])?;
        env.throw(jni::objects::JThrowable::from(failure))
    });
    if thrown.is_err() && !env.exception_check().unwrap_or(true) {
        let _ = env.throw_new(
            "java/lang/RuntimeException",
            "quill could not report an error",
        );
    }
}

/// A JNI failure (an exception is then pending in the JVM) as an error of ours.
fn jni_error(e: jni::errors::Error) -> QuillError {
    QuillError::invalid(format!("JNI call failed: {e}"))
}

/// The object behind a borrowed handle.
///
/// # Safety
/// `handle` must be a live uniffi handle of a `T` that the caller keeps alive for `'a`
/// (the Kotlin side holds the object's call counter while it calls).
unsafe fn borrowed<'a, T>(handle: jlong) -> Result<&'a T> {
    let ptr = handle as *const T;
    if ptr.is_null() {
        return Err(QuillError::invalid(
            "the object has no Rust side (null handle)",
        ));
    }
    Ok(&*ptr)
}

fn new_handle(tensor: Tensor) -> jlong {
    Arc::into_raw(Arc::new(tensor)) as jlong
}

fn dtype_of(wire: jint) -> Result<DType> {
    u8::try_from(wire)
        .map_err(|_| QuillError::UnsupportedDType {
            reason: format!("unknown dtype number {wire}"),
        })
        .and_then(DType::from_wire)
}

fn shape_of(env: &mut JNIEnv<'_>, shape: &JLongArray<'_>) -> Result<Vec<u64>> {
    let len = env.get_array_length(shape).map_err(jni_error)?;
    let mut dims = vec![0i64; len as usize];
    env.get_long_array_region(shape, 0, &mut dims)
        .map_err(jni_error)?;
    dims.into_iter()
        .map(|d| {
            u64::try_from(d).map_err(|_| QuillError::invalid(format!("negative dimension {d}")))
        })
        .collect()
}

fn name_of(env: &mut JNIEnv<'_>, name: &JString<'_>) -> Result<Option<String>> {
    if name.is_null() {
        return Ok(None);
    }
    Ok(Some(env.get_string(name).map_err(jni_error)?.into()))
}

/// Bytes of a primitive array (any element type) of `element_size`-byte elements.
fn array_bytes(env: &mut JNIEnv<'_>, array: &JObject<'_>, element_size: jint) -> Result<usize> {
    let array: &JPrimitiveArray<'_, i8> = array.into();
    let len = env.get_array_length(array).map_err(jni_error)? as usize;
    Ok(len * element_size.max(0) as usize)
}

/// Copies `len` bytes between `array`'s elements and `f`'s slice, with the array pinned
/// (`GetPrimitiveArrayCritical`: no copy by the JVM on HotSpot).
fn with_array<R>(
    env: &mut JNIEnv<'_>,
    array: &JObject<'_>,
    len: usize,
    mode: ReleaseMode,
    f: impl FnOnce(&mut [u8]) -> R,
) -> Result<R> {
    let array: &JPrimitiveArray<'_, i8> = array.into();
    // SAFETY: the critical section only copies bytes and makes no JNI call.
    let mut elements =
        unsafe { env.get_array_elements_critical(array, mode) }.map_err(jni_error)?;
    // SAFETY: the elements hold at least `len` bytes (`array_bytes` of this array).
    let bytes = unsafe { std::slice::from_raw_parts_mut(elements.as_mut_ptr().cast::<u8>(), len) };
    Ok(f(bytes))
}

/// `long FastFfi.tensorNumElements(long handle)`
#[no_mangle]
pub extern "system" fn Java_dev_quill_FastFfi_tensorNumElements(
    mut env: JNIEnv<'_>,
    _class: JClass<'_>,
    handle: jlong,
) -> jlong {
    // SAFETY: the Kotlin side passes the handle of a live Tensor it holds.
    guard(&mut env, |_| {
        Ok(unsafe { borrowed::<Tensor>(handle) }?.num_elements() as jlong)
    })
}

/// `long FastFfi.tensorSizeBytes(long handle)`
#[no_mangle]
pub extern "system" fn Java_dev_quill_FastFfi_tensorSizeBytes(
    mut env: JNIEnv<'_>,
    _class: JClass<'_>,
    handle: jlong,
) -> jlong {
    // SAFETY: as above.
    guard(&mut env, |_| {
        Ok(unsafe { borrowed::<Tensor>(handle) }?.size_bytes() as jlong)
    })
}

/// `int FastFfi.tensorDTypeWire(long handle)`: the dtype's wire number (protocol §7).
#[no_mangle]
pub extern "system" fn Java_dev_quill_FastFfi_tensorDTypeWire(
    mut env: JNIEnv<'_>,
    _class: JClass<'_>,
    handle: jlong,
) -> jint {
    // SAFETY: as above.
    guard(&mut env, |_| {
        Ok(jint::from(
            unsafe { borrowed::<Tensor>(handle) }?.dtype().wire(),
        ))
    })
}

/// `long[] FastFfi.tensorShape(long handle)`
#[no_mangle]
pub extern "system" fn Java_dev_quill_FastFfi_tensorShape(
    mut env: JNIEnv<'_>,
    _class: JClass<'_>,
    handle: jlong,
) -> jobject {
    guard(&mut env, |env| {
        // SAFETY: as above.
        let tensor = unsafe { borrowed::<Tensor>(handle) }?;
        let dims: Vec<i64> = tensor.shape().iter().map(|&d| d as i64).collect();
        let out = env.new_long_array(dims.len() as jsize).map_err(jni_error)?;
        env.set_long_array_region(&out, 0, &dims)
            .map_err(jni_error)?;
        Ok(out.into_raw())
    })
}

/// `long FastFfi.tensorFromArray(Object array, int elementSize, long[] shape, int dtype,
/// String name)`: a new tensor handle over one copy of a primitive array's elements.
#[no_mangle]
pub extern "system" fn Java_dev_quill_FastFfi_tensorFromArray(
    mut env: JNIEnv<'_>,
    _class: JClass<'_>,
    array: JObject<'_>,
    element_size: jint,
    shape: JLongArray<'_>,
    dtype: jint,
    name: JString<'_>,
) -> jlong {
    guard(&mut env, |env| {
        let meta = TensorMeta::new(
            shape_of(env, &shape)?,
            dtype_of(dtype)?,
            name_of(env, &name)?,
        )?;
        let len = array_bytes(env, &array, element_size)?;
        // Checked before copying, so a wrong length never costs a large allocation.
        meta.check_data_len(len)?;
        let mut data = receive_buffer(len);
        with_array(env, &array, len, ReleaseMode::NoCopyBack, |bytes| {
            data.extend_from_slice(bytes)
        })?;
        Ok(new_handle(Tensor::new(meta, data.freeze())?))
    })
}

/// `long FastFfi.tensorFromDirect(ByteBuffer buffer, int position, int length, long[]
/// shape, int dtype, String name)`: a new tensor handle over one copy of a direct
/// buffer's bytes `[position, position + length)`.
#[no_mangle]
pub extern "system" fn Java_dev_quill_FastFfi_tensorFromDirect(
    mut env: JNIEnv<'_>,
    _class: JClass<'_>,
    buffer: JByteBuffer<'_>,
    position: jint,
    length: jint,
    shape: JLongArray<'_>,
    dtype: jint,
    name: JString<'_>,
) -> jlong {
    guard(&mut env, |env| {
        let meta = TensorMeta::new(
            shape_of(env, &shape)?,
            dtype_of(dtype)?,
            name_of(env, &name)?,
        )?;
        let (ptr, capacity) = direct(env, &buffer)?;
        let (start, len) = (position.max(0) as usize, length.max(0) as usize);
        if start + len > capacity {
            return Err(QuillError::invalid(format!(
                "bytes {start}..{} are outside the buffer's {capacity}",
                start + len
            )));
        }
        meta.check_data_len(len)?;
        // SAFETY: the range lies inside the direct buffer, which the caller keeps alive.
        let bytes = unsafe { std::slice::from_raw_parts(ptr.add(start), len) };
        let mut data = receive_buffer(len);
        data.extend_from_slice(bytes);
        Ok(new_handle(Tensor::new(meta, data.freeze())?))
    })
}

fn direct(env: &mut JNIEnv<'_>, buffer: &JByteBuffer<'_>) -> Result<(*mut u8, usize)> {
    let ptr = env.get_direct_buffer_address(buffer).map_err(|_| {
        QuillError::invalid(
            "the buffer is not a direct ByteBuffer (allocate it with allocateDirect)",
        )
    })?;
    let capacity = env.get_direct_buffer_capacity(buffer).map_err(jni_error)?;
    Ok((ptr, capacity))
}

/// `void FastFfi.tensorCopyToArray(long handle, Object array, int elementSize, int
/// byteOffset)`: the element bytes into a primitive array from `byteOffset` (one copy;
/// the array must hold them from there).
#[no_mangle]
pub extern "system" fn Java_dev_quill_FastFfi_tensorCopyToArray(
    mut env: JNIEnv<'_>,
    _class: JClass<'_>,
    handle: jlong,
    array: JObject<'_>,
    element_size: jint,
    byte_offset: jint,
) {
    guard(&mut env, |env| {
        // SAFETY: as above.
        let tensor = unsafe { borrowed::<Tensor>(handle) }?;
        let len = array_bytes(env, &array, element_size)?;
        let data = tensor.data();
        let start = usize::try_from(byte_offset)
            .map_err(|_| QuillError::invalid(format!("offset {byte_offset} is negative")))?;
        let end = start
            .checked_add(data.len())
            .filter(|&end| end <= len)
            .ok_or_else(|| {
                QuillError::invalid(format!(
                    "the tensor's {} bytes do not fit the array's {len} from offset {start}",
                    data.len()
                ))
            })?;
        with_array(env, &array, len, ReleaseMode::CopyBack, |bytes| {
            bytes[start..end].copy_from_slice(data)
        })
    })
}

/// `void FastFfi.tensorCopyToDirect(long handle, ByteBuffer buffer, int position)`
#[no_mangle]
pub extern "system" fn Java_dev_quill_FastFfi_tensorCopyToDirect(
    mut env: JNIEnv<'_>,
    _class: JClass<'_>,
    handle: jlong,
    buffer: JByteBuffer<'_>,
    position: jint,
) {
    guard(&mut env, |env| {
        // SAFETY: as above.
        let data = unsafe { borrowed::<Tensor>(handle) }?.data();
        let (ptr, capacity) = direct(env, &buffer)?;
        let start = position.max(0) as usize;
        if start + data.len() > capacity {
            return Err(QuillError::invalid(format!(
                "the tensor's {} bytes do not fit the buffer from position {start} (capacity {capacity})",
                data.len()
            )));
        }
        // SAFETY: the range lies inside the direct buffer, which the caller keeps alive.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), ptr.add(start), data.len()) };
        Ok(())
    })
}

/// `ByteBuffer FastFfi.tensorView(long retained)`: a direct buffer over the element
/// bytes of the tensor behind `retained` (a handle from `tensorRetain`, which the
/// Kotlin side releases once the buffer is unreachable). No copy.
#[no_mangle]
pub extern "system" fn Java_dev_quill_FastFfi_tensorView(
    mut env: JNIEnv<'_>,
    _class: JClass<'_>,
    retained: jlong,
) -> jobject {
    guard(&mut env, |env| {
        // SAFETY: `retained` holds its own reference to the tensor.
        let data = unsafe { borrowed::<Tensor>(retained) }?.data();
        // SAFETY: the bytes live as long as the retained reference; the Kotlin side
        // hands out only a read-only view of this buffer (the bytes are shared).
        let buffer = unsafe { env.new_direct_byte_buffer(data.as_ptr().cast_mut(), data.len()) }
            .map_err(jni_error)?;
        Ok(buffer.into_raw())
    })
}

/// `long FastFfi.tensorRetain(long handle)`: a new handle (reference) to the same tensor.
#[no_mangle]
pub extern "system" fn Java_dev_quill_FastFfi_tensorRetain(
    mut env: JNIEnv<'_>,
    _class: JClass<'_>,
    handle: jlong,
) -> jlong {
    guard(&mut env, |_| {
        // SAFETY: as above; the strong count goes up by one for the new handle.
        unsafe { borrowed::<Tensor>(handle) }?;
        unsafe { Arc::increment_strong_count(handle as *const Tensor) };
        Ok(handle)
    })
}

/// `void FastFfi.tensorRelease(long retained)`: drops a handle from `tensorRetain`.
#[no_mangle]
pub extern "system" fn Java_dev_quill_FastFfi_tensorRelease(
    mut env: JNIEnv<'_>,
    _class: JClass<'_>,
    retained: jlong,
) {
    guard(&mut env, |_| {
        // SAFETY: `retained` came from tensorRetain and is released once.
        unsafe { borrowed::<Tensor>(retained) }?;
        unsafe { Arc::decrement_strong_count(retained as *const Tensor) };
        Ok(())
    })
}

/// `byte[] FastFfi.clientCall(long client, String service, String method, byte[] body,
/// boolean idempotent)`: a unary `application/proto` call driven on the calling thread
/// (as the Python face's `call`), for use off the main thread (`Dispatchers.IO`).
#[no_mangle]
pub extern "system" fn Java_dev_quill_FastFfi_clientCall(
    mut env: JNIEnv<'_>,
    _class: JClass<'_>,
    client: jlong,
    service: JString<'_>,
    method: JString<'_>,
    body: JByteArray<'_>,
    idempotent: jni::sys::jboolean,
) -> jobject {
    guard(&mut env, |env| {
        // SAFETY: the Kotlin side passes the handle of a live QuillClient it holds.
        let client = unsafe { borrowed::<QuillClient>(client) }?;
        let service: String = env.get_string(&service).map_err(jni_error)?.into();
        let method: String = env.get_string(&method).map_err(jni_error)?.into();
        let body = Bytes::from(env.convert_byte_array(&body).map_err(jni_error)?);
        let call = Call::proto(service, method, body).idempotent(idempotent != 0);
        let reply: Reply = client.run_blocking(call)?;
        Ok(env
            .byte_array_from_slice(&reply.body)
            .map_err(jni_error)?
            .into_raw())
    })
}

/// The logger bridge: events go to the static `FastFfi.dispatchLog(int level, int kind,
/// String target, int status, long elapsedUs, String message)`, which hands a
/// `LogEvent` to the installed Kotlin `QuillLogger`. One JNI upcall per event, where the
/// generated foreign-trait call goes through JNA (about 50 µs an event).
struct LogBridge {
    vm: jni::JavaVM,
    class: jni::objects::GlobalRef,
    dispatch: jni::objects::JStaticMethodID,
}

impl LogBridge {
    fn send(&self, event: &crate::client::events::Event) {
        use crate::client::events::Level;
        use jni::signature::{Primitive, ReturnType};
        use jni::sys::jvalue;
        // Runtime threads attach once, as daemons (they never keep the JVM alive); a
        // JVM thread waiting in a call is attached already.
        let Ok(mut env) = self.vm.attach_current_thread_as_daemon() else {
            return;
        };
        // uniffi generates the Kotlin enums in the Rust declaration order, so a
        // variant's position there is its Kotlin ordinal: `EventKind` has implicit
        // discriminants (0, 1, …), `Level` numbers its variants from `Debug`.
        let level = event.level as jint - Level::Debug as jint;
        let kind = event.kind as jint;
        let _ = env.with_local_frame(4, |env| -> jni::errors::Result<()> {
            let target = env.new_string(&event.target)?;
            let message = env.new_string(&event.message)?;
            let class: &JClass<'_> = self.class.as_obj().into();
            let args = [
                jvalue { i: level },
                jvalue { i: kind },
                jvalue { l: target.as_raw() },
                jvalue {
                    i: event.status.map_or(-1, jint::from),
                },
                jvalue {
                    j: i64::try_from(event.elapsed.as_micros()).unwrap_or(i64::MAX),
                },
                jvalue {
                    l: message.as_raw(),
                },
            ];
            // SAFETY: the method ID belongs to this class and the arguments match its
            // signature (IILjava/lang/String;IJLjava/lang/String;)V.
            unsafe {
                env.call_static_method_unchecked(
                    class,
                    self.dispatch,
                    ReturnType::Primitive(Primitive::Void),
                    &args,
                )
            }?;
            Ok(())
        });
        // A Kotlin exception from the logger is dropped: it must never reach the call.
        if env.exception_check().unwrap_or(false) {
            let _ = env.exception_clear();
        }
    }
}

/// `void FastFfi.setLogger(boolean enabled, int level)`: routes the client events from
/// `level` (0 debug, 1 info, 2 warning) up to `FastFfi.dispatchLog`, or stops them.
#[no_mangle]
pub extern "system" fn Java_dev_quill_FastFfi_setLogger(
    mut env: JNIEnv<'_>,
    class: JClass<'_>,
    enabled: jni::sys::jboolean,
    level: jint,
) {
    use crate::client::events::{self, Level};
    guard(&mut env, |env| {
        let level = match level {
            0 => Level::Debug,
            1 => Level::Info,
            _ => Level::Warning,
        };
        if enabled == 0 {
            events::set_listener(None, level);
            return Ok(());
        }
        let bridge = LogBridge {
            vm: env.get_java_vm().map_err(jni_error)?,
            class: env.new_global_ref(&class).map_err(jni_error)?,
            dispatch: env
                .get_static_method_id(
                    &class,
                    "dispatchLog",
                    "(IILjava/lang/String;IJLjava/lang/String;)V",
                )
                .map_err(jni_error)?,
        };
        events::set_listener(
            Some(Arc::new(move |e: &events::Event| bridge.send(e))),
            level,
        );
        Ok(())
    })
}
