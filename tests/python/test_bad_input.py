"""Bad input: every case raises a typed quill error (never a panic, never silent loss)."""

from __future__ import annotations

import asyncio
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
    with pytest.raises(quill.InvalidArgumentError, match="needs 24 bytes"):
        quill.Tensor.from_bytes(bytes(25), [2, 3], F32)


def test_negative_and_huge_dims() -> None:
    with pytest.raises(quill.InvalidArgumentError, match="negative dimension -1") as info:
        quill.Tensor.zeros([2, -1], F32)
    assert isinstance(info.value, ValueError)
    with pytest.raises(quill.InvalidArgumentError, match="negative dimension -3"):
        quill.TensorMeta([-3], F32)
    with pytest.raises(quill.InvalidArgumentError, match="64 bits"):
        quill.TensorMeta([1 << 64], F32)
    with pytest.raises(TypeError, match="shape entries must be ints"):
        quill.TensorMeta(["a"], F32)


def test_shape_products_that_overflow() -> None:
    with pytest.raises(quill.InvalidArgumentError, match="64 bits"):
        quill.TensorMeta([1 << 32, 1 << 32], quill.DType.uint8())
    with pytest.raises(quill.InvalidArgumentError, match="2\\^64 bytes"):
        quill.TensorMeta([1 << 62], quill.DType.float64())
    with pytest.raises(quill.InvalidArgumentError, match="64 bits"):
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
    with pytest.raises(TypeError, match="quill.Token objects"):
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


# --- Integers out of range: OutOfRangeError (QuillError, ValueError, OverflowError, IndexError)

OUT_OF_RANGE_ARGS = [
    ("timeout_ms", lambda url: quill.QuillClient(url, timeout_ms=-1)),
    ("timeout_ms", lambda url: quill.QuillClient(url, timeout_ms=2**63)),
    ("timeout_ms", lambda url: quill.QuillClient(url, timeout_ms=2**200)),
    ("max_decoded_size", lambda url: quill.QuillClient(url, max_decoded_size=-1)),
    ("max_decoded_size", lambda url: quill.QuillClient(url, max_decoded_size=2**64)),
    ("max_retries", lambda url: quill.QuillClient(url, max_retries=-1)),
    ("max_retries", lambda url: quill.QuillClient(url, max_retries=2**32)),
    ("idle_timeout_ms", lambda url: quill.QuillClient(url, idle_timeout_ms=-5)),
    ("idle_timeout_ms", lambda url: quill.QuillClient(url, idle_timeout_ms=2**62)),
    ("id", lambda url: quill.Token(2**32)),
    ("id", lambda url: quill.Token(-1)),
    ("position", lambda url: quill.Token(0, -1)),
    ("position", lambda url: quill.Token(0, position=2**32)),
    ("id", lambda url: quill.Token.with_text(2**32, "x")),
    ("position", lambda url: quill.Token.with_text(1, "x", -2)),
    ("id", lambda url: quill.Token.from_dict({"id": -1})),
    ("position", lambda url: quill.Token.from_dict({"id": 1, "position": 2**40})),
    ("sequence_id", lambda url: quill.TokenBatch(sequence_id=2**32)),
    ("sequence_id", lambda url: quill.TokenBatch(sequence_id=-1)),
    ("sequence_id", lambda url: quill.TokenBatch.from_tokens([], sequence_id=2**40)),
    ("shape", lambda url: quill.TensorMeta([2**64], F32)),
    ("shape", lambda url: quill.Tensor.zeros([1, -2], F32)),
]


@pytest.mark.parametrize(("name", "make"), OUT_OF_RANGE_ARGS)
def test_integers_out_of_range(name: str, make: object) -> None:
    assert callable(make)
    with pytest.raises(quill.OutOfRangeError) as info:
        make("http://127.0.0.1:9")
    e = info.value
    assert isinstance(e, quill.InvalidArgumentError) and isinstance(e, quill.QuillError)
    assert isinstance(e, ValueError) and isinstance(e, OverflowError)
    if name != "shape":
        assert name in str(e), str(e)


def test_sequence_id_setter_and_indices_out_of_range() -> None:
    batch = quill.TokenBatch.from_tokens([quill.Token(1), quill.Token(2)])
    with pytest.raises(quill.OutOfRangeError, match="sequence_id"):
        batch.sequence_id = 2**32
    batch.sequence_id = 2**32 - 1
    assert batch.sequence_id == 2**32 - 1
    for index in (2, -3, 2**70, -(2**70), 2**200):
        with pytest.raises(IndexError, match="index out of range") as info:
            batch[index]
        assert isinstance(info.value, quill.QuillError)
    assert batch[-1].id == 2 and batch[True].id == 2
    with pytest.raises(TypeError, match="indices must be integers"):
        batch["0"]  # type: ignore[index]


