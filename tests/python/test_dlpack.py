"""DLPack both ways: zero copy, read-only export, capsule lifetimes, every dtype, and
malformed producers (built by hand with ctypes) that must raise, never crash."""

from __future__ import annotations

import ctypes
import gc
import sys
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import quill

DTYPES = ["float32", "float64", "float16", "bfloat16", "int8", "int32", "int64", "uint8", "bool"]
# (code, bits) from dlpack.h: kDLInt 0, kDLUInt 1, kDLFloat 2, kDLBfloat 4, kDLBool 6.
DLPACK_CODES = {
    "float32": (2, 32),
    "float64": (2, 64),
    "float16": (2, 16),
    "bfloat16": (4, 16),
    "int8": (0, 8),
    "int32": (0, 32),
    "int64": (0, 64),
    "uint8": (1, 8),
    "bool": (6, 8),
}
READ_ONLY, IS_COPIED = 1, 2
# numpy 2.1 and later ask for a versioned capsule (which can say read-only, so quill shares
# its memory) and take copy=; numpy 2.0 (the newest for CPython 3.9) asks for a legacy
# capsule, which quill fills with a private copy, and cannot export read-only arrays.
NUMPY_VERSIONED = np.lib.NumpyVersion(np.__version__) >= "2.1.0"
LEGACY_NUMPY = "numpy < 2.1 asks for legacy capsules, which carry a private copy"


# --- dlpack.h, for reading quill's capsules and building malformed producers ---------------


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensor(ctypes.Structure):
    pass


class DLManagedTensorVersioned(ctypes.Structure):
    pass


LEGACY_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensor))
VERSIONED_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensorVersioned))
DLManagedTensor._fields_ = [
    ("dl_tensor", DLTensor),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", LEGACY_DELETER),
]
DLManagedTensorVersioned._fields_ = [
    ("version", DLPackVersion),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", VERSIONED_DELETER),
    ("flags", ctypes.c_uint64),
    ("dl_tensor", DLTensor),
]

api = ctypes.pythonapi
api.PyCapsule_GetName.restype = ctypes.c_char_p
api.PyCapsule_GetName.argtypes = [ctypes.py_object]
api.PyCapsule_GetPointer.restype = ctypes.c_void_p
api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
api.PyCapsule_IsValid.restype = ctypes.c_int
api.PyCapsule_IsValid.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
api.PyCapsule_New.restype = ctypes.py_object
api.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]

# Capsule names must outlive the capsules: module-level bytes do.
VERSIONED_NAME, LEGACY_NAME = b"dltensor_versioned", b"dltensor"


def capsule_name(capsule: object) -> str:
    name = api.PyCapsule_GetName(capsule)
    assert name is not None
    return str(name.decode())


def read_versioned(capsule: object) -> DLManagedTensorVersioned:
    ptr = api.PyCapsule_GetPointer(capsule, VERSIONED_NAME)
    return DLManagedTensorVersioned.from_address(ptr)


def addr(obj: Any) -> int:
    return int(np.asarray(obj).__array_interface__["data"][0])


# The same C function as api.PyCapsule_GetPointer, taking the raw pointer a destructor gets.
_get_pointer = ctypes.pythonapi["PyCapsule_GetPointer"]
_get_pointer.restype = ctypes.c_void_p
_get_pointer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _destroy_capsule(capsule: int) -> None:
    """What a producer's capsule destructor does: free the tensor unless it was taken."""
    for name, struct in (
        (VERSIONED_NAME, DLManagedTensorVersioned),
        (LEGACY_NAME, DLManagedTensor),
    ):
        if api.PyCapsule_IsValid(capsule, name):
            managed = struct.from_address(_get_pointer(capsule, name))
            managed.deleter(ctypes.pointer(managed))


