"""The seed's Tensor Operations, Data Types and NumPy Compatibility sections, verbatim,
with the printed values the seed promises."""

from __future__ import annotations

import numpy as np
import pytest

import quill


def test_creating_tensors() -> None:
    arr = np.random.randn(2, 3, 4).astype(np.float32)
    tensor = quill.Tensor.from_numpy(arr, name="input")
    zeros = quill.Tensor.zeros([1, 768], quill.DType.float32(), name="embedding")
    data = bytes(24)  # 6 float32 zeros
    raw = quill.Tensor.from_bytes(data, [2, 3], quill.DType.float32())

    assert np.array_equal(tensor.to_numpy(), arr)
    assert zeros.shape == [1, 768] and zeros.name == "embedding"
    assert not zeros.to_numpy().any()
    assert raw.shape == [2, 3] and raw.name is None
    assert raw.tobytes() == data


def test_tensor_properties_print_as_promised(capsys: pytest.CaptureFixture[str]) -> None:
    arr = np.random.randn(2, 3, 4).astype(np.float32)
    tensor = quill.Tensor.from_numpy(arr, name="input")
    print(tensor.shape)
    print(tensor.ndim)
    print(tensor.num_elements)
    print(tensor.dtype)
    print(tensor.size_bytes)
    print(tensor.name)
    meta = tensor.meta
    out = capsys.readouterr().out.splitlines()
    assert out == ["[2, 3, 4]", "3", "24", "DType.float32", "96", "input"]
    assert isinstance(meta, quill.TensorMeta)
    assert meta.shape == [2, 3, 4] and meta.dtype == quill.DType.float32()


def test_converting_to_numpy(arr: np.ndarray) -> None:
    tensor = quill.Tensor.from_numpy(arr, name="input")
    result = tensor.to_numpy()
    raw = tensor.tobytes()
    assert result.dtype == np.float32 and result.shape == (2, 3, 4)
    assert result.flags.writeable and result.flags.c_contiguous
    result[0, 0, 0] = 123.0  # a copy: the tensor is unchanged
    assert tensor.to_numpy()[0, 0, 0] == arr[0, 0, 0]
    assert raw == arr.tobytes()


def test_tensor_meta(capsys: pytest.CaptureFixture[str]) -> None:
    meta = quill.TensorMeta([1, 768], quill.DType.float32(), name="embedding")
    print(meta.shape)
    print(meta.dtype)
    print(meta.num_elements)
    print(meta.size_bytes)
    assert capsys.readouterr().out.splitlines() == ["[1, 768]", "DType.float32", "768", "3072"]
    assert meta.name == "embedding"
    assert meta == quill.TensorMeta([1, 768], quill.DType.float32(), name="embedding")
    assert repr(meta) == "TensorMeta(shape=[1, 768], dtype=DType.float32, name='embedding')"


DTYPE_TABLE = [
    ("float32", 4),
    ("float64", 8),
    ("float16", 2),
    ("bfloat16", 2),
    ("int8", 1),
    ("int32", 4),
    ("int64", 8),
    ("uint8", 1),
    ("bool_", 1),
]


@pytest.mark.parametrize(("ctor", "size"), DTYPE_TABLE)
def test_dtype_table(ctor: str, size: int) -> None:
    d = getattr(quill.DType, ctor)()
    assert d.element_size == size
    assert d.name == ctor.rstrip("_")
    assert str(d) == repr(d) == f"DType.{ctor.rstrip('_')}"
    assert d == getattr(quill.DType, ctor)()
    assert hash(d) == hash(getattr(quill.DType, ctor)())
    assert quill.DType.from_name(d.name) == d


def test_type_checking(capsys: pytest.CaptureFixture[str]) -> None:
    dtype = quill.DType.float32()
    print(dtype.element_size)
    print(dtype.name)
    assert capsys.readouterr().out.splitlines() == ["4", "float32"]
    assert dtype.is_float() is True
    assert dtype.is_integer() is False
    assert dtype.is_signed() is True
    assert (dtype == quill.DType.float32()) is True
    assert dtype != quill.DType.float64()
    assert quill.DType.uint8().is_integer() and not quill.DType.uint8().is_signed()
    assert not quill.DType.bool_().is_integer() and not quill.DType.bool_().is_float()


def test_wire_numbers_match_protocol() -> None:
    names = ["float32", "float16", "bfloat16", "float64", "int8", "int32", "int64", "uint8", "bool"]
    for wire, name in enumerate(names, start=1):
        assert quill.DType.from_wire_value(wire).name == name
        assert quill.DType.from_name(name).wire_value == wire
    for bad in (0, 10, 255, -1, 1 << 70):
        with pytest.raises(quill.UnsupportedDTypeError):
            quill.DType.from_wire_value(bad)


NUMPY_TABLE = [
    (np.float32, quill.DType.float32()),
    (np.float64, quill.DType.float64()),
    (np.float16, quill.DType.float16()),
    (np.int8, quill.DType.int8()),
    (np.int32, quill.DType.int32()),
    (np.int64, quill.DType.int64()),
    (np.uint8, quill.DType.uint8()),
    (np.bool_, quill.DType.bool_()),
]


@pytest.mark.parametrize(("np_type", "dtype"), NUMPY_TABLE)
def test_numpy_mapping_round_trips(np_type: type, dtype: quill.DType) -> None:
    a = (np.arange(24) % 7 - 3).reshape(2, 3, 4).astype(np_type)
    t = quill.Tensor.from_numpy(a)
    assert t.dtype == dtype
    back = t.to_numpy()
    assert back.dtype == np.dtype(np_type) and back.shape == a.shape
    assert np.array_equal(back, a)
    assert np.array_equal(np.asarray(t), a)