def test_timeouts_are_bounded_at_30_days() -> None:
    thirty_days = 30 * 24 * 3600 * 1000
    c = quill.QuillClient("http://127.0.0.1:9", timeout_ms=thirty_days, idle_timeout_ms=0)
    assert c.timeout_ms == thirty_days
    with pytest.raises(quill.OutOfRangeError, match=f"0..={thirty_days}"):
        quill.QuillClient("http://127.0.0.1:9", timeout_ms=thirty_days + 1)


# --- Shapes numpy cannot represent are refused when the tensor is made


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ([0, 2**63], "uint8"),
        ([0, 2**63 - 1], "uint8"),
        ([0, 2**61], "float32"),
        ([0, 2**61 - 1], "float32"),
        ([0, 2**62, 2], "uint8"),
        ([2**40, 0, 2**30], "float64"),
        ([0, 2**62, 2], "int8"),
        ([3, 0], "bool_"),
    ],
)
def test_a_shape_is_accepted_exactly_when_numpy_can_represent_it(
    shape: list[int], dtype: str
) -> None:
    qd = getattr(quill.DType, dtype)()
    try:
        np.empty(shape, dtype=dtype.rstrip("_"))
        numpy_ok = True
    except ValueError:
        numpy_ok = False
    if numpy_ok:
        t = quill.Tensor.from_bytes(b"", shape, qd)
        back = quill.Tensor.decode(t.encode())
        assert back.shape == shape and back.to_numpy().shape == tuple(shape)
    else:
        with pytest.raises(quill.InvalidArgumentError, match="2\\^63 - 1 bytes"):
            quill.Tensor.from_bytes(b"", shape, qd)
        with pytest.raises(quill.InvalidArgumentError):
            quill.TensorMeta(shape, qd)


# --- Non-contiguous buffers are read in C order, as bytes(view) does


def test_strided_buffers_are_accepted_in_c_order(client: quill.QuillClient) -> None:
    strided = memoryview(b"abcdef")[::2]
    assert not strided.c_contiguous
    assert client.call("echo.v1.EchoService", "Echo", strided) == b"ace"
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    view = memoryview(arr.T)  # Fortran-ordered view of a float32 buffer
    t = quill.Tensor.from_bytes(view, [4, 3], F32)
    np.testing.assert_array_equal(t.to_numpy(), arr.T)
    token = quill.Token(7, 3, text="hi")
    doubled = bytes(b for b in token.encode() for _ in range(2))
    assert quill.Token.decode(memoryview(doubled)[::2]) == token
    assert client.call_json("echo.v1.EchoService", "Echo", memoryview(b"[1, 2]x")[:-1]) == [1, 2]


# --- JSON: NaN/Infinity refused before sending; undecodable replies are DecodeErrors


@pytest.mark.parametrize(
    "request_value",
    [
        {"x": float("nan")},
        [1.0, float("inf")],
        {"deep": [{"v": -float("inf")}]},
        {"np": np.float32("nan")},
        {"arr": np.array([1.0, np.nan])},
    ],
)
def test_json_requests_with_nan_or_infinity_are_refused(
    client: quill.QuillClient, request_value: object
) -> None:
    with pytest.raises(quill.InvalidArgumentError, match="cannot be sent as JSON"):
        client.call_json("echo.v1.EchoService", "Echo", request_value)
    with pytest.raises(quill.InvalidArgumentError, match="cannot be sent as JSON"):
        client.stream("test.v1.FaultService", "StreamSlow", request_value)


def test_circular_json_request_is_refused(client: quill.QuillClient) -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(quill.InvalidArgumentError, match="[Cc]ircular"):
        client.call_json("echo.v1.EchoService", "Echo", loop)


@pytest.mark.parametrize(
    ("reply", "why"),
    [(b'"\xc3("', "utf-8"), (b"not json", "Expecting value"), (b'{"a": 1', "Expecting")],
)
def test_undecodable_json_replies_are_decode_errors(
    client: quill.QuillClient, reply: bytes, why: str
) -> None:
    # Echo returns the request body: a bytes request is sent as JSON text unchanged.
    with pytest.raises(quill.DecodeError, match=why) as info:
        client.call_json("echo.v1.EchoService", "Echo", reply)
    e = info.value
    assert e.status == 200 and e.body == reply[:64]
    assert "echo.v1.EchoService/Echo" in str(e) and "HTTP 200" in str(e)
    assert isinstance(e, ValueError) and isinstance(e.__cause__, ValueError)

    async def run() -> None:
        with pytest.raises(quill.DecodeError, match=why) as ainfo:
            await client.call_json_async("echo.v1.EchoService", "Echo", reply)
        assert ainfo.value.status == 200

    asyncio.run(run())