class Producer:
    """A DLPack producer whose tensor fields a test sets by hand; counts deleter calls."""

    def __init__(
        self,
        raw: bytes,
        shape: list[int],
        *,
        strides: list[int] | None = None,
        dtype: tuple[int, int, int] = (1, 8, 1),
        ndim: int | None = None,
        device: tuple[int, int] = (1, 0),
        byte_offset: int = 0,
        version: tuple[int, int] = (1, 0),
        flags: int = 0,
        legacy: bool = False,
        null_data: bool = False,
        null_shape: bool = False,
        misaligned_shape: bool = False,
    ) -> None:
        self.deleted = 0
        self.buf = (ctypes.c_uint8 * max(len(raw), 1)).from_buffer_copy(raw or b"\0")
        self.shape = (ctypes.c_int64 * max(len(shape), 1))(*shape)
        self.strides = (
            None if strides is None else (ctypes.c_int64 * max(len(strides), 1))(*strides)
        )
        tensor = DLTensor(
            data=None if null_data else ctypes.addressof(self.buf),
            device=DLDevice(*device),
            ndim=len(shape) if ndim is None else ndim,
            dtype=DLDataType(*dtype),
            shape=None
            if null_shape
            else ctypes.cast(
                ctypes.addressof(self.shape) + misaligned_shape, ctypes.POINTER(ctypes.c_int64)
            ),
            strides=None
            if self.strides is None
            else ctypes.cast(self.strides, ctypes.POINTER(ctypes.c_int64)),
            byte_offset=byte_offset,
        )
        self.legacy = legacy
        if legacy:
            self.deleter: Any = LEGACY_DELETER(self._delete)
            self.managed: Any = DLManagedTensor(dl_tensor=tensor, deleter=self.deleter)
        else:
            self.deleter = VERSIONED_DELETER(self._delete)
            self.managed = DLManagedTensorVersioned(
                version=DLPackVersion(*version), flags=flags, dl_tensor=tensor, deleter=self.deleter
            )

    def _delete(self, _managed: object) -> None:
        self.deleted += 1

    def capsule(self) -> object:
        name = LEGACY_NAME if self.legacy else VERSIONED_NAME
        destroy = ctypes.cast(_destroy_capsule, ctypes.c_void_p).value
        return api.PyCapsule_New(ctypes.addressof(self.managed), name, destroy)

    def __dlpack__(self, **_kwargs: object) -> object:
        return self.capsule()

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)


def sample(dtype: str, shape: tuple[int, ...] = (2, 3)) -> quill.Tensor:
    qd = quill.DType.from_name(dtype)
    n = int(np.prod(shape))
    raw = bytes(
        (i * 37 + 11) % 2 if dtype == "bool" else (i * 37 + 11) % 256
        for i in range(n * qd.element_size)
    )
    return quill.Tensor.from_bytes(raw, list(shape), qd, name="s")


# --- export: quill -> numpy ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d != "bfloat16"])
def test_numpy_reads_every_dtype_without_a_copy(dtype: str) -> None:
    t = sample(dtype)
    a = np.from_dlpack(t)
    assert a.dtype == np.dtype(dtype) and a.shape == (2, 3)
    assert np.array_equal(a, t.to_numpy())
    if NUMPY_VERSIONED:
        assert addr(a) == addr(t)  # the tensor's own memory
    else:
        assert addr(a) != addr(t)  # LEGACY_NUMPY
    assert not a.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        a[0, 0] = 1


