"""Streaming against the real bundled server: tokens, raw messages, bidi, tensors."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from quilltest import ROOT, Server, start_server

import quill

LLM = "inference.v1.LLMService"
FAULT = "test.v1.FaultService"


def stats(client: quill.QuillClient) -> dict[str, int]:
    out: dict[str, int] = client.call_json(FAULT, "Stats", {})
    return out


def test_token_stream_arrives_in_order_and_completes(client: quill.QuillClient) -> None:
    req = {"prompt": "Alice", "max_tokens": 50, "batch_size": 4, "seed": 7}
    batches = list(client.stream_tokens(LLM, "GenerateStream", req))
    assert all(isinstance(b, quill.TokenBatch) for b in batches)
    positions = [p for b in batches for p in b.positions()]
    assert positions == list(range(50))
    assert [b.is_final for b in batches] == [False] * (len(batches) - 1) + [True]
    assert {b.sequence_id for b in batches} == {1}
    unary = client.call_json(LLM, "Generate", req)
    assert "".join(b.text() for b in batches) == unary["text"]


def test_time_to_first_message_is_independent_of_length(client: quill.QuillClient) -> None:
    def first_and_total(n: int) -> tuple[float, float]:
        t0 = time.monotonic()
        with client.stream_tokens(
            LLM, "GenerateStream", {"max_tokens": n, "delay_ms": 20, "batch_size": 1}
        ) as s:
            next(s)
            first = time.monotonic() - t0
            for _ in s:
                pass
        return first, time.monotonic() - t0

    first_short, _ = first_and_total(2)
    first_long, total_long = first_and_total(60)
    assert total_long > 1.1  # 60 tokens × 20 ms: the server's sleeps never end early
    # A reply buffered whole would bring its first message only at the end (total_long)
    # and later than a short one's; measured against the same run, not a fixed time.
    assert first_long < total_long / 3
    assert first_long - first_short < total_long / 3


def test_truncated_stream_is_an_error(client: quill.QuillClient) -> None:
    got = []
    with pytest.raises(quill.StreamError, match="truncated|END_STREAM|broke|ended") as info:
        for m in client.stream(FAULT, "StreamCut", {"messages": 3}):
            got.append(m)
    assert len(got) == 3
    assert isinstance(info.value, RuntimeError)


def test_oversized_frame_is_an_error(client: quill.QuillClient) -> None:
    t0 = time.monotonic()
    with pytest.raises(quill.ProtocolError, match="limit|exceeds"):
        list(client.stream(FAULT, "StreamOversized", {}))
    assert time.monotonic() - t0 < 5


def test_cancel_frame_is_an_error(client: quill.QuillClient) -> None:
    got = []
    with pytest.raises(quill.StreamError, match="cancel"):
        for m in client.stream(FAULT, "StreamCancel", {}):
            got.append(m)
    assert len(got) == 1


def test_combined_flags_credit_and_unknown_bits(client: quill.QuillClient) -> None:
    msgs = list(client.stream(FAULT, "StreamCombined", {}))
    assert len(msgs) >= 2  # the last came in a DATA|END_STREAM (0x03) frame


def test_breaking_out_early_closes_the_server_stream(client: quill.QuillClient) -> None:
    before = stats(client)
    for i, _ in enumerate(
        client.stream(FAULT, "StreamSlow", {"messages": 1000, "interval_ms": 10})
    ):
        if i == 2:
            break
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = stats(client)
        if now["cancelled_streams"] > before["cancelled_streams"]:
            break
        time.sleep(0.05)
    assert now["cancelled_streams"] == before["cancelled_streams"] + 1
    s = client.stream(FAULT, "StreamSlow", {"messages": 1000, "interval_ms": 10})
    next(s)
    s.close()
    with pytest.raises(quill.CallCancelledError):
        next(s)


def test_timeout_covers_the_whole_stream(server: Server) -> None:
    """Messages keep coming (no gap is long), yet the 600 ms deadline ends the 100 s
    stream: never before it (the deadline is set inside the call, after t0), and long
    before the stream's end; the ceiling leaves room for a loaded machine."""
    client = quill.QuillClient(server.url, timeout_ms=600)
    got = 0
    t0 = time.monotonic()
    with pytest.raises(quill.QuillTimeoutError):
        for _ in client.stream(FAULT, "StreamSlow", {"messages": 1000, "interval_ms": 100}):
            got += 1
    elapsed = time.monotonic() - t0
    assert 0.6 <= elapsed < 5.0, elapsed
    assert got >= 2, got


