"""NumPy edge cases: layouts, byte orders, unsupported dtypes, zero-copy views, bfloat16."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import quill


def test_non_contiguous_and_fortran_arrays_convert_correctly() -> None:
    base = np.arange(60, dtype=np.float32).reshape(6, 10)
    for view in (base[::2, 1::3], base.T, np.asfortranarray(base), base[:, ::-1]):
        t = quill.Tensor.from_numpy(view)
        assert t.shape == list(view.shape)
        assert np.array_equal(t.to_numpy(), view)
        assert t.tobytes() == np.ascontiguousarray(view).tobytes()


@pytest.mark.parametrize("code", [">f4", ">f8", ">i4", ">i8", ">f2"])
def test_big_endian_arrays_are_converted_not_mislabelled(code: str) -> None:
    a = np.arange(12).reshape(3, 4).astype(code)
    t = quill.Tensor.from_numpy(a)
    back = t.to_numpy()
    assert back.dtype.byteorder in ("=", "<", "|")
    assert np.array_equal(back, a)
    # Wire bytes are little-endian whatever the input order was.
    assert t.tobytes() == a.astype(a.dtype.newbyteorder("<")).tobytes()


@pytest.mark.parametrize(
    ("array", "exc"),
    [
        (np.array(["a", "b"]), TypeError),
        (np.array([b"a"]), TypeError),
        (np.array([object(), 1], dtype=object), TypeError),
        (np.zeros(3, dtype=np.complex64), TypeError),
        (np.zeros(3, dtype=np.int16), TypeError),
        (np.zeros(3, dtype=np.uint32), TypeError),
        (np.zeros(3, dtype="datetime64[s]"), TypeError),
    ],
)
def test_unsupported_dtypes_raise_clear_errors(array: np.ndarray, exc: type) -> None:
    with pytest.raises(exc, match="unsupported numpy dtype") as info:
        quill.Tensor.from_numpy(array)
    assert isinstance(info.value, quill.QuillError)
    assert "supported:" in str(info.value)


def test_object_array_message_explains() -> None:
    with pytest.raises(quill.UnsupportedDTypeError, match="object arrays"):
        quill.Tensor.from_numpy(np.array([None]))


def test_array_likes_and_scalars() -> None:
    t = quill.Tensor.from_numpy([[1.0, 2.0], [3.0, 4.0]])
    assert t.dtype == quill.DType.float64() and t.shape == [2, 2]
    s = quill.Tensor.from_numpy(np.float32(3.5))
    assert s.shape == [] and s.num_elements == 1 and s.to_numpy() == np.float32(3.5)
    with pytest.raises(TypeError, match="0-d"):
        len(s)
    e = quill.Tensor.from_numpy(np.zeros((0, 5), np.int64))
    assert e.size_bytes == 0 and e.to_numpy().shape == (0, 5) and len(e) == 0


def test_zero_copy_views_are_read_only_and_keep_the_tensor_alive() -> None:
    t = quill.Tensor.from_numpy(np.arange(12, dtype=np.int32).reshape(3, 4))
    view = np.asarray(t)
    again = np.asarray(t)
    assert view.shape == (3, 4) and view.dtype == np.int32
    assert not view.flags.writeable
    assert np.shares_memory(view, again)  # both point into the tensor's own buffer
    with pytest.raises(ValueError, match="read-only"):
        view[0, 0] = 1
    mv = memoryview(t)
    assert mv.readonly and mv.format == "i" and mv.shape == (3, 4) and mv.nbytes == 48
    del t
    assert view.sum() == 66  # still valid: the view holds the tensor


def test_writable_buffer_request_is_refused() -> None:
    t = quill.Tensor.zeros([4], quill.DType.uint8())
    import ctypes

    # ctypes reports quill's refusal as its own TypeError.
    with pytest.raises((BufferError, TypeError), match="writable"):
        ctypes.c_char.from_buffer(t)  # asks for a writable buffer


def test_to_numpy_is_a_writable_copy_even_of_views() -> None:
    t = quill.Tensor.from_numpy(np.ones(4, np.float64))
    a = t.to_numpy()
    a[:] = 7
    assert np.asarray(t).tolist() == [1.0] * 4


def test_bfloat16_as_uint16_bits_without_ml_dtypes() -> None:
    bits = np.array([0x3F80, 0xC000], dtype=np.uint16)  # 1.0, -2.0 in bfloat16
    t = quill.Tensor.from_numpy(bits, dtype=quill.DType.bfloat16())
    assert t.dtype == quill.DType.bfloat16() and t.size_bytes == 4
    assert np.array_equal(t.to_numpy(bfloat16_as_uint16=True), bits)
    assert memoryview(t).format == "H"
    with pytest.raises(quill.UnsupportedDTypeError, match="bfloat16") as info:
        quill.Tensor.from_numpy(np.zeros(2, np.int32), dtype=quill.DType.bfloat16())
    assert isinstance(info.value, TypeError)


@pytest.mark.skipif(importlib.util.find_spec("ml_dtypes") is None, reason="ml_dtypes not installed")
def test_bfloat16_round_trips_through_ml_dtypes() -> None:
    import ml_dtypes

    a = np.array([[1.0, -2.0, 0.5]], dtype=ml_dtypes.bfloat16)
    t = quill.Tensor.from_numpy(a, name="bf")
    assert t.dtype == quill.DType.bfloat16()
    back = t.to_numpy()
    assert back.dtype == ml_dtypes.bfloat16
    assert np.array_equal(back.astype(np.float32), a.astype(np.float32))
    assert t.tobytes() == a.view(np.uint16).tobytes()


def test_large_copy_round_trip() -> None:
    a = np.random.default_rng(1).integers(0, 255, size=8 << 20, dtype=np.uint8)
    t = quill.Tensor.from_numpy(a)
    assert np.array_equal(t.to_numpy(), a)
    assert quill.Tensor.decode(t.encode()) == t