def test_numpy_has_no_bfloat16_but_the_capsule_says_kdlbfloat() -> None:
    t = sample("bfloat16")
    with pytest.raises((BufferError, RuntimeError), match="Unsupported dtype"):
        np.from_dlpack(t)  # RuntimeError up to numpy 2.4, BufferError later
    capsule = t.__dlpack__(max_version=(1, 0))
    m = read_versioned(capsule)
    assert (m.dl_tensor.dtype.code, m.dl_tensor.dtype.bits, m.dl_tensor.dtype.lanes) == (4, 16, 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_versioned_capsule_fields(dtype: str) -> None:
    t = sample(dtype, (2, 3, 4))
    assert t.__dlpack_device__() == (1, 0)
    capsule = t.__dlpack__(max_version=(1, 0))
    assert capsule_name(capsule) == "dltensor_versioned"
    m = read_versioned(capsule)
    assert (m.version.major, m.version.minor) == (1, 0)
    assert m.flags == READ_ONLY
    dl = m.dl_tensor
    assert (dl.device.device_type, dl.device.device_id) == (1, 0)
    assert (dl.dtype.code, dl.dtype.bits, dl.dtype.lanes) == (*DLPACK_CODES[dtype], 1)
    assert dl.ndim == 3 and [dl.shape[i] for i in range(3)] == [2, 3, 4]
    assert [dl.strides[i] for i in range(3)] == [12, 4, 1]  # in elements, C order
    assert dl.byte_offset == 0 and dl.data == addr(t)
    del m, dl, capsule  # never consumed: the capsule's destructor frees it


def test_legacy_capsule_carries_a_private_copy() -> None:
    t = sample("int32")
    capsule = t.__dlpack__()
    assert capsule_name(capsule) == "dltensor"
    managed = DLManagedTensor.from_address(api.PyCapsule_GetPointer(capsule, LEGACY_NAME))
    assert managed.dl_tensor.data != addr(t)  # a legacy capsule cannot say read-only
    with pytest.raises(BufferError, match="copy=False needs a versioned capsule"):
        t.__dlpack__(copy=False)
    for old in [(0, 8), None]:
        assert capsule_name(t.__dlpack__(max_version=old)) == "dltensor"


def test_copy_true_is_writable_and_private() -> None:
    t = sample("float32")
    capsule = t.__dlpack__(max_version=(1, 0), copy=True)
    m = read_versioned(capsule)  # valid while the capsule is
    assert m.flags == IS_COPIED and m.dl_tensor.data != addr(t)
    del m, capsule
    if not NUMPY_VERSIONED:
        pytest.skip(f"{LEGACY_NUMPY}; np.from_dlpack takes copy= from numpy 2.1")
    a = np.from_dlpack(t, copy=True)
    assert a.flags.writeable and addr(a) != addr(t)
    a[0, 0] = 123.0
    assert t.to_numpy()[0, 0] != 123.0
    b = np.from_dlpack(t, copy=False)
    assert addr(b) == addr(t) and not b.flags.writeable


def test_export_arguments() -> None:
    t = sample("uint8")
    for ok in [
        {"stream": None},
        {"stream": -1},
        {"dl_device": (1, 0)},
        {"max_version": (2, 7)},
        {"max_version": (1, 3), "dl_device": (1, 0), "copy": None, "stream": None},
    ]:
        assert capsule_name(t.__dlpack__(**ok)).startswith("dltensor")  # type: ignore[arg-type]
    with pytest.raises(BufferError, match="stream must be None"):
        t.__dlpack__(stream=1)
    with pytest.raises(BufferError, match="stream must be None"):
        t.__dlpack__(stream="cuda")  # type: ignore[arg-type]
    with pytest.raises(BufferError, match=r"device \(2, 0\)"):
        t.__dlpack__(dl_device=(2, 0))
    with pytest.raises(BufferError, match=r"device \(1, 1\)"):
        t.__dlpack__(dl_device=(1, 1))
    with pytest.raises(TypeError, match="max_version"):
        t.__dlpack__(max_version=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dl_device"):
        t.__dlpack__(dl_device="cpu")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="positional"):
        t.__dlpack__(None)  # type: ignore[misc]  # keyword-only
    # The device label from the wire does not move the bytes: still host memory.
    frames = bytearray(quill.Tensor.zeros([2], quill.DType.uint8()).encode())
    frames[9 + 1 + 8 + 1] = 1
    cuda = quill.Tensor.decode(bytes(frames))
    assert cuda.device == "cuda" and cuda.__dlpack_device__() == (1, 0)
    assert np.array_equal(np.from_dlpack(cuda), [0, 0])


def test_scalar_and_empty_export() -> None:
    s = quill.Tensor.from_numpy(np.array(2.5, dtype=np.float64))
    a = np.from_dlpack(s)
    assert a.shape == () and a == 2.5
    assert (addr(a) == addr(s)) == NUMPY_VERSIONED
    for shape in ([0], [3, 0, 2]):
        e = np.from_dlpack(quill.Tensor.zeros(shape, quill.DType.int64()))
        assert e.shape == tuple(shape) and e.dtype == np.int64


# --- lifetimes ------------------------------------------------------------------------------


def test_exported_memory_outlives_the_tensor() -> None:
    t = quill.Tensor.from_numpy(np.arange(1 << 16, dtype=np.float32))
    a = np.from_dlpack(t)
    del t
    gc.collect()
    np.arange(1 << 16, dtype=np.float32).copy()  # reuse freed memory, if any was freed
    assert np.array_equal(a, np.arange(1 << 16, dtype=np.float32))


def test_every_deleter_runs_exactly_once() -> None:
    """numpy -> quill -> numpy: the source array is referenced exactly while something
    still needs its memory, so a deleter run twice (or never) shows in its refcount."""
    src = np.arange(1000, dtype=np.int64)
    base = sys.getrefcount(src)
    t = quill.Tensor.from_dlpack(src)
    assert sys.getrefcount(src) == base + 1 and addr(t) == addr(src)
    a = np.from_dlpack(t)  # quill's capsule, consumed by numpy
    unconsumed = [t.__dlpack__(max_version=(1, 0)) for _ in range(3)]
    del t
    gc.collect()
    assert sys.getrefcount(src) == base + 1  # a and the capsules keep it
    assert (addr(a) == addr(src)) == NUMPY_VERSIONED
    del a
    gc.collect()
    assert sys.getrefcount(src) == base + 1  # the unconsumed capsules still do
    del unconsumed
    gc.collect()
    assert sys.getrefcount(src) == base


@pytest.mark.skipif(not NUMPY_VERSIONED, reason=f"{LEGACY_NUMPY}: no view keeps the source")
def test_source_is_released_when_the_last_view_goes() -> None:
    src = np.arange(10, dtype=np.float64)
    gone = weakref.ref(src)
    t = quill.Tensor.from_dlpack(src)
    a = np.from_dlpack(t)
    del src, t
    gc.collect()
    assert gone() is not None and a[3] == 3.0
    del a
    gc.collect()
    assert gone() is None


def test_tensor_dropped_on_another_thread() -> None:
    src = np.arange(100, dtype=np.int32)
    base = sys.getrefcount(src)
    holder = [quill.Tensor.from_dlpack(src)]
    th = threading.Thread(target=holder.clear)
    th.start()
    th.join()
    gc.collect()
    assert sys.getrefcount(src) == base


def test_a_capsule_is_consumed_once() -> None:
    t = sample("int8")
    held = [t.__dlpack__(max_version=(1, 0))]

    class Same:
        def __dlpack__(self, **_kw: object) -> object:
            return held[0]

    first = quill.Tensor.from_dlpack(Same())
    assert capsule_name(held[0]) == "used_dltensor_versioned"
    with pytest.raises(BufferError, match="already consumed"):
        quill.Tensor.from_dlpack(Same())
    held.clear()  # a used capsule's destructor frees nothing: `first` still owns the tensor
    gc.collect()
    assert first == t.with_name(None)


def test_unconsumed_producer_capsules_are_freed_by_their_destructor() -> None:
    p = Producer(bytes(6), [2, 3])
    capsule = p.capsule()
    del capsule
    gc.collect()
    assert p.deleted == 1
    # A consumed one is freed by quill, once, when the tensor goes.
    t = quill.Tensor.from_dlpack(p)
    assert p.deleted == 1 and t.shape == [2, 3]
    del t
    gc.collect()
    assert p.deleted == 2


# --- import: numpy (and others) -> quill ----------------------------------------------------


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d != "bfloat16"])
def test_from_numpy_arrays_of_every_dtype_without_a_copy(dtype: str) -> None:
    src = sample(dtype, (3, 5)).to_numpy()
    t = quill.Tensor.from_dlpack(src, name="x")
    assert t.dtype == quill.DType.from_name(dtype) and t.shape == [3, 5] and t.name == "x"
    assert np.array_equal(t.to_numpy(), src) and addr(t) == addr(src)


