"""Values that travel: pickle (protocols 2-5), copy/deepcopy, and real process pools."""

from __future__ import annotations

import copy
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from quilltest import TOKEN, Server

import quill

PROTOCOLS = list(range(2, pickle.HIGHEST_PROTOCOL + 1))
DTYPES = ["float32", "float64", "float16", "bfloat16", "int8", "int32", "int64", "uint8", "bool"]


def round_trip(obj: object, protocol: int) -> object:
    return pickle.loads(pickle.dumps(obj, protocol=protocol))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_core_values_round_trip(protocol: int) -> None:
    for name in DTYPES:
        d = quill.DType.from_name(name)
        assert round_trip(d, protocol) == d
    meta = quill.TensorMeta([2, 3], quill.DType.int64(), name="m")
    assert round_trip(meta, protocol) == meta
    for token in [
        quill.Token(7, 3, text="hé", logprob=-0.25, is_special=True),
        quill.Token(1, logprob=float("nan")),
        quill.Token(2, logprob=-0.0),
        quill.Token(2**32 - 1, 2**32 - 1),
    ]:
        back = round_trip(token, protocol)
        assert back == token and back.encode() == token.encode()
    batch = quill.TokenBatch.from_tokens([quill.Token(1, text="a")], sequence_id=9, is_final=True)
    batch.set_metadata("model", "m-7b")
    back = round_trip(batch, protocol)
    assert isinstance(back, quill.TokenBatch)
    assert back == batch and back.get_metadata("model") == "m-7b" and back.is_final


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_tensors_round_trip_every_dtype(protocol: int, dtype: str) -> None:
    qd = quill.DType.from_name(dtype)
    raw = bytes(b % 2 if dtype == "bool" else b for b in range(24 * qd.element_size % 256))[
        : 6 * qd.element_size
    ]
    raw = raw.ljust(6 * qd.element_size, b"\x01" if dtype == "bool" else b"\x07")
    t = quill.Tensor.from_bytes(raw, [2, 3], qd, name="t")
    back = round_trip(t, protocol)
    assert isinstance(back, quill.Tensor)
    assert back == t and back.tobytes() == raw and back.name == "t"
    for shape in ([], [0, 5]):
        z = quill.Tensor.zeros(shape, qd)
        assert round_trip(z, protocol) == z


def test_device_survives_pickling() -> None:
    # A TENSOR_META frame with device byte 1 (cuda), as a server may send it.
    cpu = quill.Tensor.zeros([2], quill.DType.uint8())
    frames = bytearray(cpu.encode())
    # header (9) + ndim (1) + one u64 dim (8) + dtype (1) -> device byte
    assert frames[9 + 1 + 8 + 1] == 0
    frames[9 + 1 + 8 + 1] = 1
    cuda = quill.Tensor.decode(bytes(frames))
    assert cuda.device == "cuda"
    assert round_trip(cuda, 5).device == "cuda"
    assert round_trip(cuda.meta, 2).device == "cuda"


def test_protocol_5_hands_the_bytes_out_of_band() -> None:
    arr = np.arange(16 << 20, dtype=np.float32)  # 64 MiB
    t = quill.Tensor.from_numpy(arr)
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(t, protocol=5, buffer_callback=buffers.append)
    assert len(data) < 1024, len(data)  # the 64 MiB stay out of the stream
    assert len(buffers) == 1 and buffers[0].raw().nbytes == 64 << 20
    back = pickle.loads(data, buffers=buffers)
    assert isinstance(back, quill.Tensor) and back == t
    # No copy on either side: the rebuilt tensor reads the original's memory.
    original = np.asarray(t).__array_interface__["data"][0]
    assert np.asarray(back).__array_interface__["data"][0] == original
    # In-band, the bytes are in the stream once and adopted on load without a copy.
    inband = pickle.dumps(t, protocol=5)
    assert len(inband) > 64 << 20
    assert pickle.loads(inband) == t


def test_writable_buffers_are_copied_on_load() -> None:
    t = quill.Tensor.from_bytes(bytes(range(8)), [8], quill.DType.uint8())
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(t, protocol=5, buffer_callback=buffers.append)
    mutable = bytearray(buffers[0].raw())
    back = pickle.loads(data, buffers=[mutable])
    mutable[0] = 99
    assert back.tobytes()[0] == 0  # the tensor kept its own copy


def test_copy_and_deepcopy() -> None:
    t = quill.Tensor.from_numpy(np.arange(4, dtype=np.int32))
    token = quill.Token(1)
    for immutable in (t, token, quill.DType.int8(), t.meta):
        assert copy.copy(immutable) is immutable and copy.deepcopy(immutable) is immutable
    batch = quill.TokenBatch.from_tokens([token], sequence_id=1)
    for dup in (copy.copy(batch), copy.deepcopy(batch)):
        assert dup == batch and dup is not batch
        dup.add(quill.Token(2))
        assert len(batch) == 1


