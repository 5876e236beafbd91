"""Values that travel, beyond tensors and tokens (test_pickle.py): the typed inference
values pickle and copy; tensors with a zero dimension survive every pickle route; a
tensor adopted from a buffer never changes after the fact."""

from __future__ import annotations

import copy
import math
import mmap
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from quilltest import Server

import quill

PROTOCOLS = list(range(2, pickle.HIGHEST_PROTOCOL + 1))
DTYPES = ["float32", "float64", "float16", "bfloat16", "int8", "int32", "int64", "uint8", "bool"]


def round_trip(obj: object, protocol: int) -> Any:
    return pickle.loads(pickle.dumps(obj, protocol=protocol))


def out_of_band(obj: object) -> tuple[Any, list[pickle.PickleBuffer]]:
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return pickle.loads(data, buffers=buffers), buffers


REQUESTS = [
    quill.GenerateRequest([101, 2023, 2003]),
    quill.GenerateRequest(
        [1, 2**32 - 1],
        max_new_tokens=64,
        temperature=0.7,
        top_p=0.9,
        top_k=40,
        stop_token_ids=[2, 3],
        repetition_penalty=1.1,
        stream_embeddings=True,
    ),
    # Floats that a decimal round trip through repr could bend.
    quill.GenerateRequest([], temperature=1e-45, top_p=-0.0, repetition_penalty=3.4e38),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_generate_requests_round_trip(protocol: int) -> None:
    for request in REQUESTS:
        back = round_trip(request, protocol)
        assert isinstance(back, quill.GenerateRequest)
        assert back == request and back.encode() == request.encode()
        assert back.temperature == request.temperature
    assert math.copysign(1.0, round_trip(REQUESTS[2], protocol).top_p) == -1.0
    # A chat's request list, as handed to a worker process.
    assert round_trip(REQUESTS, protocol) == REQUESTS


def test_generate_requests_copy_as_themselves() -> None:
    for request in REQUESTS:
        assert copy.copy(request) is request and copy.deepcopy(request) is request
    dup = copy.deepcopy(REQUESTS)
    assert dup == REQUESTS and dup is not REQUESTS


def test_a_corrupt_pickled_request_is_a_decode_error() -> None:
    with pytest.raises(quill.DecodeError, match="GenerateRequest"):
        quill.GenerateRequest._from_encoded(b"\x0a\xff")  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def chat_responses(server: Server) -> tuple[list[quill.GenerateResponse], quill.StreamTiming]:
    client = quill.QuillClient(server.url, timeout_ms=10_000)
    stream = client.chat(
        [
            quill.GenerateRequest([7, 8], max_new_tokens=5, stream_embeddings=True),
            {"input_ids": [9], "max_new_tokens": 3},
        ]
    )
    responses = list(stream)
    timing = stream.timing
    assert timing is not None and timing.tokens == 8
    assert any(r.embedding is not None for r in responses)
    assert any(r.embedding is None for r in responses)
    return responses, timing


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_generate_responses_and_timing_round_trip(
    chat_responses: tuple[list[quill.GenerateResponse], quill.StreamTiming], protocol: int
) -> None:
    responses, timing = chat_responses
    back = round_trip(responses, protocol)
    assert back == responses
    for b, r in zip(back, responses):
        assert isinstance(b, quill.GenerateResponse) and b is not r
        assert b.tokens == r.tokens and b.tokens.sequence_id == r.tokens.sequence_id
        assert b.attention_mask == r.attention_mask
        assert (b.total_generated, b.is_complete, b.finish_reason) == (
            r.total_generated,
            r.is_complete,
            r.finish_reason,
        )
        if r.embedding is not None:
            assert b.embedding == r.embedding and b.embedding.name == r.embedding.name
    t = round_trip(timing, protocol)
    assert isinstance(t, quill.StreamTiming) and t == timing
    assert (t.tokens, t.responses, t.elapsed_ms, t.tokens_per_second) == (
        timing.tokens,
        timing.responses,
        timing.elapsed_ms,
        timing.tokens_per_second,
    )


def test_response_embeddings_travel_out_of_band(
    chat_responses: tuple[list[quill.GenerateResponse], quill.StreamTiming],
) -> None:
    responses, _ = chat_responses
    with_embedding = [r for r in responses if r.embedding is not None]
    back, buffers = out_of_band(with_embedding)
    assert back == with_embedding
    assert len(buffers) == len(with_embedding)  # one buffer per embedding, none in-band


def test_generate_responses_and_timing_copy(
    chat_responses: tuple[list[quill.GenerateResponse], quill.StreamTiming],
) -> None:
    responses, timing = chat_responses
    assert copy.copy(timing) is timing and copy.deepcopy(timing) is timing
    r = responses[0]
    shallow, deep = copy.copy(r), copy.deepcopy(r)
    assert shallow == r == deep and shallow is not r and deep is not r
    # A shallow copy shares the (mutable) token batch, a deep copy has its own.
    assert shallow.tokens is r.tokens and deep.tokens is not r.tokens
    deep.tokens.add(quill.Token(1))
    assert len(deep.tokens) == len(r.tokens) + 1 and deep != r
    # The embedding is immutable: shared either way.
    assert deep.embedding is r.embedding
    assert r != responses[-1] and r != "not a response"


def test_a_pickled_response_keeps_its_field_types() -> None:
    restore = quill.GenerateResponse._from_state  # type: ignore[attr-defined]
    ok = restore(quill.TokenBatch(), [True, False], None, 0, False, None)
    assert ok.attention_mask == [True, False]
    with pytest.raises(TypeError, match="attention_mask"):
        restore(quill.TokenBatch(), [1, "x"], None, 0, False, None)
    with pytest.raises(TypeError):
        restore([quill.Token(1)], [], None, 0, False, None)


ZERO_SHAPES = [[0], [0, 3], [3, 0], [2, 0, 4], [0, 0]]


@pytest.mark.parametrize("dtype", DTYPES)
def test_tensors_with_a_zero_dimension_travel_every_way(dtype: str) -> None:
    qd = quill.DType.from_name(dtype)
    for shape in ZERO_SHAPES:
        t = quill.Tensor.zeros(shape, qd, name="empty")
        for protocol in PROTOCOLS:
            back = round_trip(t, protocol)
            assert back == t and back.shape == shape and back.name == "empty"
        back, buffers = out_of_band(t)
        assert back == t and back.shape == shape and back.dtype == qd
        assert len(buffers) == 1 and buffers[0].raw().nbytes == 0
        # The buffer as a consumer may hand it back: a plain copy, an empty array.
        data = pickle.dumps(t, protocol=5, buffer_callback=lambda _: False)
        for given in (b"", bytearray(), np.empty(shape, np.uint8), memoryview(b"")):
            assert pickle.loads(data, buffers=[given]) == t
        # Views of the tensor and copies of its bytes are empty, with its shape.
        assert np.asarray(memoryview(back)).size == 0 and back.tobytes() == b""
        assert copy.deepcopy(back) is back


def test_empty_buffers_with_zero_dimensions_are_accepted_as_data() -> None:
    empty = np.zeros((0, 3), np.float32)
    t = quill.Tensor.from_bytes(empty, [0, 3], quill.DType.float32())
    assert t.shape == [0, 3] and t.tobytes() == b""
    assert quill.Tensor.from_bytes(memoryview(empty), [3, 0], quill.DType.float32()).shape == [3, 0]
    assert quill.Tensor.from_numpy(empty).shape == [0, 3]
    with pytest.raises(quill.InvalidArgumentError, match="0 bytes"):
        quill.Tensor.from_bytes(empty, [1, 3], quill.DType.float32())


def address(buffer: Any) -> int:
    return int(np.frombuffer(buffer, np.uint8).__array_interface__["data"][0])


def load_with(buffer: Any, t: quill.Tensor) -> quill.Tensor:
    data = pickle.dumps(t, protocol=5, buffer_callback=lambda _: False)
    back = pickle.loads(data, buffers=[buffer])
    assert isinstance(back, quill.Tensor)
    return back


SOURCE = quill.Tensor.from_bytes(bytes(range(8)), [8], quill.DType.uint8())


def test_a_read_only_array_its_owner_can_make_writable_is_copied() -> None:
    # numpy's rule: the array owns its memory, so `writeable = True` is allowed later.
    arr = np.arange(8, dtype=np.uint8)
    arr.flags.writeable = False
    back = load_with(arr, SOURCE)
    arr.flags.writeable = True
    arr[0] = 99
    assert back.tobytes() == bytes(range(8))
    assert address(back) != address(arr)
    # A read-only view of such an array: its base decides, and can change.
    base = np.arange(16, dtype=np.uint8)
    view = base[8:]
    view.flags.writeable = False
    back = load_with(view, SOURCE)
    base[8] = 42
    assert back.tobytes()[0] == 8
    # A read-only view over a bytearray: numpy refuses `writeable = True` on the array,
    # but the bytearray's owner writes it directly.
    owner = bytearray(range(8))
    frozen = np.frombuffer(memoryview(owner).toreadonly(), np.uint8)
    with pytest.raises(ValueError):
        frozen.flags.writeable = True
    back = load_with(frozen, SOURCE)
    owner[0] = 77
    assert back.tobytes()[0] == 0
    back = load_with(memoryview(owner).toreadonly(), SOURCE)
    owner[1] = 77
    assert back.tobytes()[1] == 1


def test_memory_that_cannot_change_is_shared_without_a_copy(tmp_path: Path) -> None:
    raw = bytes(range(8))
    # Arrays and views over bytes, and the tensor's own out-of-band buffer.
    over_bytes = np.frombuffer(raw, np.uint8)
    back = load_with(over_bytes, SOURCE)
    assert back.tobytes() == raw and address(back) == address(raw)
    back = load_with(memoryview(raw)[:], SOURCE)
    assert address(back) == address(raw)
    back, buffers = out_of_band(SOURCE)
    assert address(back) == address(SOURCE)
    # A read-only memory map cannot be made writable (as Ray's object store): shared.
    path = tmp_path / "t.bin"
    path.write_bytes(raw)
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        back = load_with(mapped, SOURCE)
        assert back.tobytes() == raw and address(back) == address(mapped)
        readonly_map = np.memmap(path, dtype=np.uint8, mode="r")
        assert address(load_with(readonly_map, SOURCE)) == address(readonly_map)
        del back
    # A writable map is copied.
    with open(path, "r+b") as f:
        writable = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_WRITE)
        back = load_with(writable, SOURCE)
        writable[0] = 55
        assert back.tobytes() == raw
        writable.close()