def test_shared_memory_shows_the_producers_writes() -> None:
    src = np.zeros(4, dtype=np.float32)
    t = quill.Tensor.from_dlpack(src)
    src[1] = 7.0
    assert t.to_numpy()[1] == 7.0  # shared, as np.from_dlpack and torch.from_dlpack are
    snapshot = quill.Tensor.from_dlpack(src, copy=True)
    assert addr(snapshot) != addr(src)
    src[1] = 8.0
    assert snapshot.to_numpy()[1] == 7.0


@pytest.mark.parametrize(
    "view",
    [
        lambda a: a.T,
        lambda a: a[:, ::2],
        lambda a: a[::-1],
        lambda a: a[::-2, ::-3],
        lambda a: a[1:, 1:],  # contiguous rows, strided overall
        # stride 0; writable, since numpy < 2.1 cannot export read-only arrays
        lambda a: np.lib.stride_tricks.as_strided(a[:1], (4, 6), (0, 4)),
    ],
)
def test_strided_arrays_are_copied_in_c_order(view: Any) -> None:
    base = np.arange(24, dtype=np.int32).reshape(4, 6)
    v = view(base)
    t = quill.Tensor.from_dlpack(v)
    assert t.shape == list(v.shape)
    assert np.array_equal(np.asarray(t), np.ascontiguousarray(v))
    with pytest.raises(BufferError, match="not C-contiguous"):
        quill.Tensor.from_dlpack(v, copy=False)