def test_str_requests_are_json_text_sent_unchanged(client: quill.QuillClient) -> None:
    assert client.call_json("echo.v1.EchoService", "Echo", '{"k": [1, 2]}') == {"k": [1, 2]}
    assert client.call_json("echo.v1.EchoService", "Echo", '"\u00e9"') == "\u00e9"
    assert client.call_json("echo.v1.EchoService", "Echo", "") is None  # empty reply
    with pytest.raises(quill.InvalidArgumentError, match="lone surrogate"):
        client.call_json("echo.v1.EchoService", "Echo", "\ud800")
    with pytest.raises(quill.InvalidArgumentError, match="lone surrogate"):
        client.stream("test.v1.FaultService", "StreamSlow", "\udfff")


# --- base_url: what is shown is what is sent; dot segments are refused


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/%2e%2e/", "http://127.0.0.1:9/api/%2E/", "http://127.0.0.1:9/a/../b"],
)
def test_base_url_dot_segments_are_refused(url: str) -> None:
    with pytest.raises(quill.InvalidArgumentError, match="'..' path segments"):
        quill.QuillClient(url)


def test_base_url_is_shown_as_sent() -> None:
    c = quill.QuillClient("HTTP://127.0.0.1:80/a b/")
    assert c.base_url == "http://127.0.0.1/a%20b"
    assert "http://127.0.0.1/a%20b" in repr(c)


# --- Token equality follows the byte encoding


@pytest.mark.parametrize(
    "logprob",
    [float("nan"), -float("nan"), float("inf"), -0.0, 0.0, -0.5, 1e-45, None],
)
def test_token_equality_and_hash_follow_the_encoding(logprob: float | None) -> None:
    t = quill.Token(1, 2, text="x", logprob=logprob)
    back = quill.Token.decode(t.encode())
    assert t == t and back == t and hash(back) == hash(t)
    assert {t: 1}[back] == 1
    batch = quill.TokenBatch.from_tokens([t])
    assert quill.TokenBatch.decode(batch.encode()) == batch


def test_tokens_differing_only_in_logprob_bits_differ() -> None:
    assert quill.Token(1, logprob=0.0) != quill.Token(1, logprob=-0.0)
    assert quill.Token(1, logprob=0.0).encode() != quill.Token(1, logprob=-0.0).encode()
    assert quill.Token(1, logprob=None) != quill.Token(1, logprob=float("nan"))


# --- API keys under several headers; bool tensors hold only 0 and 1


def test_api_keys_under_two_headers_are_both_sent(client: quill.QuillClient) -> None:
    client.set_api_key("key-a")
    client.set_api_key("key-b", header_name="X-My-Token")
    seen = client.call_json("echo.v1.EchoService", "Headers", {})
    assert seen["x-api-key"] == "key-a" and seen["x-my-token"] == "key-b"
    assert client.remove_header("X-API-Key")
    seen = client.call_json("echo.v1.EchoService", "Headers", {})
    assert "x-api-key" not in seen and seen["x-my-token"] == "key-b"


def test_bool_tensors_refuse_bytes_other_than_0_and_1() -> None:
    b = quill.DType.bool_()
    assert quill.Tensor.from_bytes(b"\x00\x01\x01", [3], b).to_numpy().tolist() == [
        False,
        True,
        True,
    ]
    with pytest.raises(quill.InvalidArgumentError, match="byte 2 is 2"):
        quill.Tensor.from_bytes(b"\x00\x01\x02", [3], b)
    odd = np.array([0, 1, 255], dtype=np.uint8).view(np.bool_)
    with pytest.raises(quill.InvalidArgumentError, match="must be 0 or 1"):
        quill.Tensor.from_numpy(odd)
    good = quill.Tensor.from_bytes(b"\x01\x00", [2], b).encode()
    bad = good.replace(b"\x01\x00", b"\x01\x07", 1)
    assert bad != good
    with pytest.raises(quill.DecodeError, match="must be 0 or 1"):
        quill.Tensor.decode(bad)