def test_async_iteration(client: quill.QuillClient) -> None:
    async def main() -> list[str]:
        texts = []
        async for batch in client.stream_tokens_async(
            LLM, "GenerateStream", {"max_tokens": 9, "seed": 1}
        ):
            texts.append(batch.text())
        async with client.stream_async(FAULT, "StreamSlow", {"messages": 3, "interval_ms": 1}) as s:
            raw = [m async for m in s]
        assert len(raw) == 3
        with pytest.raises(quill.StreamError):
            async for _ in client.stream_async(FAULT, "StreamCut", {"messages": 1}):
                pass
        return texts

    texts = asyncio.run(main())
    assert "".join(texts) == client.call_json(LLM, "Generate", {"max_tokens": 9, "seed": 1})["text"]


def test_bidi_echo_interleaves(client: quill.QuillClient) -> None:
    import threading

    replies: list[tuple[bytes, float]] = []
    sent_last = threading.Event()
    sent_times: list[float] = []

    def requests():  # type: ignore[no-untyped-def]
        for i in range(5):
            sent_times.append(time.monotonic())
            yield f"msg{i}".encode()
            time.sleep(0.1)
        sent_last.set()

    for m in client.bidi_stream("echo.v1.EchoService", "BidiEcho", requests()):
        replies.append((m, time.monotonic()))
    assert [m for m, _ in replies] == [f"msg{i}".encode() for i in range(5)]
    # The first reply arrived long before the request stream ended.
    assert replies[0][1] < sent_times[-1]


def test_bidi_server_failure_mid_stream_comes_after_earlier_replies(
    client: quill.QuillClient,
) -> None:
    got: list[bytes] = []
    requests = [b"a", b"b", b"quill:server-cancel", b"never echoed"]
    with pytest.raises(quill.StreamError, match="CANCEL"):
        for m in client.bidi_stream("echo.v1.EchoService", "BidiEcho", requests):
            got.append(m)
    assert got == [b"a", b"b"]


def test_cancelling_an_asyncio_task_ends_the_call_on_the_server(
    client: quill.QuillClient,
) -> None:
    if client.http_version == "http3":
        # The client resets the stream at once, but the bundled server's HTTP/3
        # library reports a reset only at the handler's next read or write, and `Slow`
        # does neither while it sleeps (docs/reliability.md).
        pytest.skip("the bundled server cannot see an HTTP/3 stream reset while idle")

    async def main() -> float:
        before = client.call_json(FAULT, "Stats", {})["abandoned"]
        task = asyncio.ensure_future(client.call_json_async(FAULT, "Slow", {"ms": 60_000}))
        t0 = time.monotonic()
        while client.call_json(FAULT, "Stats", {})["in_flight"] < 1:
            assert time.monotonic() - t0 < 10, "the call did not reach the server"
            await asyncio.sleep(0.002)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Abandoned, not answered: the handler would answer only after 60 s. At once on
        # an idle machine; the bound leaves room for a loaded one.
        t0 = time.monotonic()
        while client.call_json(FAULT, "Stats", {})["abandoned"] <= before:
            assert time.monotonic() - t0 < 10, "the server still holds the call after 10 s"
            await asyncio.sleep(0.002)
        return time.monotonic() - t0

    asyncio.run(main())