def test_large_strided_copy() -> None:
    src = np.arange(1 << 20, dtype=np.float32).reshape(1024, 1024)
    t = quill.Tensor.from_dlpack(src.T)
    assert np.array_equal(np.asarray(t), src.T)
    assert np.array_equal(np.asarray(quill.Tensor.from_dlpack(src, copy=True)), src)


def test_round_trips_share_one_buffer() -> None:
    t = sample("float64", (4, 4))
    again = quill.Tensor.from_dlpack(t)  # quill to quill
    assert addr(again) == addr(t) and again == t.with_name(None)
    if NUMPY_VERSIONED:  # LEGACY_NUMPY, and numpy < 2.1 cannot re-export a read-only view
        a = np.from_dlpack(t)
        back = quill.Tensor.from_dlpack(a)  # numpy re-exports its read-only view
        assert addr(a) == addr(back) == addr(t) and back == again
    bf = sample("bfloat16")
    assert quill.Tensor.from_dlpack(bf) == bf.with_name(None)
    assert addr(quill.Tensor.from_dlpack(bf)) == addr(bf)


def test_scalars_and_empty_import() -> None:
    s = quill.Tensor.from_dlpack(np.array(7, dtype=np.int64))
    assert s.shape == [] and int(np.asarray(s)) == 7
    for shape in [(0,), (2, 0, 3)]:
        e = quill.Tensor.from_dlpack(np.zeros(shape, dtype=np.float32))
        assert e.shape == list(shape) and e.size_bytes == 0


def test_legacy_producer_falls_back() -> None:
    src = np.arange(6, dtype=np.uint8)

    class Old:
        def __dlpack__(self, stream: object = None) -> object:
            return src.__dlpack__(stream=stream)

    t = quill.Tensor.from_dlpack(Old())
    assert addr(t) == addr(src) and np.array_equal(np.asarray(t), src)