def test_exceptions_keep_their_fields(client: quill.QuillClient) -> None:
    with pytest.raises(quill.RpcError) as info:
        client.call_json(
            "test.v1.FaultService",
            "Error",
            {"status": 429, "title": "Slow down", "retry_after": 2, "detail": "quota"},
        )
    for protocol in PROTOCOLS:
        e = round_trip(info.value, protocol)
        assert isinstance(e, quill.RpcError) and isinstance(e, RuntimeError)
        assert (e.status, e.title, e.detail, e.retry_after) == (429, "Slow down", "quota", 2.0)
        assert e.problem == info.value.problem and str(e) == str(info.value)
    decode = quill.DecodeError("bad reply")
    decode.status, decode.body = 200, b"\xff"
    back = round_trip(decode, 5)
    assert isinstance(back, quill.DecodeError) and (back.status, back.body) == (200, b"\xff")
    with pytest.raises(quill.OutOfRangeError) as oor:
        quill.Token(-1)
    back_oor = round_trip(oor.value, 4)
    assert isinstance(back_oor, OverflowError) and str(back_oor) == str(oor.value)


def test_client_pickles_as_its_settings_without_secrets(server: Server) -> None:
    c = quill.QuillClient(server.url, timeout_ms=4321, enable_compression=True, max_retries=2)
    c.set_bearer_token(TOKEN)
    c.set_api_key("key-secret-1")
    c.set_header("X-Trace", "t-1")
    data = pickle.dumps(c)
    assert TOKEN.encode() not in data and b"key-secret-1" not in data
    back = pickle.loads(data)
    assert isinstance(back, quill.QuillClient) and repr(back) == repr(c)
    assert back.get_headers() == {"X-Trace": "t-1"}
    cfg = back.to_config()
    assert (cfg["timeout_ms"], cfg["max_retries"], cfg["enable_compression"]) == (4321, 2, True)
    # The unpickled client works, without credentials until given them.
    seen = back.call_json("echo.v1.EchoService", "Headers", {})
    assert seen["x-trace"] == "t-1" and "authorization" not in seen
    with pytest.raises(quill.RpcError) as info:
        back.call_json("test.v1.FaultService", "Auth", {})
    assert info.value.status == 401
    # The one explicit way to carry secrets: a config that includes them.
    full = c.to_config(include_secrets=True)
    assert {h["name"] for h in full["headers"]} == {"Authorization", "X-API-Key", "X-Trace"}
    rebuilt = quill.QuillClient.from_config(full)
    assert rebuilt.call_json("test.v1.FaultService", "Auth", {})["ok"] is True
    # copy keeps them (nothing leaves memory) and makes a client of its own.
    dup = copy.copy(c)
    assert dup is not c and dup.call_json("test.v1.FaultService", "Auth", {})["ok"] is True
    with pytest.raises(quill.InvalidArgumentError, match="unknown client setting"):
        quill.QuillClient.from_config({"base_url": server.url, "timeout": 1})


def _worker(args: tuple[quill.QuillClient, quill.Tensor, quill.TokenBatch]) -> tuple[object, ...]:
    client, tensor, batch = args
    reply = client.call("echo.v1.EchoService", "Echo", tensor.tobytes())
    doubled = quill.Tensor.from_numpy(np.asarray(tensor) * 2, name="doubled")
    return reply == tensor.tobytes(), doubled, batch.text(), quill.DType.bfloat16()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_values_cross_process_pools(server: Server, method: str) -> None:
    """Arguments and results pickled into and out of fresh interpreters (spawn)."""
    client = quill.QuillClient(server.url, timeout_ms=10_000)
    tensor = quill.Tensor.from_numpy(np.arange(1000, dtype=np.float32), name="x")
    batch = quill.TokenBatch.from_tokens([quill.Token(1, text="hi")])
    ctx = multiprocessing.get_context(method)
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        results = list(pool.map(_worker, [(client, tensor, batch)] * 4))
    for ok, doubled, text, dtype in results:
        assert ok and text == "hi" and dtype == quill.DType.bfloat16()
        assert np.array_equal(np.asarray(doubled), np.arange(1000, dtype=np.float32) * 2)


def test_torch_dataloader_workers() -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed (optional extra)")
    from torch.utils.data import DataLoader, Dataset

    class Tensors(Dataset):  # type: ignore[type-arg,misc]
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> quill.Tensor:
            return quill.Tensor.from_numpy(np.full(3, i, dtype=np.float32))

    loader = DataLoader(Tensors(), batch_size=None, num_workers=2, collate_fn=lambda x: x)
    got = sorted(float(np.asarray(t)[0]) for t in loader)
    assert got == [0.0, 1.0, 2.0, 3.0] and torch is not None