def test_client_stream(client: quill.QuillClient) -> None:
    out = client.client_stream("echo.v1.EchoService", "ClientStream", [b"a", b"bc", b""])
    assert quill.__name__ and out and __import__("json").loads(out) == {"count": 3, "bytes": 3}


def _failing_requests() -> Iterator[object]:
    yield b"first"
    yield b"second"
    raise ValueError("the model input went away")


def test_a_failing_request_iterable_breaks_the_call_off(client: quill.QuillClient) -> None:
    """A request stream whose producer fails is never taken for a complete one: the
    server sees it cut (no END_STREAM) and the call fails with the producer's error."""
    with pytest.raises(quill.CallCancelledError, match="ValueError: the model input went away"):
        client.client_stream("echo.v1.EchoService", "ClientStream", _failing_requests())
    # The failure ends the call when it opens or while replies are read, whichever the
    # producer reaches first; it never ends cleanly.
    with pytest.raises(quill.CallCancelledError, match="the model input went away"):
        for _ in client.bidi_stream("echo.v1.EchoService", "BidiEcho", _failing_requests()):
            pass
    # A bad item (not bytes-like) aborts the same way.
    with pytest.raises(quill.CallCancelledError, match="TypeError"):
        client.client_stream("echo.v1.EchoService", "ClientStream", [b"ok", 42])