def test_byte_offset_is_honoured() -> None:
    p = Producer(bytes(range(16)), [2, 3], byte_offset=5)
    t = quill.Tensor.from_dlpack(p)
    assert np.asarray(t).tolist() == [[5, 6, 7], [8, 9, 10]]
    assert addr(t) == ctypes.addressof(p.buf) + 5
    strided = Producer(bytes(range(16)), [2, 2], strides=[4, 2], byte_offset=1)
    assert np.asarray(quill.Tensor.from_dlpack(strided)).tolist() == [[1, 3], [5, 7]]
    assert strided.deleted == 1  # copied, so released at once


def test_bool_import_checks_its_bytes() -> None:
    src = np.array([0, 1, 2], dtype=np.uint8).view(np.bool_)
    with pytest.raises(quill.InvalidArgumentError, match="byte 2 is 2"):
        quill.Tensor.from_dlpack(src)
    ok = quill.Tensor.from_dlpack(np.array([True, False]))
    assert ok.dtype == quill.DType.bool_()


# --- errors ---------------------------------------------------------------------------------


def test_objects_without_dlpack() -> None:
    for obj in [b"abc", [1, 2], None, memoryview(b"x")]:
        with pytest.raises(TypeError, match="object with __dlpack__"):
            quill.Tensor.from_dlpack(obj)

    class NotACapsule:
        def __dlpack__(self, **_kw: object) -> object:
            return b"capsule?"

    with pytest.raises(TypeError, match="not a DLPack capsule"):
        quill.Tensor.from_dlpack(NotACapsule())

    class Raises:
        def __dlpack__(self, **_kw: object) -> object:
            raise BufferError("cannot export")

    with pytest.raises(BufferError, match="cannot export"):
        quill.Tensor.from_dlpack(Raises())

    class WrongName:
        def __dlpack__(self, **_kw: object) -> object:
            return api.PyCapsule_New(ctypes.addressof(keep), b"something", None)

    keep = ctypes.c_int(0)
    with pytest.raises(BufferError, match='named "something"'):
        quill.Tensor.from_dlpack(WrongName())


def test_devices_other_than_the_cpu() -> None:
    class Gpu(Producer):
        def __dlpack_device__(self) -> tuple[int, int]:
            return (2, 0)

    with pytest.raises(BufferError, match=r"device \(2, 0\), not in host memory"):
        quill.Tensor.from_dlpack(Gpu(bytes(4), [4]))
    # The capsule's own device is checked too (a producer without __dlpack_device__).
    p = Producer(bytes(4), [4], device=(2, 1))
    with pytest.raises(BufferError, match=r"device \(2, 1\)"):
        quill.Tensor.from_dlpack(p)
    gc.collect()
    assert p.deleted == 1  # not taken, so its capsule freed it
    # Pinned host memory (kDLCUDAHost) is plain host memory to the CPU.
    assert quill.Tensor.from_dlpack(Producer(bytes(4), [4], device=(3, 0))).shape == [4]


@pytest.mark.parametrize(
    "dtype",
    [(5, 64, 1), (1, 16, 1), (2, 32, 4), (6, 1, 1), (8, 8, 1), (2, 8, 1), (3, 64, 1), (200, 8, 1)],
)
def test_unsupported_dlpack_dtypes(dtype: tuple[int, int, int]) -> None:
    p = Producer(bytes(64), [2], dtype=dtype)
    with pytest.raises(quill.UnsupportedDTypeError, match="unsupported DLPack dtype"):
        quill.Tensor.from_dlpack(p)
    gc.collect()
    assert p.deleted == 1


