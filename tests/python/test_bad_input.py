"""Bad input: every case raises a typed quill error (never a panic, never silent loss)."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

import quill

F32 = quill.DType.float32()


def test_byte_length_must_match_shape() -> None:
    with pytest.raises(quill.InvalidArgumentError, match="23 bytes") as info:
        quill.Tensor.from_bytes(bytes(23), [2, 3], F32)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="needs 24 bytes"):
        quill.Tensor.from_bytes(bytes(25), [2, 3], F32)


def test_negative_and_huge_dims() -> None:
    with pytest.raises(ValueError, match="negative dimension -1"):
        quill.Tensor.zeros([2, -1], F32)
    with pytest.raises(ValueError, match="negative"):
        quill.TensorMeta([-3], F32)
    with pytest.raises(ValueError, match="64 bits"):
        quill.TensorMeta([1 << 64], F32)
    with pytest.raises(TypeError):
        quill.TensorMeta(["a"], F32)


def test_shape_products_that_overflow() -> None:
    with pytest.raises(quill.InvalidArgumentError, match="64 bits"):
        quill.TensorMeta([1 << 32, 1 << 32], quill.DType.uint8())
    with pytest.raises(quill.InvalidArgumentError, match="2\\^64 bytes"):
        quill.TensorMeta([1 << 62], quill.DType.float64())
    with pytest.raises(ValueError):
        quill.Tensor.from_bytes(b"", [1 << 40, 1 << 40], F32)


def test_ndim_over_255() -> None:
    quill.TensorMeta([1] * 255, F32)
    with pytest.raises(quill.InvalidArgumentError, match="256 dimensions"):
        quill.TensorMeta([1] * 256, F32)


def _meta(shape: list[int], dtype: int, name: bytes = b"", byte_size: int | None = None) -> bytes:
    size = byte_size if byte_size is not None else int(np.prod(shape)) * 4
    body = bytes([len(shape)]) + b"".join(struct.pack("<Q", d) for d in shape)
    return body + bytes([dtype, 0]) + struct.pack("<QH", size, len(name)) + name


def _frame(kind: int, payload: bytes) -> bytes:
    return bytes([kind, 0, 0, 0, 0]) + struct.pack(">I", len(payload)) + payload


def test_protocol_tensor_meta_example_decodes() -> None:
    example = bytes.fromhex(
        "02 0200000000000000 0300000000000000 01 00 1800000000000000 0100 78".replace(" ", "")
    )
    assert example == _meta([2, 3], 1, b"x")
    t = quill.Tensor.decode(_frame(0x10, example) + _frame(0x11, bytes(24)) + _frame(0x02, b""))
    assert t.shape == [2, 3] and t.dtype == F32 and t.name == "x"


@pytest.mark.parametrize(
    ("body", "match", "exc"),
    [
        (_frame(0x10, _meta([2], 0x0B)), "unknown dtype number 11", quill.UnsupportedDTypeError),
        (_frame(0x10, _meta([2], 0)), "unknown dtype number 0", quill.UnsupportedDTypeError),
        (_frame(0x11, b"abcd") + _frame(0x02, b""), "before TENSOR_META", quill.DecodeError),
        (
            _frame(0x10, _meta([2], 1)) + _frame(0x11, bytes(4)) + _frame(0x02, b""),
            "declares 8",
            quill.DecodeError,
        ),
        (_frame(0x10, _meta([2], 1)) + _frame(0x11, bytes(12)), "exceeds", quill.DecodeError),
        (_frame(0x10, _meta([2], 1, byte_size=9)), "byte_size 9", quill.DecodeError),
        (_frame(0x10, _meta([1 << 40, 1 << 40], 1, byte_size=0)), "64 bits", quill.DecodeError),
        (_frame(0x10, _meta([2], 1) + b"x"), "left over", quill.DecodeError),
        (_frame(0x10, _meta([2], 1, name=b"\xff")), "UTF-8", quill.DecodeError),
        (_frame(0x33, b""), "unknown tensor frame type 0x33", quill.DecodeError),
        (
            bytes([0x11, 0, 0, 0, 0]) + struct.pack(">I", 4 * 1024 * 1024 + 1),
            "limit",
            quill.DecodeError,
        ),
        (_frame(0x10, _meta([2], 1))[:12], "truncated", quill.DecodeError),
        (
            _frame(0x10, _meta([2], 1)) + _frame(0x11, bytes(8)),
            "before END_STREAM",
            quill.DecodeError,
        ),
    ],
)
def test_bad_tensor_frames(body: bytes, match: str, exc: type) -> None:
    with pytest.raises(exc, match=match) as info:
        quill.Tensor.decode(body)
    assert isinstance(info.value, (ValueError, TypeError))


def test_trailing_bytes_after_tensor() -> None:
    good = quill.Tensor.zeros([2], F32).encode()
    with pytest.raises(quill.DecodeError, match="after the tensor"):
        quill.Tensor.decode(good + b"\x00")


def test_token_text_and_count_limits() -> None:
    quill.Token(id=1, text="x" * 65535).encode()
    with pytest.raises(quill.InvalidArgumentError, match="65536 bytes"):
        quill.Token(id=1, text="x" * 65536).encode()
    with pytest.raises(quill.InvalidArgumentError, match="65536 bytes"):
        quill.TokenBatch.from_tokens([quill.Token(id=1, text="é" * 32768)]).encode()
    big = quill.TokenBatch.from_tokens([quill.Token(id=1)] * 65536)
    with pytest.raises(quill.InvalidArgumentError, match="65536 tokens"):
        big.encode()


def test_invalid_utf8_and_leftovers() -> None:
    bad_text = bytes.fromhex("00000001 00000000 01 0002 c328")
    with pytest.raises(quill.DecodeError, match="UTF-8"):
        quill.Token.decode(bad_text)
    good = quill.Token(id=7, position=1).encode()
    with pytest.raises(quill.DecodeError, match="1 bytes left over"):
        quill.Token.decode(good + b"\x00")
    batch = quill.TokenBatch(sequence_id=1).encode()
    with pytest.raises(quill.DecodeError, match="left over"):
        quill.TokenBatch.decode(batch + b"\x01")
    with pytest.raises(quill.DecodeError, match="declares 65535 tokens"):
        quill.TokenBatch.decode(b"\x00\xff\xff")
    with pytest.raises(quill.DecodeError, match="truncated"):
        quill.Token.decode(good[:-1])


def test_decoders_take_only_bytes_like() -> None:
    with pytest.raises(TypeError, match="bytes-like"):
        quill.Token.decode("not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        quill.TokenBatch.from_tokens([1, 2])  # type: ignore[list-item]


def test_random_corpus_never_panics() -> None:
    """Random and mutated inputs only ever raise quill errors (a panic would surface as
    pyo3's PanicException, which is not a QuillError)."""
    rng = random.Random(1234)
    seeds = [
        quill.Tensor.zeros([3, 2], F32, name="n").encode(),
        quill.TokenBatch.from_tokens(
            [quill.Token(id=1, text="hi", logprob=-1.0)], sequence_id=3
        ).encode(),
        quill.Token(id=42, position=0, text="hello", logprob=-0.5).encode(),
    ]
    for _ in range(3000):
        base = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.randint(0, 2)
            if op == 0 and base:
                base[rng.randrange(len(base))] = rng.randrange(256)
            elif op == 1:
                base = base[: rng.randrange(len(base) + 1)]
            else:
                base += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        for decode in (quill.Tensor.decode, quill.TokenBatch.decode, quill.Token.decode):
            try:
                decode(bytes(base))
            except quill.QuillError:
                pass