def test_tensor_upload_and_download_64_mib(client: quill.QuillClient) -> None:
    n = 64 << 20
    arr = (np.arange(n, dtype=np.uint64) % 251).astype(np.uint8).reshape(1024, -1)
    t = quill.Tensor.from_numpy(arr, name="big")
    info = client.send_tensor("tensor.v1.TensorService", "Upload", t)
    meta = __import__("json").loads(info)
    assert meta["shape"] == [1024, n // 1024] and meta["dtype"] == "uint8"
    assert meta["size_bytes"] == n and meta["name"] == "big"
    h = 0xCBF29CE484222325
    # FNV-1a 64 over the ramp, computed independently of the client (numpy-free loop
    # over the 251-byte period is exact because FNV is sequential: use the server's
    # answer for a small tensor as a cross-check instead).
    small = quill.Tensor.from_numpy(np.arange(10, dtype=np.uint8))
    for b in range(10):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    small_meta = __import__("json").loads(
        client.send_tensor("tensor.v1.TensorService", "Upload", small)
    )
    assert small_meta["fnv1a64"] == f"{h:016x}"

    down = client.call_tensor(
        "tensor.v1.TensorService", "Download", {"shape": [1024, n // 1024], "dtype": "uint8"}
    )
    assert down.shape == [1024, n // 1024] and down.dtype == quill.DType.uint8()
    assert np.array_equal(np.asarray(down), arr)


SPARE_SCRIPT = """
import sys, time
from pathlib import Path
import numpy as np
import quill
from quilltest import rss_mib

client = quill.QuillClient(sys.argv[1], timeout_ms=10_000, http_version=sys.argv[2])
n = 48 << 20  # above glibc's largest mmap threshold: in a fresh process, its own mapping
req = {"shape": [n], "dtype": "uint8"}
tail = (np.arange(n - (1 << 16), n) % 251).astype(np.uint8)
first = np.asarray(client.call_tensor("tensor.v1.TensorService", "Download", req))
at = first.__array_interface__["data"][0]
del first
second = np.asarray(client.call_tensor("tensor.v1.TensorService", "Download", req))
assert second.__array_interface__["data"][0] == at, "the dropped tensor's memory was not reused"
assert np.array_equal(second[-(1 << 16) :], tail), "a reused buffer holds only the new bytes"
del second
parked, t0 = rss_mib(), time.monotonic()
while rss_mib() > parked - 40:
    threads = sorted(p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm"))
    assert time.monotonic() < t0 + 10, f"{rss_mib():.0f} MiB, {parked:.0f} parked; {threads}"
    time.sleep(0.05)
print(f"{time.monotonic() - t0:.1f}")
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
@pytest.mark.parametrize("version", ["http1", "http2"])
def test_a_dropped_tensors_memory_serves_the_next_download_then_goes_back(
    server: Server, version: str
) -> None:
    """A dropped large reply's memory is kept for the next one of a similar size (no
    fresh pages to fault in), and given back once downloads stop (src/codec/spare.rs).
    In a fresh interpreter: after other tests, glibc can serve 48 MiB from free heap
    memory it already holds, and keeps that memory when it is freed, so RSS would not
    show the release (seen in full runs: quill's helper freed the buffer on time)."""
    proc = subprocess.run(
        [sys.executable, "-c", SPARE_SCRIPT, server.url, version],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Freed by the helper within two idle periods of one second each (and some slack
    # for a busy machine).
    assert float(proc.stdout) < 4.0


def test_embed_returns_a_tensor(client: quill.QuillClient) -> None:
    emb = client.call_tensor(LLM, "Embed", {"text": "hello", "dim": 768})
    assert emb.shape == [1, 768] and emb.dtype == quill.DType.float32() and emb.name == "embedding"
    assert abs(float(np.linalg.norm(emb.to_numpy())) - 1.0) < 1e-3


INTERRUPT_SCRIPT = """
import signal, sys, time, quill
# A shell that starts jobs in the background starts them with SIGINT ignored, and Python
# then installs no KeyboardInterrupt handler: install it, so the test does not depend
# on how it was launched.
signal.signal(signal.SIGINT, signal.default_int_handler)
client = quill.QuillClient(sys.argv[1])
t0 = time.monotonic()
try:
    slow = {"messages": 2, "interval_ms": 20000}
    for _ in client.stream("test.v1.FaultService", "StreamSlow", slow):
        print("waiting for the next message", flush=True)
except KeyboardInterrupt:
    print(f"interrupted after {time.monotonic() - t0:.2f}", flush=True)
try:
    client.call_json("test.v1.FaultService", "Slow", {"ms": 20000})
except KeyboardInterrupt:
    print("interrupted unary", flush=True)
# The interrupted call gave its thread's hold on the client back: calls still work.
assert client.call("echo.v1.EchoService", "Echo", b"again", idempotent=False) == b"again"
print("client still works", flush=True)
"""


def _sleeping(pid: int) -> bool:
    """Whether the process's main thread is blocked (state S): in a wait, not running
    Python code."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "S"


def _until(condition: Callable[[], bool], what: str) -> None:
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < 10, what
        time.sleep(0.005)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/<pid>/stat")
def test_keyboard_interrupt_during_a_wait() -> None:
    """Ctrl-C lands while the script waits: for a stream's next message (20 s away; the
    script has its first one and its main thread is blocked), then in a unary call (the
    server holds it). A server of its own, so its `in_flight` counts this call alone."""
    own = start_server()
    watcher = quill.QuillClient(own.url)
    try:
        with subprocess.Popen(
            [sys.executable, "-c", INTERRUPT_SCRIPT, own.url],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        ) as proc:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "waiting for the next message"
            _until(lambda: _sleeping(proc.pid), "the script never blocked in its wait")
            proc.send_signal(signal.SIGINT)
            line = proc.stdout.readline()
            assert line.startswith("interrupted after"), line
            _until(
                lambda: stats(watcher)["in_flight"] >= 1, "the unary call never reached the server"
            )
            proc.send_signal(signal.SIGINT)
            assert proc.stdout.readline().strip() == "interrupted unary"
            assert proc.stdout.readline().strip() == "client still works"
            assert proc.wait(timeout=10) == 0
    finally:
        own.process.terminate()
        own.process.wait(timeout=10)
        if own.process.stdout is not None:
            own.process.stdout.close()