def test_unsupported_numpy_dtypes() -> None:
    for arr in [np.zeros(3, np.complex64), np.zeros(3, np.uint16), np.zeros(3, np.int16)]:
        with pytest.raises(quill.UnsupportedDTypeError):
            quill.Tensor.from_dlpack(arr)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ndim": -1}, quill.InvalidArgumentError, "ndim -1"),
        ({"ndim": 300}, quill.InvalidArgumentError, "ndim 300"),
        ({"shape": [2, -3]}, quill.InvalidArgumentError, "negative dimension"),
        ({"shape": [1 << 62, 1 << 62]}, quill.InvalidArgumentError, "64 bits"),
        ({"shape": [1 << 40, 1 << 23]}, quill.InvalidArgumentError, "2\\^63 - 1 bytes"),
        ({"null_shape": True}, BufferError, "null shape"),
        ({"misaligned_shape": True}, BufferError, "not aligned"),
        ({"null_data": True}, BufferError, "null data"),
        ({"version": (2, 0)}, BufferError, "version 2.0"),
        ({"version": (0, 9)}, BufferError, "version 0.9"),
        ({"byte_offset": (1 << 64) - 1}, BufferError, "outside the address space|byte_offset"),
        ({"shape": [3, 3], "strides": [1 << 62, 1]}, BufferError, "outside the address space"),
        ({"strides": [-(1 << 62), 1]}, BufferError, "outside the address space"),
        ({"strides": [(1 << 63) - 1, 1]}, BufferError, "outside the address space"),
    ],
)
def test_malformed_tensors_raise(kwargs: dict[str, Any], error: type, match: str) -> None:
    shape = kwargs.pop("shape", [2, 3])
    p = Producer(bytes(64), shape, **kwargs)
    with pytest.raises(error, match=match):
        quill.Tensor.from_dlpack(p)
    gc.collect()
    assert p.deleted == 1  # refused before it was taken: the capsule freed it


def test_empty_tensors_may_have_null_data() -> None:
    p = Producer(b"", [0, 3], null_data=True)
    t = quill.Tensor.from_dlpack(p)
    assert t.shape == [0, 3] and p.deleted == 1
    legacy = Producer(bytes(4), [4], legacy=True)
    assert quill.Tensor.from_dlpack(legacy).tobytes() == bytes(4)
    gc.collect()
    assert legacy.deleted == 1


def test_torch_round_trip() -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed (optional)")
    src = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    t = quill.Tensor.from_dlpack(src)
    assert addr(t) == src.data_ptr() and np.array_equal(np.asarray(t), src.numpy())
    back = torch.from_dlpack(t)
    assert back.data_ptr() == addr(t) and torch.equal(back, src)
    bf = torch.ones(3, dtype=torch.bfloat16)
    q = quill.Tensor.from_dlpack(bf)
    assert q.dtype == quill.DType.bfloat16() and torch.equal(torch.from_dlpack(q), bf)


# --- other array libraries: MLX (scripts/requirements-dev.txt installs it), JAX -------------


@dataclass(frozen=True)
class Library:
    """How the tests below reach into one array library that speaks DLPack."""

    from_dlpack: Callable[[Any], Any]
    #: An array of the library holding these values, in memory of its own.
    array: Callable[[np.ndarray], Any]
    #: The address of the array's first byte.
    address: Callable[[Any], int]
    #: The array's values as numpy (bfloat16 as its uint16 bits).
    values: Callable[[Any], np.ndarray]
    to_bfloat16: Callable[[Any], Any]
    #: dtypes the library turns into another on import: its own policy, not quill's.
    narrowed: frozenset[str]


def _mlx() -> Library:
    mx = pytest.importorskip(
        "mlx.core", reason="mlx is not installed (scripts/requirements-dev.txt installs it)"
    )

    def evaluated(x: Any) -> Any:
        mx.eval(x)  # MLX is lazy: an array has its memory once evaluated
        return x

    return Library(
        from_dlpack=mx.from_dlpack,
        array=lambda values: evaluated(mx.array(values)),
        # MLX arrays also export their memory through the buffer protocol.
        address=lambda x: int(np.frombuffer(memoryview(x), np.uint8).ctypes.data),
        values=lambda x: np.array(x.view(mx.uint16) if x.dtype == mx.bfloat16 else x),
        to_bfloat16=lambda x: evaluated(x.astype(mx.bfloat16)),
        narrowed=frozenset({"float64"}),  # MLX makes float64 float32, from numpy too
    )


def _jax() -> Library:
    jax = pytest.importorskip("jax", reason="jax is not installed (optional: jax[cpu])")
    jnp = jax.numpy
    return Library(
        from_dlpack=jnp.from_dlpack,
        array=jnp.asarray,
        address=lambda x: int(x.unsafe_buffer_pointer()),
        values=lambda x: np.asarray(x.view(jnp.uint16) if x.dtype == jnp.bfloat16 else x),
        to_bfloat16=lambda x: x.astype(jnp.bfloat16),
        narrowed=frozenset({"float64", "int64"}),  # 32-bit unless jax_enable_x64
    )


@pytest.fixture(params=["mlx", "jax"])
def library(request: pytest.FixtureRequest) -> Library:
    return {"mlx": _mlx, "jax": _jax}[request.param]()


class _Asked:
    """Hands a tensor's capsule to a consumer, noting the max_version it asked for."""

    def __init__(self, t: quill.Tensor) -> None:
        self.t = t
        self.max_version: tuple[int, int] | None = None

    def __dlpack__(self, **kwargs: Any) -> object:
        self.max_version = kwargs.get("max_version")
        return self.t.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self.t.__dlpack_device__()


def test_a_library_reads_every_dtype_it_keeps(library: Library) -> None:
    """Export: the values arrive; the tensor's own bytes are shared only through a
    versioned capsule, which says read-only. A legacy one cannot, so it carries a copy
    (MLX 0.32 and JAX 0.10 ask for a legacy capsule; numpy 2.1+ for a versioned one)."""
    for dtype in DTYPES:
        if dtype in library.narrowed:
            continue
        t = sample(dtype)
        asked = _Asked(t)
        x = library.from_dlpack(asked)
        want = t.to_numpy(bfloat16_as_uint16=True) if dtype == "bfloat16" else t.to_numpy()
        got = library.values(x)
        assert got.shape == (2, 3) and np.array_equal(got, want), dtype
        if asked.max_version is not None and tuple(asked.max_version) >= (1, 0):
            assert library.address(x) == addr(t), dtype
        else:
            assert library.address(x) != addr(t), dtype


def test_a_librarys_array_becomes_a_tensor_without_a_copy(library: Library) -> None:
    for dtype in DTYPES:
        if dtype in library.narrowed or dtype == "bfloat16":
            continue
        src = sample(dtype, (3, 5)).to_numpy()
        x = library.array(src)
        t = quill.Tensor.from_dlpack(x, name="x")
        assert t.dtype == quill.DType.from_name(dtype) and t.shape == [3, 5] and t.name == "x"
        assert addr(t) == library.address(x), dtype
        assert np.array_equal(t.to_numpy(), src), dtype
    # The tensor holds the library's buffer: it stays readable after the array is gone.
    ramp = np.arange(12, dtype=np.float32).reshape(3, 4)
    x = library.array(ramp)
    t = quill.Tensor.from_dlpack(x)
    del x
    gc.collect()
    assert np.array_equal(t.to_numpy(), ramp)
    # copy=True takes a private snapshot instead.
    y = library.array(ramp)
    assert addr(quill.Tensor.from_dlpack(y, copy=True)) != library.address(y)
    # And back into the library.
    assert np.array_equal(library.values(library.from_dlpack(t)), ramp)


def test_bfloat16_crosses_both_ways(library: Library) -> None:
    """numpy has no bfloat16; these libraries do."""
    bits = np.array([0x3F80, 0xC020, 0x4040], np.uint16)  # 1.0, -2.5, 3.0
    x = library.to_bfloat16(library.array(np.array([1.0, -2.5, 3.0], np.float32)))
    t = quill.Tensor.from_dlpack(x)
    assert t.dtype == quill.DType.bfloat16() and t.shape == [3]
    assert addr(t) == library.address(x)
    assert np.array_equal(t.to_numpy(bfloat16_as_uint16=True), bits)
    assert np.array_equal(library.values(library.from_dlpack(t)), bits)
